"""A churn data set whose target is a string or a boolean, and its project file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.support import write_project

LABELS = {"str": ("No", "Yes"), "bool": (False, True)}


def write_churn(
    path: Path, negative: object, positive: object, n: int = 240, seed: int = 0
) -> Path:
    """A CSV of two features and a target of `negative`/`positive` labels; its path."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    churn = np.where(x1 + 0.5 * x2 + rng.normal(scale=0.5, size=n) > 0, positive, negative)
    pd.DataFrame({"x1": x1, "x2": x2, "churn": churn}).to_csv(path, index=False)
    return path


def churn_project(folder: Path, **extra: object) -> Path:
    """A binary project on churn.csv in `folder` (logistic, f1), with `extra` keys."""
    data = {
        "name": "churn",
        "task": "binary",
        "dataset": {"source": "file", "path": "churn.csv", "target": "churn"},
        "candidates": [{"estimator": "logistic", "params": {"C": [0.1, 1.0]}}],
        "selection": {"metric": "f1"},
        "split": {"cv_folds": 3},
        "serving": {"prediction_log": "predlog"},
        "compression": {"quantize": {"bits": [16]}},
        # the fine-tuned challenger may score a little lower: the test is about labels
        "promotion": {"min_improvement": -1.0, "max_regression": 10.0},
        **extra,
    }
    return write_project(folder, data)
