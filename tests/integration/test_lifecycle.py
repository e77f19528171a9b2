"""Fine-tuning toward the champion, the promotion gate and rollback, on a real registry."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression, Ridge

from mm_platform.errors import DataError
from mm_platform.lifecycle.finetuning import finetune_project, logistic_toward, ridge_toward
from mm_platform.project.config import load_project
from mm_platform.serving.batch import is_evaluation_row
from tests.support import SEED_LINEAR, mm, write_project


def test_linear_closed_form_minimises_the_seed_objective() -> None:
    rng = np.random.default_rng(0)
    Z, y = rng.normal(size=(80, 3)), rng.normal(size=80)
    parent = Ridge().fit(rng.normal(size=(50, 3)), rng.normal(size=50))
    lam = 0.3
    coef, intercept = ridge_toward(Z, y, parent, lam)
    theta0 = np.append(parent.coef_, parent.intercept_)

    def objective(theta: np.ndarray) -> float:
        residual = Z @ theta[:-1] + theta[-1] - y
        return float(np.mean(residual**2) + lam * np.sum((theta - theta0) ** 2))

    numeric = minimize(objective, theta0, method="BFGS").x
    np.testing.assert_allclose(np.append(coef, intercept), numeric, atol=1e-5)
    # λ → ∞ keeps the parent; λ = 0 is least squares
    np.testing.assert_allclose(np.append(*ridge_toward(Z, y, parent, 1e9)), theta0, atol=1e-6)
    ols = np.linalg.lstsq(np.hstack([Z, np.ones((80, 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(np.append(*ridge_toward(Z, y, parent, 0.0)), ols, atol=1e-8)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_fine_tuning_stays_near_the_parent_as_lambda_grows(n_classes: int) -> None:
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(200, 4))
    y = rng.integers(0, n_classes, 200)
    parent = LogisticRegression().fit(Z, y)
    shifted = (y + 1) % n_classes  # labels that disagree with the parent
    near = logistic_toward(Z, shifted, parent, 100.0)
    far = logistic_toward(Z, shifted, parent, 1e-4)
    distance = [np.abs(W - parent.coef_).max() for W, _ in (near, far)]
    assert distance[0] < 0.01 < distance[1]


SHIFTED = {"slope": 3.3, "intercept": 2.5}


def _new_rows(path: Path, n: int = 300, with_target: bool = True) -> Path:
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 10, n)
    frame = pd.DataFrame({"x": x})
    if with_target:
        frame["y"] = SHIFTED["slope"] * x + SHIFTED["intercept"] + rng.normal(0, 0.5, n)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def project(store: str, tmp_path: Path):
    from mm_platform.training.search import train_project

    path = write_project(tmp_path, SEED_LINEAR)
    loaded = load_project(path)
    assert train_project(loaded).alias == "champion"
    return loaded


def test_finetune_registers_a_challenger_with_lineage_and_forgetting_check(project, tmp_path):
    from mlflow import MlflowClient

    result = finetune_project(
        project, data_path=_new_rows(tmp_path / "new.csv"), lam=0.01,
        log_root=str(tmp_path / "log"),
    )  # fmt: skip
    assert (result.parent_version, result.version, result.n_rows) == ("1", "2", 300)
    m = result.metrics
    assert m["new_rmse"] < m["parent_new_rmse"]  # it learnt the new data...
    assert m["delta_holdout_rmse"] == pytest.approx(m["holdout_rmse"] - m["parent_holdout_rmse"])
    assert m["forgetting"] > 0  # ...and the original holdout shows what that cost
    client = MlflowClient()
    version = client.get_model_version_by_alias("tiny", "challenger")
    assert str(version.version) == "2"
    assert version.tags["mm.run_type"] == "finetune"
    assert version.tags["mm.parent_model_version"] == "1"
    assert float(version.tags["mm.metric.size_bytes"]) > 1000  # lineage shows its size
    run = client.get_run(result.run_id)
    assert run.data.params["lam"] == "0.01" and run.data.params["n_rows"] == "300"
    assert run.data.tags["mm.run_type"] == "finetune"
    assert run.info.run_name.startswith("finetune/")


def test_fine_tunes_of_one_day_have_names_of_their_own(project, tmp_path):
    from mlflow import MlflowClient

    data = _new_rows(tmp_path / "new.csv")
    runs = [
        finetune_project(project, data_path=data, lam=1.0, log_root=str(tmp_path / "log")).run_id
        for _ in range(3)
    ]
    names = [MlflowClient().get_run(run_id).info.run_name for run_id in runs]
    assert len(set(names)) == 3, names
    stamp = r"finetune/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( #[23])?"
    assert all(re.fullmatch(stamp, name) for name in names), names


def test_fine_tuning_on_one_row_shows_no_library_warning(project, tmp_path):
    from sklearn.exceptions import UndefinedMetricWarning

    one = pd.read_csv(_new_rows(tmp_path / "new.csv")).head(1)
    one.to_csv(tmp_path / "one.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)  # R² of fewer than two rows
        result = finetune_project(
            project, data_path=tmp_path / "one.csv", lam=1.0, log_root=str(tmp_path / "log")
        )
    assert result.n_rows == 1 and "new_rmse" in result.metrics
    assert "new_r2" not in result.metrics and "holdout_r2" in result.metrics  # undefined


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda tmp: _new_rows(tmp / "x.csv", with_target=False),
            r"x\.csv: fine-tuning data lacks the target column 'y'",
        ),
        (
            lambda tmp: (
                pd.DataFrame({"z": [1.0], "y": [2.0]}).to_csv(tmp / "z.csv") or tmp / "z.csv"
            ),
            r"z\.csv: columns do not match the model's signature \['x'\]",
        ),
    ],
)
def test_finetune_bad_data(project, tmp_path: Path, make, message: str) -> None:
    from mlflow import MlflowClient

    with pytest.raises(DataError, match=message):
        finetune_project(project, data_path=make(tmp_path), log_root=str(tmp_path / "log"))
    assert len(MlflowClient().search_model_versions("name = 'tiny'")) == 1


def test_finetune_from_production_needs_labels(project, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"no labelled production data .*ingest labels with mm labels"
    ):
        finetune_project(project, log_root=str(tmp_path / "log"))


def test_production_loop_predict_label_finetune(project, tmp_path: Path) -> None:
    new = _new_rows(tmp_path / "traffic.csv")
    features = tmp_path / "features.csv"
    pd.read_csv(new)[["x"]].to_csv(features, index=False)
    assert mm("predict", str(project.source_path), str(features), cwd=tmp_path).returncode == 0
    scored = pd.read_csv(tmp_path / "features.predictions.csv")
    labels = pd.DataFrame({"request_id": scored["request_id"], "label": pd.read_csv(new)["y"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert (
        mm(
            "labels", str(project.source_path), str(tmp_path / "labels.csv"), cwd=tmp_path
        ).returncode
        == 0
    )
    result = finetune_project(project, log_root=str(tmp_path / "prediction_log"), lam=0.01)
    held_out = sum(is_evaluation_row(r) for r in scored["request_id"])
    assert 30 < held_out < 90  # about one in five rows is kept for the promotion gate
    assert result.n_rows == 300 - held_out  # fine-tuning never trains on those
    assert result.metrics["new_rmse"] < 0.7  # fits the shifted production data


def test_promote_passes_moves_aliases_records_run_and_rollback_undoes(project, tmp_path):
    from mlflow import MlflowClient

    from mm_platform.training.search import train_project

    assert train_project(project).alias == "challenger"  # same data and seed: an equal model
    result = mm("promote", str(project.source_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "promoted: @champion -> v2, @previous -> v1" in result.stdout
    client = MlflowClient()
    aliases = client.get_registered_model("tiny").aliases
    assert aliases == {"champion": 2, "previous": 1} or aliases == {
        "champion": "2",
        "previous": "1",
    }
    runs = client.search_runs(
        [client.get_experiment_by_name("tiny").experiment_id], "tags.`mm.run_type` = 'promote'"
    )
    assert len(runs) == 1 and runs[0].data.tags["mm.decision"] == "promoted"
    assert {"champion_rmse", "challenger_rmse", "challenger_size_bytes"} <= set(
        runs[0].data.metrics
    )

    back = mm("rollback", str(project.source_path), cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert "@champion -> v1, @previous -> v2" in back.stdout
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"


def test_promote_refuses_a_worse_challenger_and_moves_nothing(project, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    finetune_project(
        project, data_path=_new_rows(tmp_path / "new.csv"), lam=0.01, log_root=str(tmp_path / "l")
    )
    result = mm("promote", str(project.source_path), cwd=tmp_path)
    assert result.returncode == 4
    assert "refused: rmse improves by -" in result.stdout
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("tiny", "challenger").version) == "2"
    runs = client.search_runs(
        [client.get_experiment_by_name("tiny").experiment_id], "tags.`mm.run_type` = 'promote'"
    )
    assert runs[0].data.tags["mm.decision"] == "refused"
    assert "rmse improves by" in runs[0].data.tags["mm.reason"]


def test_promote_without_challenger_and_rollback_without_previous(project, tmp_path: Path) -> None:
    result = mm("promote", str(project.source_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "tiny has no challenger to promote" in result.stderr
    back = mm("rollback", str(project.source_path), cwd=tmp_path)
    assert back.returncode == 2 and "no previous champion to roll back to" in back.stderr


def test_finetune_refuses_an_unusable_lambda(project, tmp_path: Path) -> None:
    from mm_platform.errors import ProjectConfigError

    with pytest.raises(ProjectConfigError, match=r"--lam must be a finite number >= 0, got nan"):
        finetune_project(project, data_path=_new_rows(tmp_path / "n.csv"), lam=float("nan"),
                         log_root=str(tmp_path))  # fmt: skip


def test_finetune_tree_ensemble_adds_trees(store: str, tmp_path: Path) -> None:
    data = copy.deepcopy(SEED_LINEAR)
    data["candidates"] = [{"estimator": "random_forest", "params": {"n_estimators": 10}}]
    data["finetune"] = {"n_new_trees": 5}
    path = write_project(tmp_path, data)
    from mm_platform.training.search import train_project

    loaded = load_project(path)
    train_project(loaded)
    result = finetune_project(
        loaded, data_path=_new_rows(tmp_path / "n.csv"), log_root=str(tmp_path)
    )
    import mlflow

    tuned = mlflow.sklearn.load_model(f"models:/tiny/{result.version}")
    assert len(tuned.named_steps["model"].estimators_) == 15


def test_finetune_mlp_trained_with_early_stopping(store: str, tmp_path: Path) -> None:
    data = copy.deepcopy(SEED_LINEAR)
    data["candidates"] = [
        {"estimator": "mlp", "params": {"hidden_layer_sizes": [[8]], "early_stopping": True}}
    ]
    data["finetune"] = {"epochs": 3}
    path = write_project(tmp_path, data)
    from mm_platform.training.search import train_project

    loaded = load_project(path)
    train_project(loaded)
    result = finetune_project(
        loaded, data_path=_new_rows(tmp_path / "n.csv"), log_root=str(tmp_path)
    )
    assert result.version == "2" and np.isfinite(result.metrics["holdout_rmse"])
