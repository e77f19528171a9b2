"""`train_project` against a real SQLite-backed MLflow: runs, metrics, inputs, model, registry."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mm_platform.errors import ProjectConfigError
from mm_platform.project.config import load_project
from mm_platform.training.search import REFERENCE_ARTIFACT, expand_trials, train_project
from tests.support import PROJECTS, SEED_LINEAR, mm, write_project


def _children(client, parent_run_id: str, experiment_id: str):
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_train_tags_its_experiments_classic_ml_also_ones_made_before_without_the_tag(
    store: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for name in ("tiny", "tiny-monitoring"):  # made by an older mm, or by hand
        client.create_experiment(name)
    train_project(load_project(write_project(tmp_path, SEED_LINEAR)))
    for name in ("tiny", "tiny-monitoring"):
        experiment = client.get_experiment_by_name(name)
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_train_logs_parent_children_model_and_registers_champion_then_challenger(
    store: str, tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient

    project = load_project(write_project(tmp_path, SEED_LINEAR))
    result = train_project(project)
    client = MlflowClient()

    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert re.fullmatch(r"train/tiny \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", parent.info.run_name)
    assert parent.data.tags["mm.run_type"] == "train"
    assert {
        "holdout_rmse",
        "holdout_mae",
        "holdout_r2",
        "cv_rmse_mean",
        "latency_ms_per_1k_rows",
    } <= set(parent.data.metrics)
    assert parent.data.params["features.polynomial_degree"] == "2"
    assert parent.data.params["best.alpha"] in {"0.1", "1.0"}

    children = _children(client, result.run_id, result.experiment_id)
    assert sorted(c.data.params["model.alpha"] for c in children) == ["0.1", "1.0"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"cv_rmse_mean", "cv_rmse_std", "cv_mae_mean", "cv_r2_mean"} <= set(
            child.data.metrics
        )
    best_cv = min(c.data.metrics["cv_rmse_mean"] for c in children)
    assert result.cv_score == pytest.approx(best_cv)

    contexts = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
        for d in parent.inputs.dataset_inputs
    }
    assert set(contexts) == {"training", "holdout"}
    assert contexts["training"].digest == parent.data.tags["mm.dataset_digest"]

    version = client.get_model_version("tiny", result.version)
    assert result.alias == "champion"
    assert client.get_model_version_by_alias("tiny", "champion").version == version.version
    assert version.tags["mm.run_type"] == "train"
    assert version.tags["mm.project"] == "tiny"
    assert version.tags["mm.source_run_id"] == result.run_id
    assert version.tags["mm.dataset_digest"] == result.dataset_digest
    assert float(version.tags["mm.metric.size_bytes"]) == parent.data.metrics["size_bytes"] > 1000
    assert parent.data.metrics["n_params"] == 3  # ridge on x, x²: two weights and an intercept

    reference = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path=REFERENCE_ARTIFACT)
    )
    assert list(reference.columns) == ["x", "y", "prediction"]
    assert len(reference) == 40  # the holdout: 20 % of 200 rows
    assert "figures/predicted_vs_actual.png" in {
        a.path for a in client.list_artifacts(result.run_id, "figures")
    }

    model = mlflow.pyfunc.load_model("models:/tiny@champion")
    np.testing.assert_allclose(model.predict(reference[["x"]]), reference["prediction"])
    assert model.metadata.signature.inputs.input_names() == ["x"]

    again = train_project(project)
    assert (again.version, again.alias) == ("2", "challenger")
    assert client.get_model_version_by_alias("tiny", "champion").version == version.version


def test_classification_reports_the_four_metrics_and_figure(store: str) -> None:
    from mlflow import MlflowClient

    project = load_project(PROJECTS / "breast_cancer.yaml")
    project = project.model_copy(update={"candidates": project.candidates[:1]})
    result = train_project(project)
    run = MlflowClient().get_run(result.run_id)
    for name in ("holdout_accuracy", "holdout_recall", "holdout_f1", "holdout_roc_auc"):
        assert 0.85 < run.data.metrics[name] <= 1.0
    assert "figures/roc_confusion.png" in {
        a.path for a in MlflowClient().list_artifacts(result.run_id, "figures")
    }


def test_mlp_learning_curve_is_logged_as_history(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    data = copy.deepcopy(SEED_LINEAR)
    data["candidates"] = [
        {"estimator": "mlp", "params": {"hidden_layer_sizes": [[16]], "max_iter": 60}}
    ]
    result = train_project(load_project(write_project(tmp_path, data)))
    history = MlflowClient().get_metric_history(result.run_id, "train_loss")
    assert len(history) == 60
    assert history[-1].value < history[0].value


def test_random_search_samples_n_iter_seeded_configurations(tmp_path: Path) -> None:
    data = copy.deepcopy(SEED_LINEAR)
    data["candidates"] = [
        {
            "estimator": "lasso",
            "params": {"alpha": {"distribution": "loguniform", "low": 0.001, "high": 1.0}},
            "search": {"kind": "random", "n_iter": 5},
        }
    ]
    project = load_project(write_project(tmp_path, data))
    first, second = expand_trials(project), expand_trials(project)
    assert len(first) == 5
    assert [t.params for t in first] == [t.params for t in second]
    assert all(0.001 <= t.params["alpha"] <= 1.0 for t in first)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"alpah": [1.0]},
            r"candidates\[0\]\.params\.alpah is not a parameter of Ridge \(it takes: alpha,",
        ),
        ({"alpha": [-1.0]}, r"candidates\[0\]\.params: The 'alpha' parameter of Ridge must be"),
    ],
)
def test_bad_hyper_parameters_fail_before_any_run(
    store: str, tmp_path: Path, params: dict, message: str
) -> None:
    from mlflow import MlflowClient

    data = copy.deepcopy(SEED_LINEAR)
    data["candidates"][0]["params"] = params
    with pytest.raises(ProjectConfigError, match=message):
        train_project(load_project(write_project(tmp_path, data)))
    assert MlflowClient().search_registered_models() == []
    assert MlflowClient().get_experiment_by_name("tiny") is None


def test_select_k_best_above_feature_count(store: str, tmp_path: Path) -> None:
    data = copy.deepcopy(SEED_LINEAR)
    data["features"] = {"polynomial_degree": 2, "select_k_best": 5}
    with pytest.raises(
        ProjectConfigError, match=r"select_k_best is 5 but preprocessing makes only 2"
    ):
        train_project(load_project(write_project(tmp_path, data)))


def test_a_failing_configuration_fails_only_its_child_run(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    data = copy.deepcopy(SEED_LINEAR)
    # 500 neighbours cannot be found among ~107 rows per training fold: a real fit-time error
    data["candidates"].append({"estimator": "knn", "params": {"n_neighbors": [500]}})
    result = train_project(load_project(write_project(tmp_path, data)))
    assert (result.candidate, result.n_trials, result.n_failed) == ("ridge", 3, 1)
    client = MlflowClient()
    children = _children(client, result.run_id, result.experiment_id)
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1
    assert failed[0].data.tags["mm.candidate"] == "knn"
    assert "n_neighbors" in failed[0].data.tags["mm.error"]
    assert client.get_run(result.run_id).data.metrics["n_failed_trials"] == 1


def test_any_estimator_error_fails_only_its_trial_in_one_line(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    data = copy.deepcopy(SEED_LINEAR)
    # seuclidean without its V: sklearn's KNN raises a TypeError from its distance code
    data["candidates"].append({"estimator": "knn", "params": {"metric": ["seuclidean"]}})
    result = train_project(load_project(write_project(tmp_path, data)))
    assert (result.candidate, result.n_failed) == ("ridge", 1)
    children = _children(MlflowClient(), result.run_id, result.experiment_id)
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1
    assert failed[0].data.tags["mm.error"].startswith("TypeError: ")
    assert "\n" not in failed[0].data.tags["mm.error"]


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ({"estimator": "knn", "params": {"metric": "pyfunc"}},
         r"candidates\[0\]\.params\.metric 'pyfunc' needs a Python callable"),
        ({"estimator": "mlp", "params": {"hidden_layer_sizes": [[60000, 60000]]}},
         r"hidden_layer_sizes \[60000, 60000\] has a layer above 10,000 units"),
        ({"estimator": "mlp", "params": {"hidden_layer_sizes": [[5000, 5000]]}},
         r"needs 25,000,000 weights between hidden layers, above 10,000,000"),
        ({"estimator": "knn", "params": {"metric": "seuclidean"}},
         r"every candidate configuration failed to fit; first error: TypeError: "),
    ],
    ids=["knn-pyfunc", "mlp-huge-layer", "mlp-huge-weights", "every-trial-fails"],
)  # fmt: skip
def test_estimator_inputs_that_crashed_get_one_line_from_mm_train(
    store: str, tmp_path: Path, candidate: dict, message: str
) -> None:
    import re

    data = {**copy.deepcopy(SEED_LINEAR), "candidates": [candidate]}
    result = mm("train", str(write_project(tmp_path, data)), cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr[-3000:]
