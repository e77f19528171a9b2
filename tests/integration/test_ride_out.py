"""Compression, fine-tuning and drift write their runs through the outage-proof writer: a real
`mlflow server` behind a proxy that cuts requests off on cue. A short outage is ridden
out and the runs land complete, once; an outage that outlasts the retry budget fails the
command with a clear error and leaves nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mm_platform.errors import TrackingError
from mm_platform.project.config import load_project
from tests.support import SEED_LINEAR, write_project
from tests.support.proxy import RefusingProxy

pytestmark = pytest.mark.slow  # an `mlflow server` takes 10-15 s to start

PROJECT = {
    **SEED_LINEAR,
    "dataset": {"source": "synthetic", "generator": "linear", "n_samples": 400},
    "serving": {"prediction_log": "log"},
    "monitoring": {"min_rows": 20, "window": "1h"},
    "compression": {"quantize": {"bits": [8, 16]}},
}
OUTAGE = 4  # requests cut off: the first write, then the writer's health checks


@pytest.fixture
def proxy(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The server behind the proxy, which is the tracking URI of this test."""
    proxy = RefusingProxy(int(mlflow_server.rsplit(":", 1)[1]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MM_TRACKING_RETRY", "60")
    monkeypatch.chdir(tmp_path)
    yield proxy
    proxy.close()


@pytest.fixture
def project(proxy: RefusingProxy, tmp_path: Path):
    from mm_platform.training.search import train_project

    loaded = load_project(write_project(tmp_path, PROJECT))
    assert train_project(loaded).alias == "champion"
    return loaded


def new_rows(path: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, n)
    pd.DataFrame({"x": x, "y": 2.5 * x + 1.0 + rng.normal(0, 0.5, n)}).to_csv(path, index=False)
    return path


def log_traffic(project, folder: Path, n: int = 100) -> None:
    from mm_platform import tracking
    from mm_platform.serving.batch import predict_file
    from mm_platform.serving.predlog.writer import log_root

    path = folder / "traffic.csv"
    pd.DataFrame({"x": np.random.default_rng(4).uniform(0, 10, n)}).to_csv(path, index=False)
    uri = f"models:/{project.name}/1"
    predict_file(
        project, path, version="1", model=tracking.load_pyfunc(uri),
        schema=tracking.input_schema(uri), log_root=log_root(project.serving.prediction_log),
    )  # fmt: skip


def runs_of(experiment: str, run_type: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], f"tags.`mm.run_type` = '{run_type}'")


def test_compress_rides_out_a_short_outage_and_lands_complete_once(
    project, proxy: RefusingProxy
) -> None:
    from mlflow import MlflowClient

    from mm_platform.compression.job import compress_project

    proxy.refuse_from("/logged-models", OUTAGE)  # mid-way: the parent run is written
    result = compress_project(project)
    assert len(proxy.refused) == OUTAGE and "/logged-models" in proxy.refused[0]
    assert [(v.variant, v.version) for v in result.variants] == [("int8", "2"), ("float16", "3")]
    client = MlflowClient()
    runs = runs_of("tiny", "compress")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}  # no duplicates
    children = [r for r in runs if r.info.run_id != result.run_id]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {result.run_id}
    assert all("compression_ratio" in r.data.metrics for r in children)
    versions = client.search_model_versions("name = 'tiny'")
    assert sorted(str(v.version) for v in versions) == ["1", "2", "3"]
    names = {a.path for a in client.list_artifacts(result.run_id, "compression")}
    assert names == {"compression/pareto.png", "compression/variants.json"}


def test_finetune_and_drift_ride_out_a_short_outage_and_land_complete_once(
    project, proxy: RefusingProxy, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from mm_platform.lifecycle.finetuning import finetune_project
    from mm_platform.monitoring.job import run_drift

    log_traffic(project, tmp_path)
    proxy.refuse_from("/runs/create", OUTAGE)
    tuned = finetune_project(
        project, data_path=new_rows(tmp_path / "new.csv"), log_root=str(tmp_path / "log")
    )
    assert len(proxy.refused) == OUTAGE and "/runs/create" in proxy.refused[0]
    client = MlflowClient()
    assert tuned.version == "2"
    assert str(client.get_model_version_by_alias("tiny", "challenger").version) == "2"
    [run] = runs_of("tiny", "finetune")  # one run, however many passes it took
    assert run.info.run_id == tuned.run_id and run.info.status == "FINISHED"
    assert run.data.metrics["size_bytes"] > 1000 and run.data.params["n_rows"] == "200"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reference")}
    assert artifacts == {"reference/reference.parquet", "reference/estimator.skops"}

    proxy.refuse_from("/runs/create", OUTAGE)
    outcome = run_drift(project, version="1", retrain=False)
    assert len(proxy.refused) == 2 * OUTAGE
    assert (outcome.status, outcome.n_current) == ("no_drift", 100)
    [drift] = runs_of("tiny-monitoring", "drift")
    assert drift.info.run_id == outcome.run_id and drift.info.status == "FINISHED"
    assert drift.data.tags["mm.status"] == "no_drift" and drift.data.metrics["window_rows"] == 100
    names = {a.path for a in client.list_artifacts(drift.info.run_id)}
    assert {"drift_report.html", "snapshot.json"} <= names
    assert outcome.report_uri and outcome.report_uri.endswith("/drift_report.html")


def test_a_server_that_stays_away_fails_clearly_and_leaves_nothing_half_written(
    project, proxy: RefusingProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from mm_platform.compression.job import compress_project
    from mm_platform.lifecycle.finetuning import finetune_project
    from mm_platform.monitoring.job import run_drift

    log_traffic(project, tmp_path)
    monkeypatch.setenv("MM_TRACKING_RETRY", "2")
    proxy.refuse_from("/runs/create")
    with pytest.raises(TrackingError, match=r"unreachable .* the compression of tiny version 1"):
        compress_project(project)
    proxy.refuse_from("/runs/create")
    with pytest.raises(TrackingError, match=r"unreachable .* the fine-tuned model is not recorded"):
        finetune_project(
            project, data_path=new_rows(tmp_path / "new.csv"), log_root=str(tmp_path / "log")
        )
    proxy.refuse_from("/runs/create")
    with pytest.raises(TrackingError, match=r"unreachable .* the drift run of tiny version 1"):
        run_drift(project, version="1", retrain=False)
    proxy.stop_refusing()

    client = MlflowClient()
    assert runs_of("tiny", "finetune") == [] and runs_of("tiny-monitoring", "drift") == []
    assert runs_of("tiny", "compress") == []
    versions = client.search_model_versions("name = 'tiny'")
    assert [str(v.version) for v in versions] == ["1"]  # no version without its alias
    assert set(client.get_registered_model("tiny").aliases) == {"champion"}
