"""The seeded train/holdout split every run of a project shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sklearn.model_selection import train_test_split

if TYPE_CHECKING:
    import pandas as pd

    from mm_platform.data.sources import LoadedData
    from mm_platform.project.config import Project


def split_holdout(
    project: Project, data: LoadedData
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """The seeded train/holdout split every run of this project uses:
    X_train, X_holdout, y_train, y_holdout."""
    stratify = data.y if project.task != "regression" and project.split.stratify else None
    X_train, X_hold, y_train, y_hold = train_test_split(
        data.X,
        data.y,
        test_size=project.split.holdout_fraction,
        random_state=project.seed,
        stratify=stratify,
    )
    return X_train, X_hold, y_train, y_hold
