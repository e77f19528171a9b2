"""String and boolean class labels end to end: `mm train`, `mm compress`, `mm predict`,
`mm labels`, `mm finetune --data` and `mm promote` on a CSV whose target is "Yes"/"No" or
True/False, against a real SQLite-backed MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mm_platform.data.sources import load_dataset
from mm_platform.errors import DataError
from mm_platform.project.config import load_project
from tests.support import mm, write_project

LABELS = {"str": ("No", "Yes"), "bool": (False, True)}


def _churn(path: Path, negative: object, positive: object, n: int = 240, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    churn = np.where(x1 + 0.5 * x2 + rng.normal(scale=0.5, size=n) > 0, positive, negative)
    pd.DataFrame({"x1": x1, "x2": x2, "churn": churn}).to_csv(path, index=False)
    return path


def _project(folder: Path, **extra: object) -> Path:
    data = {
        "name": "churn",
        "task": "binary",
        "dataset": {"source": "file", "path": "churn.csv", "target": "churn"},
        "candidates": [{"estimator": "logistic", "params": {"C": [0.1, 1.0]}}],
        "selection": {"metric": "f1"},
        "split": {"cv_folds": 3},
        "serving": {"prediction_log": "predlog"},
        "compression": {"quantize": {"bits": [16]}},
        # the fine-tuned challenger may score a little lower: the test is about labels
        "promotion": {"min_improvement": -1.0, "max_regression": 10.0},
        **extra,
    }
    return write_project(folder, data)


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["str", "bool"])
def test_string_and_boolean_targets_train_compress_finetune_and_promote(
    store: str, tmp_path: Path, kind: str
) -> None:
    from mlflow import MlflowClient

    negative, positive = LABELS[kind]
    _churn(tmp_path / "churn.csv", negative, positive)
    project = _project(tmp_path)

    trained = mm("train", str(project), cwd=tmp_path)
    _ok(trained)
    client = MlflowClient()
    version = client.get_model_version("churn", "1")
    assert json.loads(version.tags["mm.classes"]) == [str(negative), str(positive)]
    assert version.tags["mm.label_type"] == kind
    run = client.get_run(version.run_id)
    # the positive class is classes_[1]: a model that learnt something has f1 well above 0
    assert run.data.metrics["holdout_f1"] > 0.6
    assert run.data.metrics["cv_f1_mean"] > 0.6
    assert 0.5 < run.data.metrics["holdout_roc_auc"] <= 1.0
    local = client.download_artifacts(version.run_id, "reference/reference.parquet", str(tmp_path))
    reference = pd.read_parquet(local)
    columns = ["x1", "x2", "churn", "prediction", f"proba_{negative}", f"proba_{positive}"]
    assert list(reference.columns) == columns
    assert reference[f"proba_{positive}"].dtype == np.float64
    np.testing.assert_allclose(reference[f"proba_{negative}"] + reference[f"proba_{positive}"], 1)
    assert set(reference["prediction"]) <= {negative, positive}

    compressed = mm("compress", str(project), cwd=tmp_path)
    _ok(compressed)
    variant = client.get_model_version("churn", "2")
    assert variant.tags["mm.run_type"] == "compress"
    assert json.loads(variant.tags["mm.classes"]) == [str(negative), str(positive)]
    assert float(variant.tags["mm.metric.holdout_f1"]) > 0.6

    # labelled production rows, read back from Parquet by the promotion gate
    traffic = pd.read_csv(tmp_path / "churn.csv").drop(columns=["churn"]).head(60)
    traffic.to_csv(tmp_path / "traffic.csv", index=False)
    _ok(mm("predict", str(project), str(tmp_path / "traffic.csv"), cwd=tmp_path))
    predictions = pd.read_csv(tmp_path / "traffic.predictions.csv")
    truth = pd.read_csv(tmp_path / "churn.csv").head(60)["churn"]
    labels = pd.DataFrame({"request_id": predictions["request_id"], "label": truth})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    _ok(mm("labels", str(project), str(tmp_path / "labels.csv"), cwd=tmp_path))

    _churn(tmp_path / "new.csv", negative, positive, n=120, seed=7)
    tuned = mm("finetune", str(project), "--data", str(tmp_path / "new.csv"), cwd=tmp_path)
    _ok(tuned)
    challenger = client.get_model_version_by_alias("churn", "challenger")
    assert challenger.tags["mm.run_type"] == "finetune"
    assert challenger.tags["mm.label_type"] == kind
    assert float(challenger.tags["mm.metric.holdout_f1"]) > 0.6

    promoted = mm("promote", str(project), cwd=tmp_path)
    _ok(promoted)
    assert "labelled production rows" in promoted.stdout
    assert " 0 labelled production rows" not in promoted.stdout
    decision = client.search_runs(
        [client.get_experiment_by_name("churn").experiment_id], "tags.mm.run_type = 'promote'"
    )[0]
    assert decision.data.metrics["challenger_f1"] > 0.6
    assert decision.data.metrics["champion_f1"] > 0.6


@pytest.mark.parametrize(
    "column", ["prediction", "request_id", "timestamp", "model_name", "model_version", "proba_x"]
)
def test_a_feature_column_with_a_reserved_name_is_refused(tmp_path: Path, column: str) -> None:
    frame = pd.read_csv(_churn(tmp_path / "churn.csv", "No", "Yes")).rename(columns={"x2": column})
    frame.to_csv(tmp_path / "churn.csv", index=False)
    project = load_project(_project(tmp_path))
    with pytest.raises(DataError, match=f"feature column '{column}' has a name the prediction"):
        load_dataset(project)
