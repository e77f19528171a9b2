"""Logging a training record so that an outage never loses a trained model: the pass is
replayed while the server is away, and the record is kept locally when it stays away."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from mm_platform.errors import DataError, TrackingError
from mm_platform.progress import Progress, silent
from mm_platform.project.config import parse_duration
from mm_platform.training.attempt import Pass, registration_state, undo_version, write_attempt
from mm_platform.training.pending import kept_message, load_pending
from mm_platform.training.record import TrainRecord, TrainResult

logger = logging.getLogger(__name__)

DEFAULT_RETRY = "2m"  # how long `mm train` waits for a tracking server that went away


def log_training(
    record: TrainRecord, *, retry_for: float | None = None, progress: Progress | None = None
) -> TrainResult:
    """Log `record` (runs, datasets, model, version, alias), riding out a tracking server
    that goes away for up to `retry_for` seconds. If it stays away, or the store refuses a
    write, the record is kept in the pending folder and the error says how to re-log it."""
    from mm_platform import tracking
    from mm_platform.tracking import durable

    project = record.project
    uri = tracking.tracking_uri()  # not connect(): a server gone since the search is waited for
    report = progress or silent
    total = len(record.results) + 1
    report(f"{project.name}: log to MLflow", total - 1, total)
    budget = parse_duration(DEFAULT_RETRY) if retry_for is None else retry_for
    state = Pass()
    try:
        result = durable.replay(
            lambda: write_attempt(record, uri, state), budget_s=budget, step=lambda: state.step
        )
    except durable.ServerGone as gone:
        registry = registration_state(state, project.name, gone.step)
        raise TrackingError(
            f"tracking server {tracking.redact_uri(uri)} unreachable for {gone.waited:.0f} s "
            f"({gone.reason}) while trying to {gone.step}; {registry} "
            + kept_message(record, "once the server is back, ")
        ) from gone
    except KeyboardInterrupt:
        if state.log is not None:
            state.log.end_open_runs("KILLED", "interrupted (Ctrl-C)")
        logger.warning("interrupted while trying to %s. %s", state.step, kept_message(record))
        raise
    except Exception as exc:
        _failed(record, state, exc)
        raise
    report(f"{project.name}: done", total, total)
    return result


def _failed(record: TrainRecord, state: Pass, exc: Exception) -> None:
    """End the pass's open runs FAILED, undo a version left without its alias and keep the
    record; raise the TrackingError that says so, or (a bug) say so and return."""
    from mm_platform import tracking

    if state.log is not None:
        state.log.end_open_runs("FAILED", f"{type(exc).__name__}: {exc}")
    undone = undo_version(state, record.project.name)
    error = tracking.translate(exc, state.step)
    if isinstance(error, OSError):  # a full disk or a permission in a temporary folder
        error = TrackingError(f"{exc}")
    if isinstance(error, TrackingError):
        raise TrackingError(f"{error}.{undone} {kept_message(record)}") from exc
    logger.warning("logging failed while trying to %s. %s", state.step, kept_message(record))


def relog(folder: str | Path, retry_for: float | None = None) -> TrainResult:
    """Log a kept training record; runs and versions written before are completed, not
    repeated. The folder is removed once everything is logged."""
    import fcntl

    from mm_platform import tracking

    record = load_pending(folder)
    with open(Path(folder) / "record.pkl", "rb") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise DataError(f"{folder}: another `mm relog` is logging it right now") from exc
        uri = tracking.redact_uri(tracking.connect())
        if record.tracking_uri is not None and record.tracking_uri != uri:
            raise DataError(
                f"{folder} was being logged to {record.tracking_uri}, not {uri}: set "
                f"MLFLOW_TRACKING_URI to {record.tracking_uri} (with its password, if any) "
                "to complete those runs"
            )
        result = log_training(record, retry_for=retry_for)
        shutil.rmtree(folder)
    with contextlib.suppress(OSError):
        Path(folder).resolve().parent.rmdir()  # the pending root, once empty
    return result
