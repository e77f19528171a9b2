"""The drift job against a real MLflow store, prediction log, webhook and Evidently
workspace; the retrain policy; the scheduler driving the real job; `mm drift` exit codes."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from mm_platform.errors import DataError
from mm_platform.project.config import load_project
from tests.support import SEED_LINEAR, mm, write_project

MONITORED = {
    **SEED_LINEAR,
    "dataset": {"source": "synthetic", "generator": "linear", "n_samples": 400},
    "serving": {"prediction_log": "log"},
    "monitoring": {"min_rows": 20, "window": "1h", "schedule": "0 * * * *"},
}


def traffic(n: int, *, shifted: bool, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.uniform(6.0, 16.0, n) if shifted else rng.uniform(0, 10, n)})


def log_traffic(project, frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Score `frame` with the champion through the batch path (rows go to the log)."""
    from mm_platform import tracking
    from mm_platform.serving.batch import predict_file
    from mm_platform.serving.predlog.writer import log_root

    path = folder / f"traffic-{len(list(folder.glob('traffic-*')))}.csv"
    frame.to_csv(path, index=False)
    version = str(tracking.resolve_version(project.name).version)
    uri = f"models:/{project.name}/{version}"
    result = predict_file(
        project, path, version=version, model=tracking.load_pyfunc(uri),
        schema=tracking.input_schema(uri),
        log_root=log_root(project.serving.prediction_log),
    )  # fmt: skip
    return pd.read_csv(result.output)


def window_now() -> tuple[datetime, datetime]:
    end = datetime.now(timezone.utc) + timedelta(seconds=1)
    return end - timedelta(hours=1), end


@pytest.fixture
def project_file(store: str, tmp_path: Path) -> Path:
    from mm_platform.training.search import train_project

    path = write_project(tmp_path, MONITORED)
    train_project(load_project(path))
    return path


def test_drift_job_is_an_mlflow_run_with_flat_metrics_report_and_snapshot(
    project_file: Path, tmp_path: Path
) -> None:
    from evidently.core.report import Snapshot
    from mlflow import MlflowClient

    from mm_platform.monitoring.job import run_drift
    from mm_platform.serving.batch import ingest_labels
    from mm_platform.serving.predlog.writer import log_root

    project = load_project(project_file)
    scored = log_traffic(project, traffic(200, shifted=False), tmp_path)
    start, end = window_now()
    outcome = run_drift(project, start=start, end=end)
    assert (outcome.status, outcome.exit_code, outcome.n_current) == ("no_drift", 0, 200)

    client = MlflowClient()
    run = client.get_run(outcome.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "tiny-monitoring" and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["mm.run_type"] == "drift" and tags["mm.model_name"] == "tiny"
    assert tags["mm.model_version"] == "1" and tags["mm.alias"] == "champion"
    assert tags["mm.window_start"] == start.isoformat()
    assert tags["mm.window_end"] == end.isoformat()
    metrics = run.data.metrics
    assert metrics["drift_share"] == 0.0 and metrics["n_drifted_columns"] == 0.0
    assert metrics["drifted.x"] == 0.0 and 0.05 < metrics["drift_score.x"] <= 1.0  # KS p-value
    assert "prediction_drift_score" in metrics and metrics["prediction_drifted"] == 0.0
    assert "target_drift_score" not in metrics  # no labels yet
    assert run.data.params["method.x"] == "ks"
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"drift_report.html", "snapshot.json"} <= artifacts
    text = Path(client.download_artifacts(outcome.run_id, "snapshot.json")).read_text()
    reloaded = Snapshot.loads(text)
    scores = {m["config"]["column"]: m["value"] for m in reloaded.dict()["metrics"]}
    assert scores["x"] == pytest.approx(metrics["drift_score.x"])

    # labels arrive: target drift and performance (training's metric names, prefixed)
    labels = scored[["request_id"]].assign(label=3 * scored["x"] + 2)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    ingest_labels(project, tmp_path / "labels.csv", log_root=log_root("log"))
    labelled = run_drift(project, start=start, end=end + timedelta(seconds=1))
    metrics = client.get_run(labelled.run_id).data.metrics
    assert {"target_drift_score", "target_drifted", "current_rmse", "current_r2",
            "reference_rmse", "performance_drop"} <= set(metrics)  # fmt: skip
    assert metrics["current_rmse"] < 1.0 and metrics["n_labelled_rows"] == 200


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_drift_found_alerts_the_webhook_and_fills_the_workspace(store: str, tmp_path: Path) -> None:
    from evidently.ui.workspace import Workspace

    from mm_platform.monitoring.job import run_drift
    from mm_platform.training.search import train_project

    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received.clear()
    config = {**MONITORED, "monitoring": {**MONITORED["monitoring"], "workspace": "ws",
              "webhook": f"http://127.0.0.1:{server.server_port}/hook"}}  # fmt: skip
    project = load_project(write_project(tmp_path, config))
    train_project(project)
    try:
        traffic(300, shifted=True).to_csv(tmp_path / "shifted.csv", index=False)
        outcome = run_drift(project, current_path=tmp_path / "shifted.csv")
        assert (outcome.status, outcome.exit_code) == ("drift", 5)
        assert outcome.drifted_columns == ["x", "prediction"]
        assert len(_Hook.received) == 1
        alert = _Hook.received[0]
        assert alert["project"] == "tiny" and alert["drifted_columns"] == ["x", "prediction"]
        assert alert["mlflow_run_id"] == outcome.run_id and alert["drift_share"] == 1.0

        traffic(300, shifted=False).to_csv(tmp_path / "calm.csv", index=False)
        calm = run_drift(project, current_path=tmp_path / "calm.csv")
        assert calm.status == "no_drift" and len(_Hook.received) == 1  # no alert
    finally:
        server.shutdown()
    workspace = Workspace.create(str(tmp_path / "ws"))
    (found,) = workspace.search_project("tiny-monitoring")
    assert len(workspace.list_runs(found.id)) == 2


