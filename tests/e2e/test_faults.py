"""Issue 6 §3: the tracking server is SIGKILLed while `mm train` logs to it.

A real `mm server` (SQLite store, proxied artifacts) is killed the moment the train's parent
run lands in its store (or its logged model, or its model version), then started again on
the same port (or not). The moment is exact: the train is held at that step by
`MM_FAULT_PAUSE_AT` while the server is killed, and released after. Everything is checked
afterwards with a plain MlflowClient against the restarted server.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.support import SEED_LINEAR, first_line, free_port, mm, write_project
from tests.support.faults import Pause

# six configurations: enough writes after the parent run that the kill lands mid-logging
PROJECT = copy.deepcopy(SEED_LINEAR)
PROJECT["candidates"] = [
    {"estimator": "ridge", "params": {"alpha": [0.01, 0.1, 1.0, 10.0]}},
    {"estimator": "lasso", "params": {"alpha": [0.01, 0.1]}},
]
N_TRIALS = 6


class Server:
    """`mm server` on a SQLite store in `folder`, startable again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = folder / "mlflow.db"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mm_platform", "server",
                 "--backend-store-uri", f"sqlite:///{self.db}",
                 "--artifacts-destination", str(self.folder / "artifacts"),
                 "--port", str(self.port)],
                cwd=self.folder, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True,
            )  # fmt: skip
        banner = first_line(self.process)  # printed once /health answers
        assert "MLflow tracking server on" in banner, (self.folder / "server.log").read_text()
        self.children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout.split()

    def kill(self) -> None:
        """SIGKILL `mm server` and the `mlflow server` it runs in a session of its own."""
        for child in self.children:
            os.killpg(int(child), signal.SIGKILL)
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


# moments to kill the server at (steps of mm_platform.faults): the parent run created,
# the logged model created, the version created (the train holds before it goes on)
PARENT_RUN = "run:parent"
LOGGED_MODEL = "logged-model"
MODEL_VERSION = "model-version"


@pytest.fixture
def server(tmp_path: Path):
    folder = tmp_path / "server"
    folder.mkdir()
    server = Server(folder)
    server.start()
    yield server
    server.stop()


