"""`mm server` on PostgreSQL with proxied artifacts: the whole lifecycle over HTTP, checked
afterwards with a plain MlflowClient."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from tests.support import SEED_LINEAR, mm, write_project

LIFECYCLE = {
    **SEED_LINEAR,
    "dataset": {"source": "synthetic", "generator": "linear", "n_samples": 400},
    "compression": {"quantize": {"bits": [8]}},
    "finetune": {"lam": 0.1},
    "serving": {"prediction_log": "log"},
    "monitoring": {"min_rows": 20},
}


@pytest.mark.slow
def test_lifecycle_over_http_on_postgresql(tracking_server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_URI": tracking_server}
    work = tmp_path / "work"
    work.mkdir()
    project = write_project(work, LIFECYCLE)

    def run(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        result = mm(*args, cwd=work, env=env)
        assert result.returncode in ok, (args, result.stdout, result.stderr)
        return result

    run("train", str(project))
    run("compress", str(project))
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.uniform(4, 14, 120)}).to_csv(work / "traffic.csv", index=False)
    run("predict", str(project), str(work / "traffic.csv"))
    scored = pd.read_csv(work / "traffic.predictions.csv")
    scored[["request_id"]].assign(label=3.3 * scored["x"] + 2).to_csv(
        work / "labels.csv", index=False
    )
    run("labels", str(project), str(work / "labels.csv"))
    run("finetune", str(project), "--from-production")
    promoted = run("promote", str(project), ok=(0, 4)).returncode == 0
    # the traffic is x ~ U(4, 14) against training's U(0, 10): version 1 (the one that served
    # it) must see drift
    run("drift", str(project), "--window", "1h", "--version", "1", ok=(5,))

    client = MlflowClient(tracking_uri=tracking_server)
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    assert {"tiny", "tiny-monitoring"} <= set(experiments)
    runs = client.search_runs([experiments["tiny"], experiments["tiny-monitoring"]],
                              max_results=1000)  # fmt: skip
    by_type: dict[str, list] = {}
    for run_ in runs:
        by_type.setdefault(run_.data.tags.get("mm.run_type"), []).append(run_)
        assert run_.info.status == "FINISHED", run_.data.tags
    assert {"train", "compress", "finetune", "promote", "drift"} <= set(by_type)
    (parent,) = [r for r in by_type["train"] if "mlflow.parentRunId" not in r.data.tags]
    assert "holdout_rmse" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "reference" in artifacts  # proxied through the server
    reference = client.download_artifacts(parent.info.run_id, "reference/reference.parquet",
                                          str(tmp_path))  # fmt: skip
    assert len(pd.read_parquet(reference)) == 80
    (drift,) = by_type["drift"]
    assert drift.data.tags["mm.status"] == "drift" and drift.data.metrics["n_current_rows"] == 120
    assert "drift_share" in drift.data.metrics
    assert {a.path for a in client.list_artifacts(drift.info.run_id)} >= {
        "drift_report.html",
        "snapshot.json",
    }
    (decision,) = by_type["promote"]
    assert decision.data.tags["mm.decision"] == ("promoted" if promoted else "refused")

    versions = client.search_model_versions("name = 'tiny'")
    kinds = {v.tags.get("mm.run_type") for v in versions}
    assert {"train", "compress", "finetune"} <= kinds
    aliases = client.get_registered_model("tiny").aliases
    finetuned = next(v.version for v in versions if v.tags.get("mm.run_type") == "finetune")
    if promoted:
        assert str(aliases["champion"]) == str(finetuned) and str(aliases["previous"]) == "1"
    else:
        assert str(aliases["champion"]) == "1" and str(aliases["challenger"]) == str(finetuned)
    # everything lives in PostgreSQL and the server's artifact folder, nothing locally
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists()
    assert any((tmp_path / "artifacts").rglob("drift_report.html"))
    assert requests.get(f"{tracking_server}/health", timeout=5).status_code == 200