def test_too_few_rows_is_not_enough_data_not_a_crash(project_file: Path) -> None:
    from mlflow import MlflowClient

    from mm_platform.monitoring.job import run_drift

    project = load_project(project_file)
    outcome = run_drift(project, start=datetime(2020, 1, 1, tzinfo=timezone.utc),
                        end=datetime(2020, 1, 2, tzinfo=timezone.utc))  # fmt: skip
    assert (outcome.status, outcome.exit_code, outcome.n_current) == ("not_enough_data", 6, 0)
    run = MlflowClient().get_run(outcome.run_id)
    assert run.data.tags["mm.status"] == "not_enough_data"
    assert "drift_share" not in run.data.metrics


def test_a_rerun_of_a_window_is_a_run_of_its_own_name(project_file: Path) -> None:
    from mlflow import MlflowClient

    from mm_platform.monitoring.job import run_drift

    project = load_project(project_file)
    day = datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2020, 1, 2, tzinfo=timezone.utc)
    hour = day[0], datetime(2020, 1, 1, 1, tzinfo=timezone.utc)
    windows = [day, day, hour, day]
    runs = [run_drift(project, start=s, end=e).run_id for s, e in windows]
    names = [MlflowClient().get_run(run_id).info.run_name for run_id in runs]
    name = "drift v1 2020-01-01 00:00:00..2020-01-02 00:00:00"
    assert names == [name, f"{name} #2", "drift v1 2020-01-01 00:00:00..01:00:00", f"{name} #3"]


