"""String and boolean class labels: a feature column named like one of the prediction
log's own columns is refused when the data set loads (the CLI end to end is in
tests/integration/test_class_labels.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mm_platform.data.sources import load_dataset
from mm_platform.errors import DataError
from mm_platform.project.config import load_project
from tests.support.churn import churn_project, write_churn


@pytest.mark.parametrize(
    "column", ["prediction", "request_id", "timestamp", "model_name", "model_version", "proba_x"]
)
def test_a_feature_column_with_a_reserved_name_is_refused(tmp_path: Path, column: str) -> None:
    frame = pd.read_csv(write_churn(tmp_path / "churn.csv", "No", "Yes"))
    frame = frame.rename(columns={"x2": column})
    frame.to_csv(tmp_path / "churn.csv", index=False)
    project = load_project(churn_project(tmp_path))
    with pytest.raises(DataError, match=f"feature column '{column}' has a name the prediction"):
        load_dataset(project)
