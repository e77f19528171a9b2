"""How the monitored version does on the labelled rows of a window, scored as training
scored it, next to its score on the reference sample."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mm_platform.errors import DataError
from mm_platform.modeling.metrics import (
    PROBA_PREFIX,
    align_labels,
    positive_class,
    relative_change,
    score_predictions,
    scores_from_probabilities,
)

if TYPE_CHECKING:
    from mm_platform.project.config import Project


def labelled_rows(current: pd.DataFrame, reference: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rows of `current` with a label, labels in the reference target's dtype (a join
    with unlabelled rows turns integer class labels into floats)."""
    if target not in current.columns:
        return current[:0]
    labelled = current[current[target].notna()]
    wanted = reference[target].dtype
    if labelled[target].dtype != wanted:
        try:
            cast = labelled[target].astype(wanted)
        except (TypeError, ValueError):
            return labelled
        if (cast == labelled[target]).all():  # only a lossless cast (2.0 -> 2, not 2.5)
            labelled = labelled.assign(**{target: cast})
    return labelled


def performance_metrics(
    project: Project, labelled: pd.DataFrame, reference: pd.DataFrame, target: str
) -> dict[str, float]:
    """`n_labelled_rows`, and with enough of them the current and reference scores and the
    relative drop of the selection metric (`performance_drop`)."""
    performance: dict[str, float] = {"n_labelled_rows": float(len(labelled))}
    if len(labelled) < project.monitoring.min_rows:
        return performance
    performance.update(_scores(project, labelled, reference, target, "current_"))
    performance.update(_scores(project, reference, reference, target, "reference_"))
    metric = project.selection.metric
    before, after = performance.get(f"reference_{metric}"), performance.get(f"current_{metric}")
    if before is not None and after is not None:
        performance["performance_drop"] = relative_change(metric, before, after)
    return performance


def _scores(
    project: Project, rows: pd.DataFrame, reference: pd.DataFrame, target: str, prefix: str
) -> dict[str, float]:
    """The task's metrics of labelled `rows`, scored as training scored the model: the
    reference's `proba_<class>` columns give the classes in the model's order (the positive
    class of a binary task is the second), and ROC-AUC where `rows` hold them too."""
    columns = [c for c in reference.columns if c.startswith(PROBA_PREFIX)]
    classes = _classes(reference, target, columns)
    y, y_pred, y_score, pos_label = rows[target], rows["prediction"], None, None
    if classes is not None:
        y, y_pred = align_labels(y, classes), align_labels(y_pred, classes)
        pos_label = positive_class(classes, project.task)
        if all(c in rows.columns for c in columns):
            probabilities = rows[columns].to_numpy(dtype="float64")
            if not np.isnan(probabilities).any():
                y_score = scores_from_probabilities(probabilities, project.task)
    try:
        return score_predictions(
            project.task, y, y_pred, y_score, prefix, pos_label=pos_label, classes=classes
        )
    except ValueError as exc:  # e.g. labels of a type the predictions cannot match
        raise DataError(f"{project.name}: cannot score the labelled rows: {exc}") from exc


def _classes(reference: pd.DataFrame, target: str, columns: list[str]) -> list[Any] | None:
    """The model's classes in its order, as labels of the reference's type, from the names
    of its probability columns (None for a regressor or a reference without them)."""
    if not columns:
        return None
    seen = {str(v): v for v in pd.unique(reference[[target, "prediction"]].to_numpy().ravel())}
    classes = [seen.get(c[len(PROBA_PREFIX) :]) for c in columns]
    if any(c is None for c in classes):
        return None
    return [c.item() if isinstance(c, np.generic) else c for c in classes]
