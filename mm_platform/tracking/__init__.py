"""The only package that talks to MLflow: store connection, runs, model logging, registry.

Import it inside the commands that need it: it imports MLflow (about 2.5 s).
"""

from __future__ import annotations

# store first: it sets the environment that keeps MLflow quiet before MLflow is imported
from mm_platform.tracking.store import connect, redact_uri, ui_runs_url  # isort: skip
from mm_platform.tracking.models import (
    artifact_size,
    input_columns,
    input_schema,
    load_pyfunc,
    load_sklearn_model,
    log_compressed_model,
    log_sklearn_model,
    model_flavors,
    model_input_schema,
    pip_requirements,
    save_sklearn_model,
)
from mm_platform.tracking.registry import (
    delete_alias,
    get_alias_version,
    list_versions,
    move_alias,
    register_with_alias,
    resolve_version,
    verify_model_files,
)
from mm_platform.tracking.runs import (
    dataset_digest,
    dataset_entity,
    end_stale_run,
    experiment_id_for,
    load_frame,
    log_figure,
    log_frame,
    log_metrics,
    log_params,
    log_text,
    recent_runs,
    set_run_tags,
    set_tags,
    tracked_run,
    tracking_error,
)

__all__ = [
    "artifact_size",
    "connect",
    "dataset_digest",
    "dataset_entity",
    "delete_alias",
    "end_stale_run",
    "experiment_id_for",
    "get_alias_version",
    "input_columns",
    "input_schema",
    "list_versions",
    "load_frame",
    "load_pyfunc",
    "load_sklearn_model",
    "log_compressed_model",
    "log_figure",
    "log_frame",
    "log_metrics",
    "log_params",
    "log_sklearn_model",
    "log_text",
    "model_flavors",
    "model_input_schema",
    "move_alias",
    "pip_requirements",
    "recent_runs",
    "redact_uri",
    "register_with_alias",
    "resolve_version",
    "save_sklearn_model",
    "set_run_tags",
    "set_tags",
    "tracked_run",
    "tracking_error",
    "ui_runs_url",
    "verify_model_files",
]
