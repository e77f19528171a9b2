"""Trained models that could not be logged wait in a local folder until `mm relog`."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

from mm_platform.errors import DataError
from mm_platform.training.record import TrainRecord

# the module that defined the record's classes before training/ was split: folders kept
# by that version still load
_FORMER_HOME = "mm_platform.training.search"


def pending_root() -> Path:
    """Where trained models wait when they could not be logged (MM_PENDING_DIR)."""
    return Path(os.environ.get("MM_PENDING_DIR") or "mm_pending")


def save_pending(record: TrainRecord) -> Path:
    """Keep `record` in `<pending root>/<project>-<attempt>/`: record.pkl for `mm relog`
    and model/, an MLflow model folder anyone can load. Returns the folder."""
    from mm_platform import tracking

    if record.kept_in and (Path(record.kept_in) / "record.pkl").is_file():
        return Path(record.kept_in)  # a re-log that failed again: it is already kept there
    folder = pending_root() / f"{record.project.name}-{record.attempt}"
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tracking.save_sklearn_model(record.pipeline, record.X_train, str(staging / "model"))
    with open(staging / "record.pkl", "wb") as fh:
        pickle.dump(record, fh, protocol=pickle.HIGHEST_PROTOCOL)
    staging.rename(folder)
    record.kept_in = str(folder)
    return folder


class _RecordUnpickler(pickle.Unpickler):
    """Finds the record's classes where they live now, whichever version kept the file."""

    def find_class(self, module: str, name: str) -> Any:
        if module == _FORMER_HOME and name in ("TrainRecord", "Trial", "TrialResult"):
            module = TrainRecord.__module__
        return super().find_class(module, name)


def load_pending(folder: str | Path) -> TrainRecord:
    """The record `save_pending` kept in `folder`."""
    path = Path(folder) / "record.pkl"
    if not Path(folder).exists():
        raise DataError(
            f"{folder} does not exist (re-logged already? a re-log removes its folder); "
            f"the folders still waiting are under {pending_root()}/"
        )
    if not path.is_file():
        raise DataError(
            f"{folder}: no record.pkl here; give the folder `mm train` named when it could "
            f"not log (they are kept under {pending_root()}/)"
        )
    try:
        with open(path, "rb") as fh:
            record = _RecordUnpickler(fh).load()
    except Exception as exc:
        raise DataError(
            f"{path}: cannot be read ({type(exc).__name__}); it was written by another "
            "version of mm or damaged. Its model/ folder still loads with "
            "mlflow.sklearn.load_model"
        ) from exc
    if not isinstance(record, TrainRecord):
        raise DataError(f"{path}: not a training record kept by `mm train`")
    record.kept_in = str(folder)
    return record


def kept_message(record: TrainRecord, when: str = "") -> str:
    """Keep `record` in the pending folder; the sentence that says where and what next."""
    try:
        folder = save_pending(record)
    except Exception as exc:  # keeping it must not hide the error that made it necessary
        return (
            f"Keeping the trained model in {pending_root()} failed too ({exc}); set "
            "MM_PENDING_DIR to a writable folder and train again."
        )
    return (
        f"The trained model is kept in {folder} (its model/ folder loads with "
        f"mlflow.sklearn.load_model); {when}re-log it with: mm relog {folder}"
    )
