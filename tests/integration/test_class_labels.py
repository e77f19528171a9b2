"""String and boolean class labels end to end: `mm train`, `mm compress`, `mm predict`,
`mm labels`, `mm finetune --data` and `mm promote` on a CSV whose target is "Yes"/"No" or
True/False, against a real SQLite-backed MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support import mm
from tests.support.churn import LABELS, churn_project, write_churn


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["str", "bool"])
def test_string_and_boolean_targets_train_compress_finetune_and_promote(
    store: str, tmp_path: Path, kind: str
) -> None:
    from mlflow import MlflowClient

    negative, positive = LABELS[kind]
    write_churn(tmp_path / "churn.csv", negative, positive)
    project = churn_project(tmp_path)

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

    write_churn(tmp_path / "new.csv", negative, positive, n=120, seed=7)
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
