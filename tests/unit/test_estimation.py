"""CBPE and DLE on seeded generators: estimates near the realised metrics under covariate
shift, realised metrics as sklearn scores them, a file that round-trips, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score

from mm_platform.errors import DataError
from mm_platform.modeling.cbpe import expected_auc
from mm_platform.modeling.estimation import (
    estimator_bytes,
    estimator_from_bytes,
    fit_estimator,
)
from mm_platform.modeling.metrics import score_predictions
from mm_platform.project.schema import Project


def _classifier_rows(n: int, classes: int, seed: int, shift: float = 0.0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(shift, scale, (n, 3)), columns=["a", "b", "c"])
    logits = X.to_numpy() @ np.random.default_rng(99).normal(0, 0.8, (3, classes))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(classes, p=row) for row in p])
    return X, y


def _scored(model, X: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    proba = model.predict_proba(X)
    extra = {f"proba_{c}": proba[:, j] for j, c in enumerate(model.classes_)}
    return X.assign(label=y, prediction=model.predict(X), **extra)


@pytest.mark.parametrize(("classes", "task"), [(2, "binary"), (3, "multiclass")])
def test_cbpe_estimates_the_realised_metrics_under_covariate_shift(classes: int, task: str):
    model = LogisticRegression().fit(*_classifier_rows(3000, classes, seed=1))
    estimator = fit_estimator(task, _scored(model, *_classifier_rows(2000, classes, 2)), "label", 0)
    window = _scored(model, *_classifier_rows(3000, classes, seed=3, shift=0.7, scale=0.5))
    realised = score_predictions(
        task, window["label"], window["prediction"],
        window["proba_1"] if task == "binary" else window[[f"proba_{c}" for c in range(classes)]],
        pos_label=1 if task == "binary" else None,
    )  # fmt: skip
    estimates = estimator.estimate(window)
    assert set(estimates) == set(realised)
    for metric, value in realised.items():
        assert abs(estimates[metric].value - value) < 0.03, (metric, estimates[metric], value)
        assert estimates[metric].lower <= estimates[metric].value <= estimates[metric].upper
    assert estimator.reference_["roc_auc"] - realised["roc_auc"] > 0.05  # the shift mattered


def test_cbpe_reference_metrics_are_sklearns_on_the_holdout():
    model = LogisticRegression().fit(*_classifier_rows(1000, 3, seed=1))
    holdout = _scored(model, *_classifier_rows(800, 3, seed=2))
    estimator = fit_estimator("multiclass", holdout, "label", 0)
    proba = holdout[["proba_0", "proba_1", "proba_2"]]
    scored = score_predictions("multiclass", holdout["label"], holdout["prediction"], proba)
    assert estimator.reference_ == pytest.approx(scored)


def test_expected_auc_of_hard_labels_is_roc_auc_ties_included():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 300) / 4.0  # many ties
    labels = (rng.random(300) < score).astype(float)
    assert expected_auc(score, labels) == pytest.approx(roc_auc_score(labels, score))


def test_dle_estimates_mae_and_rmse_of_a_regressor_on_a_shifted_window():
    rng = np.random.default_rng(0)

    def rows(n: int, high: float) -> pd.DataFrame:
        x = rng.uniform(0, high, n)
        city = rng.choice(["a", "b"], n)
        y = 2 * x + (city == "a") + rng.normal(0, 0.3 + 0.4 * x)  # noise grows with x
        return pd.DataFrame({"x": x, "city": city, "y": y})

    train = rows(2000, 10)
    model = LinearRegression().fit(pd.get_dummies(train[["x", "city"]], dtype=float), train["y"])

    def scored(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(prediction=model.predict(pd.get_dummies(frame[["x", "city"]],
                                                                    dtype=float)))  # fmt: skip

    estimator = fit_estimator("regression", scored(rows(3000, 10)), "y", 0)
    window = scored(rows(2000, 4))  # only small x: smaller errors
    error = window["y"] - window["prediction"]
    estimates = estimator_from_bytes(estimator_bytes(estimator)).estimate(window.drop(columns="y"))
    assert set(estimates) == {"mae", "rmse"}  # r2 is not estimated
    assert estimates["mae"].value == pytest.approx(error.abs().mean(), rel=0.1)
    assert estimates["rmse"].value == pytest.approx(np.sqrt((error**2).mean()), rel=0.1)
    assert estimates["mae"].value < 0.7 * estimator.reference_["mae"]


def test_a_cbpe_file_round_trips_to_the_same_estimates():
    model = LogisticRegression().fit(*_classifier_rows(500, 2, seed=1))
    estimator = fit_estimator("binary", _scored(model, *_classifier_rows(400, 2, 2)), "label", 0)
    window = _scored(model, *_classifier_rows(300, 2, seed=3))
    loaded = estimator_from_bytes(estimator_bytes(estimator))
    assert loaded.estimate(window) == estimator.estimate(window)


def test_bad_inputs_get_clear_errors():
    model = LogisticRegression().fit(*_classifier_rows(500, 2, seed=1))
    holdout = _scored(model, *_classifier_rows(400, 2, seed=2))
    estimator = fit_estimator("binary", holdout, "label", 0)
    with pytest.raises(DataError, match=r"CBPE needs .* missing \['proba_1'\]"):
        estimator.estimate(holdout.drop(columns="proba_1"))
    with pytest.raises(DataError, match=r"prediction values \['7'\] are none of the model's"):
        estimator.estimate(holdout.assign(prediction=7))
    with pytest.raises(DataError, match="CBPE needs a model with predict_proba"):
        fit_estimator("binary", holdout.drop(columns=["proba_0", "proba_1"]), "label", 0)
    with pytest.raises(DataError, match="no 'label' or 'prediction' column"):
        fit_estimator("binary", holdout.drop(columns="label"), "label", 0)
    with pytest.raises(DataError, match="not a performance estimator file"):
        import skops.io as sio

        estimator_from_bytes(sio.dumps({"kind": "other"}))


def test_retrain_on_an_estimate_of_r2_is_refused_by_the_config():
    config = {
        "name": "r", "task": "regression",
        "dataset": {"source": "synthetic", "generator": "linear"},
        "candidates": [{"estimator": "ridge"}], "selection": {"metric": "r2"},
        "monitoring": {"retrain": {"on": ["estimated_performance"]}},
    }  # fmt: skip
    with pytest.raises(
        ValueError, match=r"estimated_performance cannot act on selection\.metric .r2."
    ):
        Project.model_validate(config)
    config["selection"] = {"metric": "rmse"}
    assert Project.model_validate(config).monitoring.retrain.on == ["estimated_performance"]
