"""`mm serve` over HTTP as clients and attackers use it: inputs converted by the signature,
one meaning of missing, ids carried, class probabilities answered and logged, request
limits, poison requests and a full disk; against real scoring-server, `mm predict`,
`mm labels` and `mm drift` processes."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from mm_platform.serving.predlog.journal import recover
from mm_platform.serving.predlog.reader import read_window
from tests.support import first_line, free_port, mm, write_project

pytestmark = pytest.mark.slow

CHURN = {
    "name": "churn",
    "task": "binary",
    "dataset": {"source": "file", "path": "churn.csv", "target": "churn"},
    "features": {"categorical": ["plan"], "drop": ["customer_id"]},
    "candidates": [{"estimator": "logistic", "params": {"C": [1.0]}}],
    "selection": {"metric": "roc_auc"},
    "split": {"cv_folds": 3},
    "serving": {"prediction_log": "log"},
    "monitoring": {"min_rows": 20},
}
FEATURES = ["age", "plan", "usage"]


def churn_table(n: int, seed: int) -> pd.DataFrame:
    """Customers with missing ages and plans; churn ("Yes"/"No") depends on all three."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    plan = rng.choice(["basic", "pro", "max"], n)
    usage = rng.gamma(2.0, 10.0, n)
    logit = 0.04 * (50 - age) + np.select([plan == "basic", plan == "pro"], [1.0, 0.0], -1.0)
    churn = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-(logit - 0.05 * usage))), "Yes", "No")
    frame = pd.DataFrame(
        {"customer_id": np.arange(1000, 1000 + n) + seed * 100_000, "age": age, "plan": plan,
         "usage": usage, "churn": churn}
    )  # fmt: skip
    frame.loc[rng.uniform(size=n) < 0.08, "age"] = np.nan
    frame.loc[rng.uniform(size=n) < 0.08, "plan"] = np.nan
    return frame


@dataclass
class Served:
    url: str
    folder: Path
    project: Path
    env: dict[str, str]
    log: Path

    def post(self, body: object, **kwargs: object) -> requests.Response:
        return requests.post(f"{self.url}/invocations", json=body, timeout=60, **kwargs)

    def logged(self) -> pd.DataFrame:
        time.sleep(0.6)  # a few flush intervals
        return read_window(str(self.log), "predictions", "churn")


def start_serve(folder: Path, project: Path, env: dict[str, str], *args: str):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "serve", str(project), "--port", str(port), *args],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=(folder / "serve.log").open("ab"),
        start_new_session=True,
    )  # fmt: skip
    banner = first_line(server).decode()  # printed once /ping answers
    assert "serving churn version" in banner, (folder / "serve.log").read_text()[-2000:]
    return server, f"http://127.0.0.1:{port}"


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict]]:
    folder = tmp_path_factory.mktemp("churn")
    churn_table(600, seed=0).to_csv(folder / "churn.csv", index=False)
    project = write_project(folder, CHURN)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    env.pop("MM_PREDICTION_LOG", None)
    result = mm("train", str(project), cwd=folder, env=env)
    assert result.returncode == 0, result.stderr
    yield folder, project, env


@pytest.fixture(scope="module")
def served(trained: tuple[Path, Path, dict]) -> Iterator[Served]:
    folder, project, env = trained
    server, url = start_serve(folder, project, env, "--max-rows", "500", "--max-bytes", "300000")
    try:
        yield Served(url, folder, project, env, folder / "log")
    finally:
        stop(server)