def _train(
    tmp_path: Path, server: Server, retry_for: str, pause: Pause | None = None
) -> subprocess.Popen:
    project = write_project(tmp_path, PROJECT)
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, **(pause.env if pause else {})}
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "train", str(project), "--retry-for", retry_for],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _assert_one_complete_set(url: str) -> str:
    """Exactly one parent run, N_TRIALS children, one logged model and one version with the
    champion alias, all finished; returns the parent run id."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], run_view_type=3)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    assert len(runs) == 1 + N_TRIALS
    assert {r.info.status for r in runs} == {"FINISHED"}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == N_TRIALS
    assert sorted(c.data.tags["mm.attempt_part"] for c in children) == sorted(
        f"trial-{i}" for i in range(N_TRIALS)
    )
    run_id = parent.info.run_id
    assert len(client.get_metric_history(run_id, "holdout_rmse")) == 1
    assert len(parent.inputs.dataset_inputs) == 2
    assert {a.path for a in client.list_artifacts(run_id, "reference")} == {
        "reference/reference.parquet",
        "reference/estimator.skops",  # the performance estimator (CBPE/DLE), fitted with it
    }

    models = client.search_logged_models([experiment.experiment_id])
    assert len(models) == 1 and str(models[0].status) == "READY"
    assert [o.model_id for o in parent.outputs.model_outputs] == [models[0].model_id]
    versions = client.search_model_versions("name = 'tiny'")
    assert [v.version for v in versions] == ["1"]
    assert client.get_model_version_by_alias("tiny", "champion").run_id == run_id
    assert parent.data.tags["mm.model_version"] == "1"

    mlflow.set_tracking_uri(url)
    try:
        model = mlflow.pyfunc.load_model("models:/tiny@champion")
        frame = pd.read_parquet(client.download_artifacts(run_id, "reference/reference.parquet"))
        assert (abs(model.predict(frame[["x"]]) - frame["prediction"]) < 1e-9).all()
    finally:
        mlflow.set_tracking_uri(None)
    return run_id


@pytest.mark.parametrize(
    ("moment", "step"),
    [
        (PARENT_RUN, "unreachable while trying to "),  # the next write: parent or a trial
        (LOGGED_MODEL, "unreachable while trying to log the model"),
        (MODEL_VERSION, "unreachable while trying to register the model 'tiny'"),
    ],
    ids=["parent-run", "model", "version"],
)
def test_train_waits_for_a_killed_server_and_logs_one_set(
    server: Server, tmp_path: Path, moment: str, step: str
) -> None:
    pause = Pause(tmp_path / "faults", moment)
    train = _train(tmp_path, server, retry_for="120s", pause=pause)
    pause.wait(train)
    server.kill()
    pause.release()
    time.sleep(3)  # the train meets the dead server and starts waiting
    server.start()
    out, err = train.communicate(timeout=300)
    assert train.returncode == 0, err
    assert step in err and "is back; resuming" in err, err
    assert "Traceback" not in err
    assert "registered tiny version 1 as @champion" in out
    _assert_one_complete_set(server.url)
    assert not (tmp_path / "mm_pending").exists()


@pytest.mark.parametrize(
    ("moment", "registry"),
    [
        (PARENT_RUN, "no model version was registered"),
        # killed right after the version was created: the alias is what is missing
        (MODEL_VERSION, "register the model 'tiny'; tiny version 1 exists without its alias"),
    ],
    ids=["parent-run", "version"],
)
def test_train_gives_up_keeps_the_model_and_relog_completes_it(
    server: Server, tmp_path: Path, moment: str, registry: str
) -> None:
    import mlflow.sklearn
    from mlflow import MlflowClient

    pause = Pause(tmp_path / "faults", moment)
    train = _train(tmp_path, server, retry_for="4s", pause=pause)
    pause.wait(train)
    server.kill()
    pause.release()
    _, err = train.communicate(timeout=300)
    assert train.returncode == 3, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert f"tracking server {server.url} unreachable for" in line
    assert registry in line
    kept = next(p for p in (tmp_path / "mm_pending").iterdir())
    assert f"re-log it with: mm relog mm_pending/{kept.name}" in line
    assert kept.name.startswith("tiny-")
    model = mlflow.sklearn.load_model(str(kept / "model"))  # usable without mm or the server
    assert model.predict(pd.DataFrame({"x": [0.5]})).shape == (1,)

    server.start()
    client = MlflowClient(server.url)
    versions = client.search_model_versions("name = 'tiny'")
    assert [v.version for v in versions] == ([] if moment == PARENT_RUN else ["1"])
    if versions:
        assert client.get_registered_model("tiny").aliases == {}  # the alias was next
    parent = client.search_runs(
        [client.get_experiment_by_name("tiny").experiment_id],
        "tags.`mm.attempt_part` = 'parent'",
    )
    assert [r.info.status for r in parent] == ["RUNNING"]  # left as the server died

    relogged = mm("relog", f"mm_pending/{kept.name}", cwd=tmp_path,
                  env={"MLFLOW_TRACKING_URI": server.url})  # fmt: skip
    assert relogged.returncode == 0, relogged.stderr
    assert "registered tiny version 1 as @champion" in relogged.stdout
    assert _assert_one_complete_set(server.url) == parent[0].info.run_id
    assert not kept.exists() and not (tmp_path / "mm_pending").exists()


def test_bad_retry_and_relog_input_get_one_line(tmp_path: Path) -> None:
    project = write_project(tmp_path, SEED_LINEAR)
    bad = mm("train", str(project), "--retry-for", "soon", cwd=tmp_path)
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert "e.g. 90, 30s, 5m, 1h, or 0 not to wait" in bad.stderr
    zero_what = mm("train", str(project), "--retry-for", "0x", cwd=tmp_path)
    assert zero_what.returncode == 2 and "'0x' is not a duration" in zero_what.stderr
    env = {"MM_TRACKING_RETRY": "later"}
    bad_env = mm("train", str(project), cwd=tmp_path, env=env)
    assert bad_env.returncode == 2 and "MM_TRACKING_RETRY" in bad_env.stderr

    missing = mm("relog", "mm_pending/nothing", cwd=tmp_path)
    assert missing.returncode == 2
    assert "mm_pending/nothing does not exist (re-logged already?" in missing.stderr
    not_kept = mm("relog", str(project), cwd=tmp_path)  # a file, not a kept folder
    assert not_kept.returncode == 2 and "no record.pkl here" in not_kept.stderr
    damaged = tmp_path / "mm_pending" / "tiny-x"
    damaged.mkdir(parents=True)
    (damaged / "record.pkl").write_bytes(b"not a pickle")
    broken = mm("relog", str(damaged), cwd=tmp_path)
    assert broken.returncode == 2 and "record.pkl: cannot be read" in broken.stderr
    assert "Traceback" not in missing.stderr + broken.stderr


def test_unreachable_names_what_mlflow_met(store: str) -> None:
    """A closed port and a proxy answering 503 both count as 'wait and retry'; a real
    MLflow error (no such experiment) does not. MLflow's own HTTP client makes the calls."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mm_platform.tracking.durable import no_transport_retries, transient, unreachable

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the status to answer is the first part of the path
            self.send_response(int(self.path.split("/")[1]))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    busy = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=busy.serve_forever, daemon=True).start()
    try:
        proxy = f"http://127.0.0.1:{busy.server_address[1]}"
        for url, expected in [
            (f"http://127.0.0.1:{free_port()}", ("Connection refused", True)),
            (f"{proxy}/503", ("HTTP 503", True)),
            (f"{proxy}/429", ("HTTP 429", True)),
            (f"{proxy}/500", ("HTTP 500", False)),  # an answer: retried a few times only
            (f"{proxy}/404", None),
        ]:
            with no_transport_retries(), pytest.raises(MlflowException) as caught:
                MlflowClient(url).get_experiment_by_name("tiny")
            assert transient(caught.value) == expected, caught.value
            assert unreachable(caught.value) == (expected[0] if expected and expected[1] else None)
    finally:
        busy.shutdown()
    with pytest.raises(MlflowException) as caught:  # the SQLite store of the fixture
        MlflowClient().get_experiment("12345")
    assert unreachable(caught.value) is None


