"""Figures people would rather see than read: predicted vs actual, ROC, confusion matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.text import Text
from matplotlib.transforms import Bbox

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
    """Size (log scale) against the holdout metric; the parent marked, the Pareto front
    drawn as a step line through its points, each variant labelled where no label overlaps."""
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=100)
    for _, size, value in points:
        ax.scatter(size, value, s=30, color="tab:blue", zorder=2)
    name, size, value = parent
    ax.scatter(size, value, s=90, marker="*", color="tab:red", label=name, zorder=3)
    front = _front([(s, v) for _, s, v in points] + [(size, value)], larger_is_better)
    if len(front) > 1:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="gray", linewidth=1, label="Pareto front", zorder=1)
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (bytes, log scale)")
    ax.set_ylabel(f"{metric} ({'higher' if larger_is_better else 'lower'} is better)")
    ax.set_title(title)
    ax.legend(loc="best")
    labels = [
        ax.annotate(n, (s, v), textcoords="offset points", xytext=(4, 4), fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "gray", "linewidth": 0.5})
        for n, s, v in points
    ]  # fmt: skip
    fig.tight_layout()
    _spread(fig, labels)
    return fig


# where a label may go, in points from its point: nearest first, then further out
_OFFSETS = [
    (r * dx, r * dy)
    for r in range(4, 124, 8)
    for dx, dy in ((1, 1), (1, -1), (1, 0), (-1, 1), (-1, -1), (-1, 0), (0, 1), (0, -1))
]
_ALIGN = {1: "left", 0: "center", -1: "right"}


def _spread(fig: Figure, labels: list[Any]) -> None:
    """Move each label to the first offset where its box overlaps no label placed before
    it and no other point (the last offset tried when every one does)."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    points = []
    for label in labels:
        x, y = label.axes.transData.transform(label.xy)
        points.append(Bbox.from_extents(x - 4, y - 4, x + 4, y + 4))
    placed: list[Bbox] = []
    for i, label in enumerate(labels):
        others = placed + points[:i] + points[i + 1 :]  # its own point may touch it
        for dx, dy in _OFFSETS:
            label.xyann = (dx, dy)
            label.set_horizontalalignment(_ALIGN[int(np.sign(dx))])
            label.update_positions(renderer)  # the offset transform, from the moved axes
            box = Text.get_window_extent(label, renderer)  # the text, not its leader line
            if not any(box.overlaps(other) for other in others):
                break
        placed.append(box)


def _front(points: list[tuple[float, float]], larger_is_better: bool) -> list[tuple[float, float]]:
    """Points no other point beats (as small and as good, better in one), by increasing size."""
    sign = -1.0 if larger_is_better else 1.0
    best: float | None = None
    front = []
    for size, value in sorted(points, key=lambda p: (p[0], sign * p[1])):  # best of a size first
        if best is None or sign * value < sign * best:
            front.append((size, value))
            best = value
    return front
