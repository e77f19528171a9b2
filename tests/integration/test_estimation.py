"""Performance estimated without labels, through the real `mm train` and `mm drift` on a
real MLflow store: CBPE's ROC-AUC on a covariate-shift window lands near the realised one."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support import mm, write_project

WEIGHTS = np.array([1.5, -1.0, 0.5, 0.0])


def logistic_rows(n: int, seed: int, *, mean: float = 0.0, scale: float = 1.0) -> pd.DataFrame:
    """Features ~ N(mean, scale²) and a label drawn from the same logistic P(y|x) whatever
    the features' distribution: a shift of `mean`/`scale` is a pure covariate shift."""
    rng = np.random.default_rng(seed)
    X = rng.normal(mean, scale, (n, len(WEIGHTS)))
    p = 1.0 / (1.0 + np.exp(-(X @ WEIGHTS - 0.3)))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(len(WEIGHTS))])
    return frame.assign(label=(rng.random(n) < p).astype(int))


def test_estimated_roc_auc_tracks_the_realised_one_under_covariate_shift(
    store: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    logistic_rows(4000, seed=1).to_csv(tmp_path / "train.csv", index=False)
    config = {
        "name": "cbpe", "task": "binary",
        "dataset": {"source": "file", "path": "train.csv", "target": "label"},
        "candidates": [{"estimator": "logistic", "params": {"C": [1.0]}}],
        "selection": {"metric": "roc_auc"}, "split": {"cv_folds": 2},
        "monitoring": {"min_rows": 50},
    }  # fmt: skip
    project = write_project(tmp_path, config)
    trained = mm("train", str(project), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    # inputs moved and narrowed, P(y|x) kept: the realised ROC-AUC falls from ~0.85
    logistic_rows(3000, seed=2, mean=0.8, scale=0.5).to_csv(tmp_path / "shifted.csv", index=False)
    drift = mm("drift", str(project), "--current", str(tmp_path / "shifted.csv"), cwd=tmp_path)
    assert drift.returncode in (0, 5), drift.stderr

    client = MlflowClient()
    experiment = client.get_experiment_by_name("cbpe-monitoring")
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    realised, estimated = metrics["current_roc_auc"], metrics["estimated_current_roc_auc"]
    print({k: round(v, 4) for k, v in sorted(metrics.items()) if "roc_auc" in k or "f1" in k})
    assert metrics["reference_roc_auc"] - realised > 0.08  # the shift mattered
    assert abs(estimated - realised) < 0.03, (estimated, realised)
    assert metrics["estimation_error_roc_auc"] == estimated - realised
    lower, upper = (
        metrics["estimated_current_roc_auc_lower"],
        metrics["estimated_current_roc_auc_upper"],
    )
    assert lower < realised < upper
    for name in ("accuracy", "recall", "f1"):
        assert abs(metrics[f"estimated_current_{name}"] - metrics[f"current_{name}"]) < 0.05, name
    assert metrics["estimated_performance_drop"] > 0.08
    assert "estimated roc_auc" in run.data.tags["mm.message"]


def test_the_retrain_policy_counts_windows_flagged_by_the_estimated_drop(
    store: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from mm_platform.monitoring.job import DriftOutcome
    from mm_platform.monitoring.retrain import apply_retrain_policy
    from mm_platform.project.config import load_project

    config = {
        "name": "est", "task": "binary",
        "dataset": {"source": "synthetic", "generator": "classification"},
        "candidates": [{"estimator": "logistic"}], "selection": {"metric": "roc_auc"},
        "monitoring": {"retrain": {"on": ["estimated_performance"], "flagged_windows": 2,
                                   "of_last": 3, "max_performance_drop": 0.1}},
    }  # fmt: skip
    project = load_project(write_project(tmp_path, config))
    client = MlflowClient()
    experiment = client.create_experiment("est-monitoring")
    run_ids = []
    for drop in (0.3, 0.05, 0.2):  # oldest first; the newest is flagged
        run = client.create_run(experiment, tags={"mm.run_type": "drift", "mm.model_version": "1"})
        client.log_metric(run.info.run_id, "estimated_performance_drop", drop)
        client.log_metric(run.info.run_id, "performance_drop", 0.0)  # labels say nothing
        client.set_terminated(run.info.run_id, "FINISHED")
        run_ids.append(run.info.run_id)
        time.sleep(0.01)  # distinct start times: the policy reads the newest first
    outcome = DriftOutcome("est", "1", None, None, None, "no_drift", run_ids[-1], 100, "")
    decision = apply_retrain_policy(project, outcome, str(tmp_path / "log"))
    # 2 of the last 3 flagged: fine-tuning is wanted (and fails: this project has no log)
    assert decision.startswith("retrain: wanted (2 of the last 3 windows flagged)"), decision


def test_a_regressor_gets_dle_and_a_version_without_an_estimator_gets_one_fitted(
    store: str, tmp_path: Path
) -> None:
    from mm_platform import tracking
    from mm_platform.modeling.estimation import ESTIMATOR_ARTIFACT
    from mm_platform.monitoring.estimation import estimated_performance
    from mm_platform.monitoring.window import Inputs, reference_frame
    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project
    from tests.support import SEED_LINEAR

    project = load_project(write_project(tmp_path, SEED_LINEAR))
    train_project(project)
    model = tracking.resolve_version("tiny", version="1")
    reference = reference_frame(project, model, "models:/tiny/1")
    window = reference.drop(columns="y")
    inputs = Inputs(reference, [], window, len(window))

    logged, notes = estimated_performance(project, "1", inputs, {"current_rmse": 1.0})
    assert {"estimated_current_rmse", "estimated_current_mae_upper"} <= set(logged)
    assert "estimated_current_r2" not in logged and any("r2 not estimated" in n for n in notes)
    assert logged["estimation_error_rmse"] == logged["estimated_current_rmse"] - 1.0
    assert logged["estimated_current_mae_lower"] < logged["estimated_current_mae"]

    # a version logged before estimators existed: the job fits one on its reference
    for path in (tmp_path / "mlruns").rglob(Path(ESTIMATOR_ARTIFACT).name):
        if model.run_id in str(path):
            path.unlink()
    refitted, notes = estimated_performance(project, "1", inputs, {})
    assert "estimator fitted on the reference by this job (version 1 has none logged)" in notes
    assert refitted["estimated_current_rmse"] == pytest.approx(logged["estimated_current_rmse"])
    assert "estimation_error_rmse" not in refitted  # no labels, no error
