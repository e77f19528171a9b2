"""The reference sample: what drift jobs compare production with, and where a run keeps it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mm_platform.modeling.metrics import class_probabilities, model_classes, proba_column

if TYPE_CHECKING:
    import pandas as pd

    from mm_platform.project.config import Project

REFERENCE_ARTIFACT = "reference/reference.parquet"


def reference_sample(
    project: Project, pipeline: Any, X: pd.DataFrame, y: pd.Series
) -> pd.DataFrame:
    """Holdout features, target and the model's predictions: the drift jobs' reference,
    a seeded sample of `monitoring.reference_rows` rows of a larger holdout. Holdout rows
    only, so the predictions and scores on it are out of sample. A classifier with
    probabilities adds one float column per class, `proba_<class>`
    (`str(label)`, in `classes_` order)."""
    if len(X) > project.monitoring.reference_rows:
        X = X.sample(project.monitoring.reference_rows, random_state=project.seed)
        y = y.loc[X.index]
    frame = X.reset_index(drop=True).copy()
    frame[str(y.name)] = y.to_numpy()
    frame["prediction"] = pipeline.predict(X)
    if project.task != "regression":
        proba = class_probabilities(pipeline, X)
        if proba is not None:
            for j, label in enumerate(model_classes(pipeline) or []):
                frame[proba_column(label)] = proba[:, j].astype("float64")
    return frame