def test_ctrl_c_while_waiting_keeps_the_model(server: Server, tmp_path: Path) -> None:
    pause = Pause(tmp_path / "faults", PARENT_RUN)
    train = _train(tmp_path, server, retry_for="120s", pause=pause)
    pause.wait(train)
    server.kill()
    pause.release()
    time.sleep(3)  # it is waiting for the server now
    train.send_signal(signal.SIGINT)
    _, err = train.communicate(timeout=120)
    assert train.returncode != 0
    kept = next((tmp_path / "mm_pending").iterdir())
    assert f"The trained model is kept in mm_pending/{kept.name}" in err, err
    assert (kept / "record.pkl").is_file() and (kept / "model" / "MLmodel").is_file()


def test_a_late_relog_leaves_challenger_on_the_newer_model(server: Server, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_URI": server.url}
    project = str(write_project(tmp_path, PROJECT))
    assert mm("train", project, cwd=tmp_path, env=env).returncode == 0  # version 1, champion
    pause = Pause(tmp_path / "faults", PARENT_RUN)
    late = _train(tmp_path, server, retry_for="0", pause=pause)
    pause.wait(late)
    server.kill()
    pause.release()
    assert late.wait(120) == 3
    server.start()
    newer = mm("train", project, cwd=tmp_path, env=env)  # trained after the late one
    assert "registered tiny version 2 as @challenger" in newer.stdout, newer.stderr
    kept = next((tmp_path / "mm_pending").iterdir())
    relogged = mm("relog", str(kept), cwd=tmp_path, env=env)
    assert relogged.returncode == 0, relogged.stderr
    assert "version 3 without an alias (@challenger is on a newer version)" in relogged.stdout
    aliases = MlflowClient(server.url).get_registered_model("tiny").aliases
    assert aliases == {"champion": "1", "challenger": "2"}