def test_bad_current_file_is_refused_before_any_run(project_file: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from mm_platform.monitoring.job import run_drift

    project = load_project(project_file)
    for name, frame in (
        ("strings.csv", pd.DataFrame({"x": ["a"] * 30, "prediction": [1.0] * 30})),
        ("no-predictions.csv", pd.DataFrame({"x": ["a"] * 29 + [1.0]})),  # not scored first
    ):
        frame.to_csv(tmp_path / name, index=False)
        with pytest.raises(DataError, match=rf"{name}: column\(s\) x \(object\) should be"):
            run_drift(project, current_path=tmp_path / name)
    pd.DataFrame({"z": [1.0] * 30, "prediction": [1.0] * 30}).to_csv(
        tmp_path / "other.csv", index=False
    )
    with pytest.raises(DataError, match=r"other.csv: missing column\(s\) \['x'\]"):
        run_drift(project, current_path=tmp_path / "other.csv")
    # a file is checked before a run opens: bad input leaves no run behind (the experiment
    # itself exists: mm train creates it, so the model's writer owns it)
    experiment = MlflowClient().get_experiment_by_name("tiny-monitoring")
    assert MlflowClient().search_runs([experiment.experiment_id]) == []


def test_retrain_policy_fine_tunes_and_hands_to_the_gate(store: str, tmp_path: Path) -> None:
    from mm_platform import tracking
    from mm_platform.monitoring.job import run_drift
    from mm_platform.serving.batch import ingest_labels
    from mm_platform.serving.predlog.writer import log_root
    from mm_platform.training.search import train_project

    config = {**MONITORED, "monitoring": {**MONITORED["monitoring"], "retrain": {
        "flagged_windows": 2, "of_last": 3, "on": ["drift"], "auto_promote": True}}}  # fmt: skip
    project = load_project(write_project(tmp_path, config))
    train_project(project)
    scored = log_traffic(project, traffic(300, shifted=True), tmp_path)
    labels = scored[["request_id"]].assign(label=3 * scored["x"] + 2)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    ingest_labels(project, tmp_path / "labels.csv", log_root=log_root("log"))
    start, end = window_now()

    first = run_drift(project, start=start, end=end)
    assert first.status == "drift"
    assert first.decisions == ["retrain: no (1 of the last 1 windows flagged; needs 2 of 3)"]
    assert tracking.get_alias_version("tiny", "challenger") is None

    second = run_drift(project, start=start, end=end + timedelta(seconds=1))
    (decision,) = second.decisions
    assert decision.startswith("retrain: yes (2 of the last 2 windows flagged); fine-tuned ")
    tuned = decision.split("fine-tuned version ")[1].split()[0]
    if "promoted to @champion" in decision:  # the gate passed: the challenger became champion
        assert str(tracking.get_alias_version("tiny", "champion")) == tuned
        assert str(tracking.get_alias_version("tiny", "previous")) == "1"
    else:
        assert "refused by the gate" in decision
        assert str(tracking.get_alias_version("tiny", "challenger")) == tuned
    from mlflow import MlflowClient

    assert MlflowClient().get_run(second.run_id).data.tags["mm.decisions"] == decision


def test_schedule_runs_the_real_job_once_per_window_and_catches_up(
    project_file: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from mm_platform.monitoring.schedule import run_due

    project = load_project(project_file)
    now = datetime(2026, 1, 1, 12, 30, tzinfo=timezone.utc)
    first = run_due([project], now=now, state_dir=tmp_path / "state")
    assert [(r.end.hour, r.status) for r in first] == [(12, "not_enough_data")]
    later = run_due([project], now=now + timedelta(hours=3), state_dir=tmp_path / "state")
    assert [r.end.hour for r in later] == [13, 14, 15]
    assert run_due([project], now=now + timedelta(hours=3), state_dir=tmp_path / "state") == []
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tiny-monitoring").experiment_id])
    ends = sorted(r.data.tags["mm.window_end"] for r in runs)
    assert ends == [f"2026-01-01T{h}:00:00+00:00" for h in (12, 13, 14, 15)]


def test_mm_drift_exit_codes_and_one_line_errors(project_file: Path, tmp_path: Path) -> None:
    traffic(300, shifted=True).to_csv(tmp_path / "shifted.csv", index=False)
    found = mm("drift", str(project_file), "--current", str(tmp_path / "shifted.csv"), cwd=tmp_path)
    assert found.returncode == 5, found.stderr
    assert "DRIFT: 1 of 1 features drifted" in found.stdout
    assert "report: " in found.stdout and "drift_report.html" in found.stdout

    pd.DataFrame({"z": [1.0] * 30}).to_csv(tmp_path / "other.csv", index=False)
    bad = mm("drift", str(project_file), "--current", str(tmp_path / "other.csv"), cwd=tmp_path)
    assert bad.returncode == 2
    assert "other.csv: missing column(s) ['x']" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_drift_ui_serves_the_workspace_without_telemetry(store: str, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    from mm_platform.monitoring.job import run_drift
    from mm_platform.training.search import train_project
    from tests.support import free_port

    config = {**MONITORED, "monitoring": {**MONITORED["monitoring"], "workspace": "ws"}}
    path = write_project(tmp_path, config)
    project = load_project(path)
    train_project(project)
    traffic(100, shifted=False).to_csv(tmp_path / "calm.csv", index=False)
    run_drift(project, current_path=tmp_path / "calm.csv")
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "drift-ui", str(path), "--port", str(port)],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "DO_NOT_TRACK"},  # mm must set it
    )  # fmt: skip
    try:
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/api/projects", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        assert answer is not None and answer.status_code == 200
        assert "tiny-monitoring" in answer.text
        environ = Path(f"/proc/{ui.pid}/task/{ui.pid}/children").read_text().split()
        child_env = Path(f"/proc/{environ[0]}/environ").read_bytes().split(b"\0")
        assert b"DO_NOT_TRACK=1" in child_env
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(20)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_classification_with_partly_labelled_window(store: str, tmp_path: Path, task: str) -> None:
    from mlflow import MlflowClient

    from mm_platform.monitoring.job import run_drift
    from mm_platform.serving.batch import ingest_labels
    from mm_platform.serving.predlog.writer import log_root
    from mm_platform.training.search import train_project

    classes = 2 if task == "binary" else 3
    config = {
        "name": "clf", "task": task,
        "dataset": {"source": "synthetic", "generator": "classification", "n_samples": 400,
                    "n_features": 6, "n_classes": classes},
        "candidates": [{"estimator": "logistic", "params": {"C": [1.0]}}],
        "selection": {"metric": "roc_auc"}, "split": {"cv_folds": 3},
        "serving": {"prediction_log": "log"}, "monitoring": {"min_rows": 20},
    }  # fmt: skip
    project = load_project(write_project(tmp_path, config))
    train = train_project(project)
    from mm_platform import tracking
    from mm_platform.serving.batch import predict_file

    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(0, 1.5, (200, 6)), columns=[f"x{i}" for i in range(6)])
    frame.to_csv(tmp_path / "traffic.csv", index=False)
    model = tracking.load_pyfunc(f"models:/clf/{train.version}")
    scored = pd.read_csv(
        predict_file(project, tmp_path / "traffic.csv", version=str(train.version), model=model,
                     schema=[(c, "double") for c in frame.columns],
                     log_root=log_root("log")).output
    )  # fmt: skip
    labelled = scored.head(150)  # 50 rows stay unlabelled: the join makes labels floats
    truth = (labelled["x0"] > 0).astype(int) + (classes == 3) * (labelled["x1"] > 0)
    labelled[["request_id"]].assign(label=truth).to_csv(tmp_path / "labels.csv", index=False)
    ingest_labels(project, tmp_path / "labels.csv", log_root=log_root("log"))
    start, end = window_now()
    outcome = run_drift(project, start=start, end=end)
    run = MlflowClient().get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["n_labelled_rows"] == 150 and "current_f1" in metrics
    assert "target_drift_score" in metrics and "prediction_drift_score" in metrics
    assert run.data.params["method.prediction"] in ("chisquare_2s", "z")
    assert run.data.params["test_reason.prediction"].startswith("default: ")
    # the logged class probabilities give the label-based ROC-AUC, and so the drop on it
    assert 0.0 <= metrics["current_roc_auc"] <= 1.0 and "reference_roc_auc" in metrics
    expected = (metrics["reference_roc_auc"] - metrics["current_roc_auc"]) / abs(
        metrics["reference_roc_auc"]
    )
    assert metrics["performance_drop"] == pytest.approx(expected)


