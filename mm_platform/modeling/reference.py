"""The reference sample: what drift jobs compare production with, and where a run keeps it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mm_platform.modeling.metrics import class_probabilities, model_classes, proba_column

if TYPE_CHECKING:
    import pandas as pd

    from mm_platform.project.config import Project

REFERENCE_ARTIFACT = "reference/reference.parquet"
REFERENCE_MAX_ROWS = 10_000


def reference_sample(
    project: Project, pipeline: Any, X: pd.DataFrame, y: pd.Series
) -> pd.DataFrame:
    """Holdout features, target and the model's predictions: the drift jobs' reference.
    A classifier with probabilities adds one float column per class, `proba_<class>`
    (`str(label)`, in `classes_` order)."""
    if len(X) > REFERENCE_MAX_ROWS:
        X = X.sample(REFERENCE_MAX_ROWS, random_state=project.seed)
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
