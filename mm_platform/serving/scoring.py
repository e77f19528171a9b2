"""Scoring conformed rows: predictions and, for classifiers, class probabilities.

The served model, `mm predict` and the drift job score the same way, so the prediction log
has the same columns whichever path wrote it: `prediction`, and one `proba_<class>` column
per class (in the model's `classes_` order) where the model has `predict_proba`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mm_platform.modeling.metrics import (
    PROBA_PREFIX,
    class_probabilities,
    model_classes,
    proba_column,
)


@dataclass(frozen=True)
class Scores:
    """What a model said of some rows."""

    prediction: np.ndarray
    probabilities: pd.DataFrame | None  # columns proba_<class>, or None (no predict_proba)

    def columns(self) -> dict[str, Any]:
        """`prediction` and the probability columns, for a record or an output file."""
        out: dict[str, Any] = {"prediction": self.prediction}
        if self.probabilities is not None:
            out.update({str(n): self.probabilities[n].to_numpy() for n in self.probabilities})
        return out

    def response(self) -> dict[str, Any]:
        """The JSON-ready answer: predictions, and probabilities keyed by class."""
        out: dict[str, Any] = {"prediction": self.prediction.tolist()}
        if self.probabilities is not None:
            out["probabilities"] = {
                str(name)[len(PROBA_PREFIX) :]: self.probabilities[name].tolist()
                for name in self.probabilities
            }
        return out


def raw_model(pyfunc_model: Any) -> Any:
    """The estimator behind an MLflow pyfunc (sklearn pipeline or CompressedModel), or None
    when the flavor does not expose one."""
    try:
        return pyfunc_model.get_raw_model()
    except (NotImplementedError, AttributeError):
        return None


def score(pyfunc_model: Any, raw: Any, features: pd.DataFrame) -> Scores:
    """Predictions of `features` (already conformed), with class probabilities when the
    model is a classifier that has them."""
    model = raw if raw is not None else pyfunc_model
    prediction = np.asarray(model.predict(features))
    if prediction.ndim > 1:
        prediction = prediction.reshape(len(prediction), -1)[:, 0]
    classes = model_classes(raw) if raw is not None else None
    proba = class_probabilities(raw, features) if classes is not None else None
    if proba is None or classes is None:
        return Scores(prediction, None)
    return Scores(prediction, pd.DataFrame(proba, columns=[proba_column(c) for c in classes]))


def log_record(features: pd.DataFrame, ids: dict[str, np.ndarray], scores: Scores) -> pd.DataFrame:
    """One frame of what a request logs: features as the model saw them, the id columns,
    the prediction and the class probabilities (built in one go: the request path)."""
    columns: dict[str, Any] = {name: features[name].to_numpy() for name in features.columns}
    columns.update(ids)
    columns.update(scores.columns())
    return pd.DataFrame(columns)