def test_a_roc_auc_drop_on_labelled_probabilities_triggers_the_retrain_policy(
    store: str, tmp_path: Path
) -> None:
    from mm_platform import tracking
    from mm_platform.monitoring.job import run_drift
    from mm_platform.serving.batch import ingest_labels
    from mm_platform.serving.predlog.writer import log_root
    from mm_platform.training.search import train_project

    config = {
        "name": "clf", "task": "binary",
        "dataset": {"source": "synthetic", "generator": "classification", "n_samples": 400,
                    "n_features": 4},
        "candidates": [{"estimator": "logistic", "params": {"C": [1.0]}}],
        "selection": {"metric": "roc_auc"}, "split": {"cv_folds": 3},
        "serving": {"prediction_log": "log"},
        "monitoring": {"min_rows": 20, "retrain": {
            "flagged_windows": 1, "of_last": 1, "on": ["performance"],
            "max_performance_drop": 0.2, "auto_promote": False}},
    }  # fmt: skip
    project = load_project(write_project(tmp_path, config))
    train_project(project)
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(0, 1.5, (200, 4)), columns=[f"x{i}" for i in range(4)])
    scored = log_traffic(project, frame, tmp_path)
    # the world turned: every label is the other class than the model says
    scored[["request_id"]].assign(label=1 - scored["prediction"]).to_csv(
        tmp_path / "labels.csv", index=False
    )
    ingest_labels(project, tmp_path / "labels.csv", log_root=log_root("log"))
    start, end = window_now()
    outcome = run_drift(project, start=start, end=end)
    assert outcome.metrics["current_roc_auc"] < 0.5 < outcome.metrics["reference_roc_auc"]
    assert outcome.metrics["performance_drop"] > 0.2
    (decision,) = outcome.decisions
    assert decision.startswith("retrain: yes (1 of the last 1 windows flagged); fine-tuned ")
    assert decision.endswith("auto_promote is off, promote it with mm promote")
    assert str(tracking.get_alias_version("clf", "challenger")) == "2"


