"""Promises of the `mm` command that had no test, each checked through the real command on
data built to have one outcome: `mm drift`'s exit codes and its `--start/--end` window, a
failing webhook, the promotion gate's budgets, the rollback run, relog's refusals, and the
MLproject entry points other than `train`."""

from __future__ import annotations

import fcntl
import os
import pickle
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from tests.support import REPO, SEED_LINEAR, free_port, mm, write_project

MONITORED = {
    **SEED_LINEAR,
    "dataset": {"source": "synthetic", "generator": "linear", "n_samples": 400},
    "serving": {"prediction_log": "log"},
    "monitoring": {"min_rows": 20, "window": "1h"},
}


def calm(n: int) -> pd.DataFrame:
    """Inputs spread evenly over the training range (x in [0, 10]): no drift."""
    return pd.DataFrame({"x": np.linspace(0.2, 9.8, n)})


def shifted(n: int) -> pd.DataFrame:
    """Inputs entirely outside the training range: drift of x and of the prediction."""
    return pd.DataFrame({"x": np.linspace(12.0, 22.0, n)})


def run_id(stdout: str) -> str:
    """The run id `mm drift` prints on its last line."""
    found = re.search(r"run: ([0-9a-f]{32}) ", stdout)
    assert found, stdout
    return found.group(1)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A trained, monitored project in its own store (shared: training once is enough)."""
    folder = tmp_path_factory.mktemp("monitored")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    write_project(folder, MONITORED)
    trained = mm("train", "project.yaml", cwd=folder, env=env)
    assert trained.returncode == 0, trained.stderr
    return folder, env


# --- mm drift ---------------------------------------------------------------------------


@pytest.mark.slow
def test_mm_drift_exits_0_or_6_as_the_start_end_window_holds_rows_and_3_without_store(
    monitored: tuple[Path, dict[str, str]],
) -> None:
    from mlflow import MlflowClient

    folder, env = monitored
    calm(100).to_csv(folder / "calm.csv", index=False)
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    scored = mm("predict", "project.yaml", "calm.csv", cwd=folder, env=env)
    assert scored.returncode == 0, scored.stderr
    after = datetime.now(timezone.utc) + timedelta(seconds=1)

    def drift(start: str, end: str) -> subprocess.CompletedProcess:
        return mm("drift", "project.yaml", "--start", start, "--end", end, cwd=folder, env=env)

    inside = drift(before.isoformat(), after.isoformat())
    assert inside.returncode == 0, inside.stderr
    assert ": 100 rows" in inside.stdout and "  no drift: " in inside.stdout
    # the rows were logged before `after`: a window from then on has none (--start counts)
    later = drift(after.isoformat(), (after + timedelta(hours=1)).isoformat())
    assert later.returncode == 6, later.stderr
    assert ": 0 rows" in later.stdout and "  not enough data: " in later.stdout
    # ... and a window ending before `before` has none either (--end counts); times
    # without an offset are UTC
    naive_start = (before - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    earlier = drift(naive_start, before.replace(tzinfo=None).isoformat())
    assert earlier.returncode == 6, earlier.stderr
    assert ": 0 rows" in earlier.stdout

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    recorded = {}
    for result in (inside, later, earlier):
        run = client.get_run(run_id(result.stdout))
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        window = (datetime.fromisoformat(tags["mm.window_start"]),
                  datetime.fromisoformat(tags["mm.window_end"]))  # fmt: skip
        recorded[tags["mm.status"], window] = run.data.metrics.get("n_current_rows")
    assert recorded == {
        ("no_drift", (before, after)): 100.0,
        ("not_enough_data", (after, after + timedelta(hours=1))): 0.0,
        ("not_enough_data", (before - timedelta(hours=1), before)): 0.0,
    }

    uri = f"http://127.0.0.1:{free_port()}"
    gone = mm("drift", "project.yaml", "--window", "1h", cwd=folder,
              env={"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    assert gone.returncode == 3, gone.stderr
    assert f"cannot reach the MLflow tracking server at {uri}" in gone.stderr
    assert "Traceback" not in gone.stderr

    both = mm("drift", "project.yaml", "--window", "1h", "--start", before.isoformat(),
              cwd=folder, env=env)  # fmt: skip
    assert both.returncode == 2 and "give --window or --start/--end, not both" in both.stderr


class _Failing(BaseHTTPRequestHandler):
    """A webhook that answers every alert with 500."""

    posts: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        _Failing.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_failing_webhook_leaves_the_drift_logged_and_says_why(
    monitored: tuple[Path, dict[str, str]],
) -> None:
    from mlflow import MlflowClient

    folder, env = monitored
    shifted(100).to_csv(folder / "shifted.csv", index=False)
    server = HTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Failing.posts.clear()
    answers_500 = f"http://127.0.0.1:{server.server_port}/hook"
    refuses = f"http://127.0.0.1:{free_port()}/hook"
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    try:
        for url, why in ((answers_500, "HTTP Error 500"), (refuses, "Connection refused")):
            config = {**MONITORED, "monitoring": {**MONITORED["monitoring"], "webhook": url}}
            write_project(folder, config, "hooked.yaml")
            result = mm("drift", "hooked.yaml", "--current", "shifted.csv", cwd=folder, env=env)
            assert result.returncode == 5, result.stderr  # the verdict, not the alert's fate
            assert "Traceback" not in result.stderr
            assert "  DRIFT: " in result.stdout
            failure = next(line for line in result.stdout.splitlines() if "alert to" in line)
            assert failure.strip().startswith(f"alert to {url} failed: ") and why in failure
            run = client.get_run(run_id(result.stdout))
            assert run.info.status == "FINISHED" and run.data.tags["mm.status"] == "drift"
            assert failure.strip() in run.data.tags["mm.decisions"]
            assert run.data.metrics["drifted.x"] == 1.0
            assert "drift_report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}
    finally:
        server.shutdown()
        server.server_close()
    assert len(_Failing.posts) == 3  # the first POST and two retries, then it gives up


# --- the promotion gate and rollback ----------------------------------------------------


def _aliases(client, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


@pytest.mark.slow
def test_each_gate_budget_refuses_a_challenger_that_breaks_it_and_rollback_is_a_run(
    store: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    write_project(tmp_path, SEED_LINEAR)
    for _ in range(2):  # the same data and seed twice: v2 is v1's equal, as @challenger
        assert mm("train", "project.yaml", cwd=tmp_path).returncode == 0

    def promote(**rules: object) -> subprocess.CompletedProcess:
        write_project(tmp_path, {**SEED_LINEAR, "promotion": rules})
        return mm("promote", "project.yaml", cwd=tmp_path)

    too_big = promote(max_size_bytes=1)
    assert too_big.returncode == 4, too_big.stderr
    refusal = too_big.stdout.splitlines()[-1]
    assert re.fullmatch(r"refused: size [\d,]+ B exceeds the budget 1 B", refusal), refusal
    too_slow = promote(max_latency_ms=1e-6)
    assert too_slow.returncode == 4, too_slow.stderr
    refusal = too_slow.stdout.splitlines()[-1]
    assert re.fullmatch(
        r"refused: latency [\d.]+ ms per 1000 rows exceeds the budget 1e-06 ms", refusal
    ), refusal
    assert _aliases(client, "tiny") == {"champion": "1", "challenger": "2"}  # nothing moved

    within = promote(max_size_bytes=10**9, max_latency_ms=10_000.0)
    assert within.returncode == 0, within.stdout + within.stderr
    assert "promoted: @champion -> v2, @previous -> v1" in within.stdout
    assert _aliases(client, "tiny") == {"champion": "2", "previous": "1"}

    back = mm("rollback", "project.yaml", cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == "@champion -> v1, @previous -> v2"
    assert _aliases(client, "tiny") == {"champion": "1", "previous": "2"}
    experiment = client.get_experiment_by_name("tiny").experiment_id
    (rollback,) = client.search_runs([experiment], "tags.`mm.run_type` = 'rollback'")
    assert rollback.info.status == "FINISHED"
    assert rollback.info.run_name.startswith("rollback/")
    assert rollback.data.tags["mm.from_version"] == "2"
    assert rollback.data.tags["mm.to_version"] == "1"
    promotions = client.search_runs([experiment], "tags.`mm.run_type` = 'promote'",
                                    order_by=["attributes.start_time ASC"])  # fmt: skip
    assert [r.data.tags["mm.decision"] for r in promotions] == ["refused", "refused", "promoted"]
    assert "exceeds the budget 1 B" in promotions[0].data.tags["mm.reason"]

    # max_regression guards the metrics other than the selection metric: a challenger a
    # little worse everywhere passes a gate that tolerates any rmse loss (min_improvement
    # -1) only when the other metrics may regress too
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, 200)
    new = pd.DataFrame({"x": x, "y": 3.1 * x + 2 + rng.normal(0, 0.5, 200)})
    new.to_csv(tmp_path / "new.csv", index=False)
    tuned = mm("finetune", "project.yaml", "--data", "new.csv", "--lam", "0.01", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    assert "registered tiny version 3 as @challenger" in tuned.stdout
    strict = promote(min_improvement=-1, max_regression=0.02)
    assert strict.returncode == 4, strict.stderr
    reasons = strict.stdout.splitlines()[-1].removeprefix("refused: ").split("; ")
    assert reasons and all(re.fullmatch(r"(mae|r2) regresses by [\d.]+%, above the allowed "
                                        r"2\.00%", r) for r in reasons), reasons  # fmt: skip
    assert _aliases(client, "tiny")["champion"] == "1"
    lenient = promote(min_improvement=-1, max_regression=10)
    assert lenient.returncode == 0, lenient.stdout
    assert "promoted: @champion -> v3, @previous -> v1" in lenient.stdout


# --- mm relog ---------------------------------------------------------------------------


@pytest.mark.slow
def test_relog_refuses_another_store_a_relog_under_way_and_a_foreign_pickle(
    store: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for name in ("tiny-monitoring", "tiny"):  # found, not created: the failure comes later
        client.create_experiment(name)
    database = sqlite3.connect(tmp_path / "mlflow.db")
    database.execute("CREATE TRIGGER refuse_runs BEFORE INSERT ON runs "
                     "BEGIN SELECT RAISE(ABORT, 'no new runs'); END")  # fmt: skip
    database.commit()
    write_project(tmp_path, SEED_LINEAR)
    refused = mm("train", "project.yaml", "--retry-for", "0", cwd=tmp_path)
    assert refused.returncode == 3, refused.stderr
    (kept,) = (tmp_path / "mm_pending").iterdir()
    assert f"re-log it with: mm relog mm_pending/{kept.name}" in refused.stderr

    other = f"sqlite:///{tmp_path / 'other.db'}"
    elsewhere = mm("relog", str(kept), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": other})
    assert elsewhere.returncode == 2
    assert elsewhere.stderr.strip().splitlines() == [
        f"error: {kept} was being logged to {store}, not {other}: set MLFLOW_TRACKING_URI to "
        f"{store} (with its password, if any) to complete those runs"
    ]
    with open(kept / "record.pkl", "rb") as held:  # as a relog under way holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = mm("relog", str(kept), cwd=tmp_path)
    assert busy.returncode == 2
    assert f"{kept}: another `mm relog` is logging it right now" in busy.stderr
    foreign = tmp_path / "mm_pending" / "tiny-foreign"
    foreign.mkdir()
    (foreign / "record.pkl").write_bytes(pickle.dumps({"a": "dict, not a record"}))
    stranger = mm("relog", str(foreign), cwd=tmp_path)
    assert stranger.returncode == 2
    assert "record.pkl: not a training record kept by `mm train`" in stranger.stderr
    assert "Traceback" not in elsewhere.stderr + busy.stderr + stranger.stderr
    assert client.search_registered_models() == []  # no refusal logged anything

    database.execute("DROP TRIGGER refuse_runs")
    database.commit()
    database.close()
    done = mm("relog", str(kept), cwd=tmp_path)  # the refusals were not blanket ones
    assert done.returncode == 0, done.stderr
    assert "registered tiny version 1 as @champion" in done.stdout
    assert not kept.exists()


# --- MLproject ----------------------------------------------------------------------------


@pytest.mark.slow
def test_every_mlproject_entry_point_but_train_runs_with_mlflow_run(
    store: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    for name in ("MLproject", "python_env.yaml"):
        shutil.copy(REPO / name, tmp_path)
    config = {
        **MONITORED,
        "compression": {"quantize": {"bits": [16]}},
        "promotion": {"min_improvement": -0.5, "max_regression": 1.0},
    }
    write_project(tmp_path, config)
    (tmp_path / "demo").mkdir()
    write_project(tmp_path / "demo", {**SEED_LINEAR, "name": "tiny_demo"}, "tiny_demo.yaml")
    assert mm("train", "project.yaml", cwd=tmp_path).returncode == 0
    calm(60).to_csv(tmp_path / "calm.csv", index=False)
    assert mm("predict", "project.yaml", "calm.csv", cwd=tmp_path).returncode == 0
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 10, 100)
    same = pd.DataFrame({"x": x, "y": 3 * x + 2 + rng.normal(0, 0.5, 100)})
    same.to_csv(tmp_path / "new.csv", index=False)

    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow_cli = shutil.which("mlflow", path=env["PATH"])
    entry_points = [
        ("compress", ["project=project.yaml"]),
        ("finetune", ["project=project.yaml", "data=new.csv"]),
        ("drift", ["project=project.yaml", "window=1h"]),  # of v1, which served the rows
        ("promote", ["project=project.yaml"]),
        ("demo", ["projects=demo"]),
    ]
    for entry_point, parameters in entry_points:
        command = [mlflow_cli, "run", str(tmp_path), "-e", entry_point, "--env-manager", "local",
                   "--experiment-name", "entry-points"]  # fmt: skip
        for parameter in parameters:
            command += ["-P", parameter]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600)  # fmt: skip
        assert result.returncode == 0, (entry_point, result.stderr[-3000:])

    client = MlflowClient()
    experiment = client.get_experiment_by_name("entry-points").experiment_id
    outer = client.search_runs([experiment], "tags.`mlflow.project.entryPoint` != ''")
    assert sorted(r.data.tags["mlflow.project.entryPoint"] for r in outer) == sorted(
        e for e, _ in entry_points
    )
    assert all(r.info.status == "FINISHED" for r in outer)
    # what each entry point did
    versions = {str(v.version): v for v in client.search_model_versions("name = 'tiny'")}
    assert versions["2"].tags["mm.run_type"] == "compress"
    assert versions["3"].tags["mm.run_type"] == "finetune"
    assert _aliases(client, "tiny") == {"champion": "3", "previous": "1"}  # promoted
    monitoring = client.get_experiment_by_name("tiny-monitoring").experiment_id
    (drift,) = client.search_runs([experiment, monitoring], "tags.`mm.run_type` = 'drift'")
    assert drift.data.tags["mm.status"] == "no_drift"
    assert drift.data.metrics["n_current_rows"] == 60.0
    assert drift.data.tags["mm.model_version"] == "1"
    assert str(client.get_model_version_by_alias("tiny_demo", "champion").version) == "1"
