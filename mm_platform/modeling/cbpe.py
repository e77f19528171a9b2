"""Confidence-based performance estimation (CBPE, as NannyML names it): a classifier's
expected metrics on unlabelled rows, from its own class probabilities.

On the holdout, each class's probability is calibrated by isotonic regression against
"the label is this class", kept only where it helps: its out-of-fold Brier score beats the
raw probabilities'. A multiclass row of calibrated probabilities is renormalised to sum
to 1. On a window, calibrated probability q[i, k] is the chance that row i is of class k,
so the expected confusion matrix is C[k, j] = Σ_i q[i, k]·[row i predicted j], and
accuracy, recall and F1 (binary: of the positive class, the model's second; multiclass:
macro) follow from it as from a counted one. ROC-AUC is the AUC of the model's raw scores
against the expected labels: rows ranked by score, each adding q to the true and 1 - q to
the false positives (one-vs-rest and macro-averaged for multiclass). Fed one-hot labels,
the same formulas give the realised metrics, so estimate and truth are measured alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mm_platform.data.columns import proba_column
from mm_platform.errors import DataError
from mm_platform.modeling.estimation import Estimate, band, bootstrap_sigma
from mm_platform.modeling.metrics import align_labels

CLASSIFICATION_METRICS = ("accuracy", "recall", "f1", "roc_auc")
_CALIBRATION_FOLDS = 5


class CBPE:
    """Fitted on the holdout's probabilities, predictions and labels; `estimate` gives the
    expected metrics of a window's probabilities and predictions."""

    def __init__(self, task: str, classes: list[Any], seed: int = 0) -> None:
        if task not in ("binary", "multiclass"):
            raise ValueError(f"The 'task' parameter of CBPE must be binary or multiclass. "
                             f"Got {task!r} instead.")  # fmt: skip
        self.task, self.classes, self.seed = task, list(classes), seed

    @property
    def columns(self) -> list[str]:
        """The window columns `estimate` reads."""
        return ["prediction", *(proba_column(c) for c in self.classes)]

    def fit(self, rows: pd.DataFrame, y_pred: Any, y: Any) -> CBPE:
        """Calibrate on `rows`' probability columns; the realised metrics and their
        bootstrap spread on these rows are the reference and the band's scale."""
        proba, predicted = self._inputs(rows, y_pred)
        truth = self._indices(pd.Series(np.asarray(y)), "label")
        onehot = np.eye(len(self.classes))[truth]
        first = 1 if self.task == "binary" else 0  # binary: the negative is 1 - positive
        self.calibrators_ = [
            _isotonic_if_better(proba[:, k], onehot[:, k], self.seed) if k >= first else None
            for k in range(len(self.classes))
        ]
        self.n_reference_ = len(truth)
        self.reference_ = self._metrics(onehot, predicted, proba)
        self.sigma_ = bootstrap_sigma(
            lambda i: self._metrics(onehot[i], predicted[i], proba[i]), len(truth), self.seed
        )
        return self

    def estimate(self, rows: pd.DataFrame) -> dict[str, Estimate]:
        """The expected metrics of `rows` (probability columns and `prediction`) with bands."""
        proba, predicted = self._inputs(rows, rows.get("prediction"))
        expected = self._metrics(self.calibrated(proba), predicted, proba)
        return {
            m: band(v, self.sigma_[m], self.n_reference_, len(rows), (0.0, 1.0))
            for m, v in expected.items()
        }

    def calibrated(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, rows summing to 1."""
        out = proba.copy()
        for k, steps in enumerate(self.calibrators_):
            if steps is not None:
                out[:, k] = np.interp(proba[:, k], steps[0], steps[1])
        if self.task == "binary":
            out[:, 0] = 1.0 - out[:, 1]
            return out
        total = out.sum(axis=1, keepdims=True)
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), proba)

    def _inputs(self, rows: pd.DataFrame, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
        columns = [proba_column(c) for c in self.classes]
        missing = [c for c in columns if c not in rows.columns]
        if y_pred is None or missing:
            raise DataError(f"CBPE needs the 'prediction' and {columns} columns; missing "
                            f"{missing or ['prediction']}")  # fmt: skip
        proba = rows[columns].to_numpy(dtype="float64")
        if not np.isfinite(proba).all():
            raise DataError(f"the class probabilities {columns} have missing values")
        return proba, self._indices(pd.Series(np.asarray(y_pred)), "prediction")

    def _indices(self, labels: pd.Series, what: str) -> np.ndarray:
        aligned = align_labels(labels, self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({str(v) for v in aligned if v not in index})
        if unknown:
            raise DataError(f"{what} values {unknown[:5]} are none of the model's classes "
                            f"{self.classes}")  # fmt: skip
        return aligned.map(index).to_numpy(dtype=int)

    def _metrics(self, q: np.ndarray, predicted: np.ndarray, proba: np.ndarray) -> dict[str, float]:
        """The metrics of the expected confusion matrix of `q` (one-hot: the realised ones)."""
        k = len(self.classes)
        confusion = np.zeros((k, k))
        for j in range(k):
            confusion[:, j] = q[predicted == j].sum(axis=0)
        true, said, hit = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
        recall, f1 = _ratio(hit, true), _ratio(2 * hit, true + said)
        out = {"accuracy": float(hit.sum() / max(len(q), 1))}
        if self.task == "binary":
            out.update(
                recall=float(recall[1]), f1=float(f1[1]), roc_auc=expected_auc(proba[:, 1], q[:, 1])
            )
            return out
        # sklearn's macro averages over the classes seen in labels or predictions: a class
        # predicted, or expected at least once (half a row) in the labels
        present = (said > 0) | (true >= 0.5)
        aucs = [expected_auc(proba[:, c], q[:, c]) for c in range(k)]
        out.update(recall=float(recall[present].mean()), f1=float(f1[present].mean()),
                   roc_auc=float(np.nanmean(aucs)))  # fmt: skip
        return out

    def state(self) -> dict[str, Any]:
        """The fitted state as plain values (what the skops file holds)."""
        steps = [None if s is None else {"x": s[0], "y": s[1]} for s in self.calibrators_]
        return {"kind": "cbpe", "task": self.task, "classes": self.classes, "seed": self.seed,
                "calibrators": steps, "n_reference": self.n_reference_,
                "reference": self.reference_, "sigma": self.sigma_}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CBPE:
        """The estimator `state()` describes."""
        fitted = cls(state["task"], state["classes"], state["seed"])
        fitted.calibrators_ = [
            None if s is None else (np.asarray(s["x"]), np.asarray(s["y"]))
            for s in state["calibrators"]
        ]
        fitted.n_reference_ = int(state["n_reference"])
        fitted.reference_, fitted.sigma_ = dict(state["reference"]), dict(state["sigma"])
        return fitted


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom, 0 where bottom is 0 (sklearn's zero_division=0)."""
    return np.divide(top, bottom, out=np.zeros_like(top, dtype=float), where=bottom > 0)


def expected_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC of `score` against labels that are positive with chance `positive`: rows
    ranked by score (ties as one step), each adding `positive` to the true-positive and
    `1 - positive` to the false-positive count. NaN when either count is 0."""
    order = np.argsort(-score, kind="mergesort")
    s, w = score[order], positive[order]
    last = np.r_[s[1:] != s[:-1], True]  # the end of each run of tied scores
    tp, fp = np.cumsum(w)[last], np.cumsum(1.0 - w)[last]
    if tp[-1] <= 0 or fp[-1] <= 0:
        return float("nan")
    tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def _isotonic_if_better(
    p: np.ndarray, is_class: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The isotonic map of `p` to `is_class` (its steps), or None when its out-of-fold
    Brier score does not beat the raw probabilities' (too few rows, already calibrated)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import KFold

    if len(p) < 4 * _CALIBRATION_FOLDS or is_class.min() == is_class.max():
        return None
    out_of_fold = np.empty_like(p)
    for fit, held in KFold(_CALIBRATION_FOLDS, shuffle=True, random_state=seed).split(p):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        out_of_fold[held] = iso.fit(p[fit], is_class[fit]).predict(p[held])
    if np.mean((out_of_fold - is_class) ** 2) >= np.mean((p - is_class) ** 2):
        return None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, is_class)
    return np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)