@pytest.mark.slow
def test_a_drift_job_killed_mid_run_is_redone_once_by_the_next_round(
    project_file: Path, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    from mm_platform.monitoring.schedule import read_last_end

    project = load_project(project_file)
    log_traffic(project, traffic(100, shifted=False), tmp_path)
    # every minute, so that the latest window holds the traffic just logged
    every_minute = {**MONITORED, "monitoring": {**MONITORED["monitoring"], "schedule": "* * * * *"}}
    project_file = write_project(tmp_path, every_minute, "every-minute.yaml")
    client = MlflowClient()
    killed, state = None, tmp_path
    for attempt in range(3):  # a kill can land just after the run ended: then try again
        state = tmp_path / f"state{attempt}"
        job = subprocess.Popen(
            [sys.executable, "-m", "mm_platform", "schedule", str(project_file), "--once",
             "--state-dir", str(state)],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        seen = None
        deadline = time.monotonic() + 120
        while seen is None and job.poll() is None and time.monotonic() < deadline:
            experiment = client.get_experiment_by_name("tiny-monitoring")
            if experiment is not None:
                running = client.search_runs([experiment.experiment_id],
                                             "attributes.status = 'RUNNING'")  # fmt: skip
                if running:
                    job.send_signal(signal.SIGKILL)  # mid-run: the window is not done
                    seen = running[0]
            time.sleep(0.02)
        job.wait(30)
        if seen is not None and client.get_run(seen.info.run_id).info.status == "RUNNING":
            killed = seen
            break
    assert killed is not None, "the job finished before it could be killed, three times"
    window_end = killed.data.tags["mm.window_end"]
    assert read_last_end("tiny", state) < datetime.fromisoformat(window_end)  # not completed

    experiment_id = client.get_experiment_by_name("tiny-monitoring").experiment_id

    def window_runs() -> dict[str, list]:
        found = client.search_runs([experiment_id], f"tags.`mm.window_end` = '{window_end}'")
        by_status: dict[str, list] = {}
        for run in found:
            if run.info.start_time < killed.info.start_time:
                continue  # a missed kill above (other state folder) ran this window already
            by_status.setdefault(run.info.status, []).append(run)
        return by_status

    for _ in range(2):  # the next round redoes the window; the one after leaves it alone
        result = mm("schedule", str(project_file), "--once", "--state-dir", str(state),
                    cwd=tmp_path)  # fmt: skip
        assert result.returncode in (0, 5, 6) and "Traceback" not in result.stderr
        runs = window_runs()
        assert sorted(runs) == ["FINISHED", "KILLED"]
        assert len(runs["FINISHED"]) == 1 and len(runs["KILLED"]) == 1
        replacement = runs["FINISHED"][0].info.run_id
        assert runs["KILLED"][0].data.tags["mm.superseded_by"] == replacement
        assert read_last_end("tiny", state) >= datetime.fromisoformat(window_end)
