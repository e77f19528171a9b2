"""Holdout metrics with stable names, the CV scorers behind them, class scores and latency.

Class labels may be numbers, strings or booleans. For a binary task the positive class is
the model's `classes_[1]` (sklearn's sorted order: "Yes" of "No"/"Yes", True of
False/True, 1 of 0/1), for the CV scorers and the holdout metrics alike.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mm_platform.data.columns import PROBA_PREFIX, proba_column  # noqa: F401  (their home)
from mm_platform.project.catalog import METRICS

# CV scorer per metric and task; scorers named neg_* are negated back when reported.
_SCORERS = {
    "regression": {
        "rmse": "neg_root_mean_squared_error",
        "mae": "neg_mean_absolute_error",
        "r2": "r2",
    },
    "binary": {"accuracy": "accuracy", "recall": "recall", "f1": "f1", "roc_auc": "roc_auc"},
    "multiclass": {
        "accuracy": "accuracy",
        "recall": "recall_macro",
        "f1": "f1_macro",
        "roc_auc": "roc_auc_ovr",
    },
}


def positive_label(labels: Any) -> Any:
    """The positive class of a binary task: the larger of the sorted labels (sklearn's
    `classes_[1]`), or the only one when just one is present."""
    return np.unique(np.asarray(labels))[-1]


def cv_scorers(task: str, y: Any = None) -> dict[str, Any]:
    """sklearn scorers for every metric of `task`, keyed by the project's metric names;
    binary recall and F1 score the positive class of `y` (its larger label)."""
    scorers: dict[str, Any] = dict(_SCORERS[task])
    if task == "binary" and y is not None:
        pos = positive_label(y)
        scorers["recall"] = skm.make_scorer(skm.recall_score, pos_label=pos, zero_division=0)
        scorers["f1"] = skm.make_scorer(skm.f1_score, pos_label=pos, zero_division=0)
    return scorers


def cv_sign(task: str, metric: str) -> float:
    """-1 where sklearn's scorer reports the negated metric, else 1."""
    return -1.0 if _SCORERS[task][metric].startswith("neg_") else 1.0


def model_classes(model: Any) -> list[Any] | None:
    """A classifier's classes in its own order (a pipeline's, a pyfunc's raw model's)."""
    raw = model.get_raw_model() if hasattr(model, "get_raw_model") else model
    classes = getattr(raw, "classes_", None)
    return None if classes is None else list(classes)


def class_probabilities(model: Any, X: pd.DataFrame) -> np.ndarray | None:
    """Every class's probability (rows x classes, in `classes_` order), or None when the
    model has no predict_proba; a pyfunc is asked through its raw model."""
    raw = model.get_raw_model() if hasattr(model, "get_raw_model") else model
    if not hasattr(raw, "predict_proba"):
        return None
    try:
        return np.asarray(raw.predict_proba(X), dtype=float)
    except (AttributeError, NotImplementedError):  # predict_proba not available for its loss
        return None


def scores_from_probabilities(probabilities: np.ndarray, task: str) -> np.ndarray:
    """The class scores ROC-AUC takes from rows x classes probabilities (in `classes_`
    order): the positive class's (the second) for binary, every class's for multiclass."""
    return probabilities[:, 1] if task == "binary" else probabilities


def positive_class(classes: list[Any] | None, task: str) -> Any:
    """The positive class of a binary model with classes `classes` (its second), else None."""
    return classes[1] if task == "binary" and classes is not None and len(classes) == 2 else None


def class_scores(model: Any, X: pd.DataFrame, task: str) -> np.ndarray | None:
    """The class scores ROC-AUC takes: the positive class's probability for binary, every
    class's for multiclass; None for regression or a model without probabilities."""
    if task == "regression":
        return None
    proba = class_probabilities(model, X)
    if proba is None:
        return None
    return scores_from_probabilities(proba, task)


def align_labels(y: pd.Series, classes: Any) -> pd.Series:
    """`y` with each label written as the matching one of `classes` ("True" -> True,
    1.0 -> 1, "1" -> 1): labels read back from CSV or Parquet may come as another type
    than the model's. Labels that match no class are left as they are."""
    plain = [c.item() if isinstance(c, np.generic) else c for c in classes]
    by_text = {str(c): c for c in plain}
    by_text.update({str(c).lower(): c for c in plain if isinstance(c, bool)})
    mapping = {}
    for value in pd.unique(y):
        texts = [str(value), str(value).lower()]
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            texts.insert(0, str(int(value)))
        mapping[value] = next((by_text[t] for t in texts if t in by_text), value)
    aligned = y.map(mapping)
    aligned.name = y.name
    return aligned


