"""The only package that talks to MLflow: store connection, runs, model logging, registry.

Import it inside the commands that need it: it imports MLflow (about 2.5 s).
"""

from __future__ import annotations

# store first: it sets the environment that keeps MLflow quiet before MLflow is imported
from mm_platform.tracking.store import connect, ui_runs_url  # isort: skip
from mm_platform.tracking.models import log_sklearn_model, pip_requirements
from mm_platform.tracking.registry import (
    get_alias_version,
    register_with_alias,
)
from mm_platform.tracking.runs import (
    log_dataset,
    log_figure,
    log_frame,
    log_history,
    log_metrics,
    log_params,
    tracked_run,
)

__all__ = [
    "connect",
    "get_alias_version",
    "log_dataset",
    "log_figure",
    "log_frame",
    "log_history",
    "log_metrics",
    "log_params",
    "log_sklearn_model",
    "pip_requirements",
    "register_with_alias",
    "tracked_run",
    "ui_runs_url",
]
