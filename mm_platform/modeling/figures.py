"""Figures people would rather see than read: predicted vs actual, ROC, confusion matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def predicted_vs_actual(y: Any, y_pred: Any, title: str) -> Figure:
    """Scatter of predictions against the truth, with the identity line."""
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    y, y_pred = np.asarray(y, dtype=float), np.asarray(y_pred, dtype=float)
    ax.scatter(y, y_pred, s=8, alpha=0.5)
    low, high = float(min(y.min(), y_pred.min())), float(max(y.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="perfect")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def roc_and_confusion(y: Any, y_pred: Any, y_score: Any, classes: list[Any], title: str) -> Figure:
    """ROC curve (one-vs-rest for several classes) beside the confusion matrix."""
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=100)
    y = np.asarray(y)
    if y_score is not None:
        if y_score.ndim == 1:
            RocCurveDisplay.from_predictions(y, y_score, pos_label=classes[-1], ax=left)
        else:
            for i, cls in enumerate(classes):
                RocCurveDisplay.from_predictions(
                    y == cls, y_score[:, i], pos_label=True, name=f"class {cls} vs rest", ax=left
                )
            left.set_xlabel("false positive rate (one vs rest)")
            left.set_ylabel("true positive rate (one vs rest)")
    left.set_title("ROC")
    ConfusionMatrixDisplay.from_predictions(y, y_pred, labels=classes, ax=right, colorbar=False)
    right.set_title("confusion matrix (holdout)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pareto(
    points: list[tuple[str, float, float]],
    parent: tuple[str, float, float],
    *,
    metric: str,
    larger_is_better: bool,
    title: str,
) -> Figure:
    """Size (log scale) against the holdout metric; the parent and the Pareto front marked."""
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=100)
    for name, size, value in points:
        ax.scatter(size, value, s=30, color="tab:blue")
        ax.annotate(name, (size, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    name, size, value = parent
    ax.scatter(size, value, s=90, marker="*", color="tab:red", label=name, zorder=3)
    front = _front([(s, v) for _, s, v in points] + [(size, value)], larger_is_better)
    if len(front) > 1:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="gray", linewidth=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (bytes, log scale)")
    ax.set_ylabel(f"{metric} ({'higher' if larger_is_better else 'lower'} is better)")
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def _front(points: list[tuple[float, float]], larger_is_better: bool) -> list[tuple[float, float]]:
    """Points no other point beats on both size and metric, by increasing size."""
    best = None
    front = []
    for size, value in sorted(points):
        better = best is None or (value > best if larger_is_better else value < best)
        if better:
            front.append((size, value))
            best = value
    return front