def holdout_metrics(task: str, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """`holdout_<metric>` for every metric of the task (rmse, mae, r2 or accuracy, ...)."""
    classes = model_classes(model)
    return score_predictions(
        task,
        y,
        model.predict(X),
        class_scores(model, X, task),
        prefix="holdout_",
        pos_label=positive_class(classes, task),
    )


def score_predictions(
    task: str, y: Any, y_pred: Any, y_score: Any = None, prefix: str = "", pos_label: Any = None,
    classes: Any = None,
) -> dict[str, float]:  # fmt: skip
    """The task's metrics from predictions (and class scores for ROC-AUC). Binary recall,
    F1 and ROC-AUC score `pos_label`, by default the larger label seen in `y`/`y_pred`;
    multiclass ROC-AUC takes the score columns as `classes` (default: the labels in `y`)."""
    if task == "regression":
        out = {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, y_pred))),
            "mae": float(skm.mean_absolute_error(y, y_pred)),
        }
        if len(y) >= 2:  # R² of one row is undefined (sklearn warns and gives NaN)
            out["r2"] = float(skm.r2_score(y, y_pred))
    else:
        y, y_pred = np.asarray(y), np.asarray(y_pred)
        kwargs: dict[str, Any] = {"average": "macro", "zero_division": 0}
        if task == "binary":
            if pos_label is None:
                pos_label = positive_label(np.concatenate([y, y_pred]))
            kwargs = {"average": "binary", "pos_label": pos_label, "zero_division": 0}
        out = {
            "accuracy": float(skm.accuracy_score(y, y_pred)),
            "recall": float(skm.recall_score(y, y_pred, **kwargs)),
            "f1": float(skm.f1_score(y, y_pred, **kwargs)),
        }
        if y_score is not None:
            try:
                if task == "binary":
                    out["roc_auc"] = float(skm.roc_auc_score(y == pos_label, y_score))
                else:
                    out["roc_auc"] = float(
                        skm.roc_auc_score(y, y_score, multi_class="ovr", labels=classes)
                    )
            except ValueError:  # one class only in y: ROC-AUC is undefined
                pass
    return {f"{prefix}{k}": v for k, v in out.items()}


@contextlib.contextmanager
def _joblib_single(model: Any) -> Iterator[None]:
    """Hold an estimator's own `n_jobs` (forests predict with joblib threads) to 1."""
    step = getattr(model, "named_steps", {}).get("model", model)
    params = step.get_params() if hasattr(step, "get_params") else {}
    if "n_jobs" not in params:
        yield
        return
    before = params["n_jobs"]
    step.set_params(n_jobs=1)
    try:
        yield
    finally:
        step.set_params(n_jobs=before)


def latency_ms_per_1k_rows(model: Any, X: pd.DataFrame, repeats: int = 7) -> float:
    """Median wall time of `model.predict` on 1000 rows (rows repeated if X has fewer).

    BLAS and OpenMP pools (and a forest's joblib threads) are held to one thread while
    timing, as in a scoring server
    answering one request per worker: small matrix products otherwise pay thread
    hand-offs, and pools left spinning by an earlier fit skew whatever is timed next.
    """
    from threadpoolctl import threadpool_limits

    rows = X.iloc[np.arange(1000) % len(X)]
    times = []
    with threadpool_limits(limits=1), _joblib_single(model):
        model.predict(rows)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(rows)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def relative_change(metric: str, before: float, after: float) -> float:
    """How much worse `after` is than `before` on `metric`, as a fraction of |before|
    (negative: better). The one rule at zero: with `before` 0 there is no scale, only a
    direction, so the change is +inf (worse), -inf (better) or 0 (equal). Compression's
    `relative_loss`, fine-tuning's `forgetting`, drift's `performance_drop` and the
    promotion gate all measure with this."""
    _, larger_is_better = METRICS[metric]
    change = (before - after) if larger_is_better else (after - before)
    if before == 0:
        return 0.0 if change == 0 else math.copysign(math.inf, change)
    return change / abs(before)
