"""Holdout metrics with stable names, the CV scorers behind them, and prediction latency."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mm_platform.catalog import METRICS

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


def cv_scorers(task: str) -> dict[str, str]:
    """sklearn scorer names for every metric of `task`, keyed by the project's metric names."""
    return dict(_SCORERS[task])


def cv_sign(task: str, metric: str) -> float:
    """-1 where sklearn's scorer reports the negated metric, else 1."""
    return -1.0 if _SCORERS[task][metric].startswith("neg_") else 1.0


def holdout_metrics(task: str, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """`holdout_<metric>` for every metric of the task (rmse, mae, r2 or accuracy, ...)."""
    return score_predictions(task, y, model.predict(X), _scores(model, X, task), prefix="holdout_")


def score_predictions(
    task: str, y: Any, y_pred: Any, y_score: Any = None, prefix: str = ""
) -> dict[str, float]:
    """The task's metrics from predictions (and class scores for ROC-AUC)."""
    if task == "regression":
        out = {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, y_pred))),
            "mae": float(skm.mean_absolute_error(y, y_pred)),
            "r2": float(skm.r2_score(y, y_pred)),
        }
    else:
        average = "binary" if task == "binary" else "macro"
        out = {
            "accuracy": float(skm.accuracy_score(y, y_pred)),
            "recall": float(skm.recall_score(y, y_pred, average=average, zero_division=0)),
            "f1": float(skm.f1_score(y, y_pred, average=average, zero_division=0)),
        }
        if y_score is not None:
            try:
                if task == "binary":
                    out["roc_auc"] = float(skm.roc_auc_score(y, y_score))
                else:
                    out["roc_auc"] = float(skm.roc_auc_score(y, y_score, multi_class="ovr"))
            except ValueError:  # one class only in y: ROC-AUC is undefined
                pass
    return {f"{prefix}{k}": v for k, v in out.items()}


def _scores(model: Any, X: pd.DataFrame, task: str) -> Any:
    if task == "regression" or not hasattr(model, "predict_proba"):
        return None
    proba = model.predict_proba(X)
    return proba[:, 1] if task == "binary" else proba


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


def relative_loss(metric: str, parent: float, value: float) -> float:
    """How much worse `value` is than `parent`, as a fraction of the parent (negative: better)."""
    _, larger_is_better = METRICS[metric]
    change = (parent - value) if larger_is_better else (value - parent)
    if parent == 0:  # no scale to compare against: only the direction is known
        return 0.0 if change == 0 else math.copysign(math.inf, change)
    return change / abs(parent)
