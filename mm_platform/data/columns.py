"""Column names the data, the reference sample and the prediction log agree on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mm_platform.project.config import Project

# column names the prediction log and the reference sample use for themselves
RESERVED_COLUMNS = ("prediction", "request_id", "timestamp", "model_name", "model_version")

PROBA_PREFIX = "proba_"  # reference-sample column of one class's probability: proba_<class>


def proba_column(label: Any) -> str:
    """The column (reference sample, prediction log) of the probability of class `label`."""
    return f"{PROBA_PREFIX}{label}"


def target_name(project: Project) -> str:
    """The target column's name in this project's data (`y`, `target` or the file's)."""
    dataset = project.dataset
    if dataset.source == "file":
        return dataset.target
    return "y" if dataset.source == "synthetic" else "target"