class Touch:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def records(frame: pd.DataFrame) -> list[dict]:
    """JSON records as a client sends them: NaN becomes null, floats keep every digit."""
    plain = frame.astype(object).where(frame.notna(), None)
    return [{k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
            for row in plain.to_dict(orient="records")]  # fmt: skip


def test_a_classifier_answers_and_logs_probabilities_and_carries_ids(served: Served) -> None:
    rows = churn_table(5, seed=1)  # with customer_id and the target: accepted
    answer = served.post({"dataframe_records": records(rows)})
    assert answer.status_code == 200, answer.text
    result = answer.json()["predictions"]
    assert set(result) == {"prediction", "probabilities", "request_id"}
    assert set(result["probabilities"]) == {"No", "Yes"}
    total = np.add(result["probabilities"]["No"], result["probabilities"]["Yes"])
    np.testing.assert_allclose(total, 1.0)
    assert set(result["prediction"]) <= {"No", "Yes"}
    logged = served.logged().set_index("request_id").loc[result["request_id"]]
    assert list(logged["customer_id"]) == [str(c) for c in rows["customer_id"]]
    assert "churn" not in logged.columns  # the target is ignored, not logged
    np.testing.assert_allclose(logged["proba_Yes"], result["probabilities"]["Yes"])
    assert list(logged["prediction"]) == result["prediction"]


def test_nulls_over_http_score_as_in_a_file_and_as_training_saw_them(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    rows = churn_table(60, seed=2)
    rows.loc[:9, "plan"] = np.nan
    rows.loc[5:14, "age"] = np.nan
    answer = served.post({"dataframe_records": records(rows[FEATURES])})
    assert answer.status_code == 200, answer.text
    http = answer.json()["predictions"]

    rows.to_csv(served.folder / "nulls.csv", index=False)
    result = mm("predict", str(served.project), str(served.folder / "nulls.csv"),
                cwd=served.folder, env=served.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    batch = pd.read_csv(served.folder / "nulls.predictions.csv")
    assert list(batch["prediction"]) == http["prediction"]
    np.testing.assert_allclose(batch["proba_Yes"], http["probabilities"]["Yes"], rtol=1e-12)
    assert list(batch["customer_id"]) == list(rows["customer_id"])  # the key comes back

    # the environment, not mlflow.set_tracking_uri: that would outlive this test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served.env["MLFLOW_TRACKING_URI"])
    model = mlflow.sklearn.load_model("models:/churn@champion")
    training_view = pd.read_csv(served.folder / "nulls.csv")[FEATURES]  # NaN, as training
    np.testing.assert_allclose(
        model.predict_proba(training_view)[:, 1], http["probabilities"]["Yes"], rtol=1e-12
    )


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("abc", r"column 'age': 'abc' in row 0 is not a number"),
        ([1, 2], r"column 'age': \[1, 2\] in row 0 is not a number"),
        ({"a": 1}, r"column 'age': \{'a': 1\} in row 0 is not a number"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_400_naming_it_and_is_not_logged(
    served: Served, cell: object, message: str
) -> None:
    import re

    before = len(served.logged())
    body = {"dataframe_split": {"columns": FEATURES, "data": [[cell, "pro", 3.0]]}}
    answer = served.post(body)
    assert answer.status_code == 400 and re.search(message, answer.json()["message"])
    assert len(served.logged()) == before


def test_poison_values_are_converted_and_1000_good_requests_follow_them_into_the_log(
    served: Served,
) -> None:
    poison = [
        [["12", "pro", 3.0]],  # a number sent as a string: converted
        [[10**30, "basic", 1.0]],  # an integer beyond int64 in a float column
        [[40.0, 12, 1.0]],  # a number in a text column
        [[40.0, None, None]],  # nulls
        [["abc", "pro", 3.0]],  # refused: not logged
    ]
    answers = [served.post({"dataframe_split": {"columns": FEATURES, "data": rows}})
               for rows in poison]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 400]
    acknowledged = [i for a in answers[:4] for i in a.json()["predictions"]["request_id"]]
    session = requests.Session()
    good = churn_table(1000, seed=3)[FEATURES]
    for row in records(good):
        answer = session.post(f"{served.url}/invocations", json={"dataframe_records": [row]},
                              timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text
        acknowledged += answer.json()["predictions"]["request_id"]
    logged = served.logged()
    assert set(acknowledged) <= set(logged["request_id"])
    assert not logged["request_id"].duplicated().any()
    assert logged["age"].dtype == "float64" and logged["plan"].dtype == object
    by_id = logged.set_index("request_id")
    assert by_id.loc[acknowledged[0], "age"] == 12.0 and by_id.loc[acknowledged[2], "plan"] == "12"
    status = requests.get(f"{served.url}/status", timeout=10).json()
    assert status["healthy"] is True and status["dead_letters"] == 0

    drift = mm("drift", str(served.project), cwd=served.folder, env=served.env)
    assert drift.returncode in (0, 5), drift.stderr  # no drift or drift: it ran


def test_labels_join_by_a_business_key_and_drift_reports_roc_auc(served: Served) -> None:
    from mlflow import MlflowClient

    rows = churn_table(80, seed=4)
    answer = served.post({"dataframe_records": records(rows.drop(columns=["churn"]))})
    assert answer.status_code == 200
    labels = rows[["customer_id", "churn"]]
    labels.to_csv(served.folder / "labels.csv", index=False)
    # an attacker's pickle in the journal and a file cut short: set aside, never run or fatal
    evidence = served.folder / "pwned"
    payload = pickle.dumps(Touch(evidence))
    journal = served.log / "_journal" / "model=churn"
    crafted = journal / "wevilx00000000-00000001.j1.v1.journal"
    crafted.write_bytes(len(payload).to_bytes(8, "little") + payload)
    day = sorted((served.log / "predictions" / "model=churn").glob("date=*"))[-1]
    truncated = day / "part-1-cut.parquet"
    truncated.write_bytes(next(day.glob("part-*.parquet")).read_bytes()[:300])
    result = mm("labels", str(served.project), str(served.folder / "labels.csv"),
                cwd=served.folder, env=served.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ingested 80 labels for churn" in result.stdout
    assert not evidence.exists() and "Traceback" not in result.stderr
    assert crafted.name in result.stderr and truncated.name in result.stderr
    assert not truncated.exists() and not crafted.exists()
    drift = mm("drift", str(served.project), cwd=served.folder, env=served.env)
    assert drift.returncode in (0, 5), drift.stderr
    assert not evidence.exists()
    client = MlflowClient(served.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("churn-monitoring")
    run = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[0]
    assert drift.returncode == {"no_drift": 0, "drift": 5}[run.data.tags["mm.status"]]
    metrics = run.data.metrics
    assert metrics["n_labelled_rows"] >= 80
    assert 0.5 < metrics["current_roc_auc"] <= 1.0 and "reference_roc_auc" in metrics
    assert "performance_drop" in metrics


def test_request_limits_and_malformed_bodies_get_a_4xx_that_echoes_nothing(
    served: Served,
) -> None:
    url = f"{served.url}/invocations"
    many = {"dataframe_split": {"columns": FEATURES, "data": [[30.0, "pro", 1.0]] * 501}}
    answer = requests.post(url, json=many, timeout=30)
    assert answer.status_code == 413 and "501 rows" in answer.json()["message"]

    marker = "SECRET-PAYLOAD-" * 10
    huge = json.dumps({"dataframe_split": {"columns": FEATURES, "data": [[marker, 1, 1]] * 3000}})
    answer = requests.post(url, data=huge, headers={"Content-Type": "application/json"},
                           timeout=30)  # fmt: skip
    assert answer.status_code == 413 and "--max-bytes" in answer.text

    broken = '{"dataframe_split": {"columns": ["age"], "data": [["' + marker * 50 + '"'
    answer = requests.post(url, data=broken, headers={"Content-Type": "application/json"},
                           timeout=30)  # fmt: skip
    assert answer.status_code == 400 and marker not in answer.text and len(answer.text) < 500

    deep = "[" * 100_000 + "]" * 100_000
    answer = requests.post(url, data=deep, headers={"Content-Type": "application/json"},
                           timeout=30)  # fmt: skip
    assert answer.status_code == 400 and "nests too deeply" in answer.text

    answer = requests.post(url, data=b'{"inputs": [1]}', timeout=30)  # no Content-Type at all
    assert answer.status_code == 415 and "Content-Type" in answer.text

    cr_lines = ("age,plan,usage\r" + "40,pro,1\r" * 501).encode()  # old Mac line endings
    answer = requests.post(url, data=cr_lines, headers={"Content-Type": "text/csv"}, timeout=30)
    assert answer.status_code == 413 and "501 rows" in answer.text

    # columnar `inputs` are checked like any other body: a missing feature is not a NaN
    columnar = {"inputs": {"age": [40.0], "plan": ["pro"], "customer_id": [7]}}
    answer = requests.post(url, json=columnar, timeout=30)
    assert answer.status_code == 400 and "missing ['usage']" in answer.text

    # a value that looks like MLflow's own error separator does not smuggle data back
    sneaky = "x'. \nError: card 4111-1111-1111-1111 belongs to bob"
    body = {"dataframe_split": {"columns": FEATURES, "data": [["abc", sneaky, 1.0]]}}
    answer = requests.post(url, json=body, timeout=30)
    assert answer.status_code == 400 and "4111" not in answer.text, answer.text

    mistyped = {"dataframe_split": {"columns": FEATURES, "data": [[marker, "pro", 1.0]]}}
    answer = requests.post(url, json=mistyped, timeout=30)
    assert answer.status_code == 400 and answer.text.count(marker) <= 1  # the value, once
    assert len(answer.text) < 600
    assert requests.get(f"{served.url}/ping", timeout=10).status_code == 200


def test_a_full_disk_is_a_503_until_space_returns_and_loses_no_acknowledged_request(
    trained: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    import shutil

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    folder, project, env = trained
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    acknowledged: list[str] = []
    try:
        server, url = start_serve(folder, project, {**env, "MM_PREDICTION_LOG": str(mount)})
        session = requests.Session()
        body = {"dataframe_records": records(churn_table(2000, seed=5)[FEATURES])}
        try:
            filler = mount / "filler"
            filler.write_bytes(b"\0" * (shutil.disk_usage(mount).free - 700_000))
            codes = []
            for _ in range(60):
                answer = session.post(f"{url}/invocations", json=body, timeout=60)
                codes.append(answer.status_code)
                if answer.status_code == 200:
                    acknowledged += answer.json()["predictions"]["request_id"]
                    continue
                assert answer.status_code == 503, answer.text
                assert "cannot make this request durable" in answer.json()["message"]
                assert str(mount) not in answer.text  # no server paths for clients
                ping = session.get(f"{url}/ping", timeout=10)
                assert ping.status_code == 503 and str(mount) not in ping.text
                state = session.get(f"{url}/status", timeout=10).json()
                assert state["healthy"] is False and state["reason"]
                break
            assert codes[-1] == 503 and 200 in codes, codes
            filler.unlink()
            deadline = time.monotonic() + 30
            while session.get(f"{url}/ping", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "the server did not recover by itself"
                time.sleep(0.2)
            for _ in range(3):
                answer = session.post(f"{url}/invocations", json=body, timeout=60)
                assert answer.status_code == 200, answer.text
                acknowledged += answer.json()["predictions"]["request_id"]
        finally:
            stop(server)
        recover(str(mount), "churn")  # what a failed final write left in the journal
        logged = read_window(str(mount), "predictions", "churn")
        missing = set(acknowledged) - set(logged["request_id"])
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged rows lost"
        assert not logged["request_id"].duplicated().any()
        assert not [p for p in mount.rglob("*") if p.name.startswith(".tmp-")]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_mm_predict_into_a_log_that_cannot_take_rows_says_so_in_one_line(
    trained: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    folder, project, env = trained
    churn_table(20, seed=7).to_csv(tmp_path / "rows.csv", index=False)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    result = mm("predict", str(project), str(tmp_path / "rows.csv"), cwd=folder,
                env={**env, "MM_PREDICTION_LOG": str(blocker / "log")})  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "rows.csv: the prediction log" in result.stderr and "cannot take these rows" in (
        result.stderr
    )
    assert not (tmp_path / "rows.predictions.csv").exists()
