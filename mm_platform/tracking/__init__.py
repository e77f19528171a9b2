"""The only package that talks to MLflow: store connection, runs, model logging, registry.

Importing the package imports nothing of MLflow: each name below loads its module (and
MLflow, about 2.5 s) on first use, so `tracking.tags` and `tracking.errors` stay cheap.
The first use of a name whose module imports MLflow calls `configure()` first, which
keeps MLflow quiet (the `mm` entry point calls it itself, before anything else).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers
    from mm_platform.tracking.errors import (
        tracking_error,
        translate,
        translated,
    )
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
        delete_version,
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
        load_artifact_bytes,
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
    )
    from mm_platform.tracking.store import (
        configure,
        connect,
        outer_run,
        redact_uri,
        tracking_uri,
        ui_runs_url,
    )

# public name -> the module of this package that defines it
_HOMES = {
    "configure": "store",
    "connect": "store",
    "redact_uri": "store",
    "ui_runs_url": "store",
    "outer_run": "store",
    "tracking_uri": "store",
    "tracking_error": "errors",
    "translate": "errors",
    "translated": "errors",
    "artifact_size": "models",
    "input_columns": "models",
    "input_schema": "models",
    "load_pyfunc": "models",
    "load_sklearn_model": "models",
    "log_compressed_model": "models",
    "log_sklearn_model": "models",
    "model_flavors": "models",
    "model_input_schema": "models",
    "pip_requirements": "models",
    "save_sklearn_model": "models",
    "delete_alias": "registry",
    "delete_version": "registry",
    "get_alias_version": "registry",
    "list_versions": "registry",
    "move_alias": "registry",
    "register_with_alias": "registry",
    "resolve_version": "registry",
    "verify_model_files": "registry",
    "dataset_digest": "runs",
    "dataset_entity": "runs",
    "end_stale_run": "runs",
    "experiment_id_for": "runs",
    "load_artifact_bytes": "runs",
    "load_frame": "runs",
    "log_figure": "runs",
    "log_frame": "runs",
    "log_metrics": "runs",
    "log_params": "runs",
    "log_text": "runs",
    "recent_runs": "runs",
    "set_run_tags": "runs",
    "set_tags": "runs",
    "tracked_run": "runs",
}

__all__ = [  # every name of _HOMES
    "artifact_size",
    "configure",
    "connect",
    "dataset_digest",
    "dataset_entity",
    "delete_alias",
    "delete_version",
    "end_stale_run",
    "experiment_id_for",
    "get_alias_version",
    "input_columns",
    "input_schema",
    "list_versions",
    "load_artifact_bytes",
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
    "outer_run",
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
    "tracking_uri",
    "translate",
    "translated",
    "ui_runs_url",
    "verify_model_files",
]


def __getattr__(name: str) -> Any:
    """Load the module that defines `name` on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if home != "errors":  # the module imports MLflow: quiet it first, as `mm` does
        importlib.import_module(f"{__name__}.store").configure()
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
