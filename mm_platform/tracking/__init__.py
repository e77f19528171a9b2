"""The only package that talks to MLflow: store connection, runs, model logging, registry.

Import it inside the commands that need it: it imports MLflow (about 2.5 s).
"""

from __future__ import annotations

# store first: it sets the environment that keeps MLflow quiet before MLflow is imported
from mm_platform.tracking.store import connect, ui_runs_url  # isort: skip
from mm_platform.tracking.models import (
    artifact_size,
    input_columns,
    input_schema,
    load_pyfunc,
    load_sklearn_model,
    log_compressed_model,
    log_sklearn_model,
    model_flavors,
    pip_requirements,
)
from mm_platform.tracking.registry import (
    delete_alias,
    get_alias_version,
    list_versions,
    move_alias,
    register_with_alias,
    resolve_version,
)
from mm_platform.tracking.runs import (
    dataset_digest,
    end_stale_run,
    load_frame,
    log_dataset,
    log_figure,
    log_frame,
    log_history,
    log_metrics,
    log_params,
    log_text,
    recent_runs,
    set_run_tags,
    set_tags,
    tracked_run,
)

__all__ = [
    "artifact_size",
    "connect",
    "dataset_digest",
    "delete_alias",
    "end_stale_run",
    "get_alias_version",
    "input_columns",
    "input_schema",
    "list_versions",
    "load_frame",
    "load_pyfunc",
    "load_sklearn_model",
    "log_compressed_model",
    "log_dataset",
    "log_figure",
    "log_frame",
    "log_history",
    "log_metrics",
    "log_params",
    "log_sklearn_model",
    "log_text",
    "model_flavors",
    "move_alias",
    "pip_requirements",
    "recent_runs",
    "register_with_alias",
    "resolve_version",
    "set_run_tags",
    "set_tags",
    "tracked_run",
    "ui_runs_url",
]
