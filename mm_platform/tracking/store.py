"""Which MLflow store to use (and which outer run), keeping MLflow quiet, and checking the
store can be reached."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from mm_platform.errors import TrackingError
from mm_platform.tracking.errors import auth_message

# Set before MLflow is imported: no URL banners, no artifact progress bars, no git probing.
QUIET_ENV = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "DO_NOT_TRACK": "1",
}


def configure() -> None:
    """Keep MLflow quiet: environment defaults (a variable already set wins), its loggers
    at WARNING and its warnings ignored. Called by the `mm` entry point before anything
    imports MLflow, and by `connect()`; calling it again changes nothing."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
    warnings.filterwarnings("ignore", message=r".*Hint: Inferred schema contains integer column.*")


def connect() -> str:
    """Return the tracking URI in force, after checking the store behind it can be used.

    `MLFLOW_TRACKING_URI` wins; otherwise MLflow's own default (`sqlite:///mlflow.db` in
    the working directory) is used.
    """
    configure()
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("sqlite:///"):
        database = Path(uri[len("sqlite:///") :].split("?", 1)[0]).expanduser()
        if not database.parent.is_dir():
            raise TrackingError(
                f"tracking store {redact_uri(uri)}: folder {database.parent} does not exist; "
                "create it, or set MLFLOW_TRACKING_URI to another store"
            )
        with _setup_lock(database):
            _check_store(uri)
        return uri
    _check_store(uri)
    return uri


def tracking_uri() -> str:
    """The tracking URI in force, unchecked (a server gone for a moment is not an error)."""
    configure()
    import mlflow

    return mlflow.get_tracking_uri()


def outer_run() -> tuple[str, str] | None:
    """(run id, experiment id) of the run this process works inside: the one `mlflow run`
    opened (MLFLOW_RUN_ID) or an active fluent run; None when there is none."""
    import mlflow

    active = mlflow.active_run()
    run_id = os.environ.get("MLFLOW_RUN_ID") or (active.info.run_id if active else None)
    if not run_id:
        return None
    from mm_platform.tracking.runs import mark_experiment_classic

    experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    mark_experiment_classic(experiment_id)
    return run_id, experiment_id


@contextlib.contextmanager
def _setup_lock(database: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<database>.lock` while this process first opens the
    store: MLflow creates and migrates a new SQLite schema on first open, and several
    processes doing that at once fail ("table ... already exists"). Once open, MLflow
    keeps the store per process, so the lock is held only for this first open."""
    import fcntl

    try:
        handle = open(database.with_name(database.name + ".lock"), "a")  # noqa: SIM115
    except OSError:  # a read-only folder: nobody can create the schema there anyway
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_store(uri: str) -> None:
    """One cheap read of the tracking store and the registry, so that a store MLflow cannot
    use fails here with one line rather than mid-run with a traceback."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient()
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    except Exception as exc:  # MLflow raises several unrelated types for unusable stores
        denied = auth_message(exc, "read the tracking store")
        if denied:
            raise TrackingError(f"{redact_uri(uri)}: {denied}") from exc
        reason = _gist(str(getattr(exc, "message", exc)))
        raise TrackingError(
            f"cannot use the MLflow tracking store {redact_uri(uri)}: {reason}. Set "
            "MLFLOW_TRACKING_URI to "
            "a running MLflow server or a sqlite:///path/mlflow.db store (unset it for "
            "./mlflow.db)"
        ) from exc


def _check_server(uri: str) -> None:
    import requests

    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=5)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {redact_uri(uri)} ({reason}); start it, "
            "or set "
            "MLFLOW_TRACKING_URI to a running server (unset it for the local sqlite:///mlflow.db)"
        ) from exc
    if response.status_code in (401, 403):
        return  # an auth-protected server: the store check names what is missing
    if response.status_code != 200:
        raise TrackingError(
            f"{redact_uri(uri)} answers {response.status_code} on /health: is it an MLflow "
            "tracking server? Check its log, or set MLFLOW_TRACKING_URI to another server"
        )


def redact_uri(uri: str) -> str:
    """`uri` fit to print: its password shown as `***` (`http://alice:***@host`, the user
    kept), and so are password or secret values in its query string."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if "@" not in parts.netloc and not parts.query:
        return uri  # nothing to hide (and sqlite:////abs/path keeps its slashes)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        name, has_password, _ = user.partition(":")
        netloc = f"{name}:***@{host}" if has_password else f"{name}@{host}"
    query = parts.query
    if query:
        pairs = [(k, "***" if "pass" in k.lower() or "secret" in k.lower() else v)
                 for k, v in parse_qsl(query, keep_blank_values=True)]  # fmt: skip
        query = urlencode(pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def ui_runs_url(base_url: str, experiment_id: str) -> str:
    """The MLflow UI page that lists an experiment's runs."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"


def _gist(message: str, limit: int = 240) -> str:
    """The first line of a library message, cut after a whole sentence near `limit`."""
    line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    if len(line) <= limit:
        return line.rstrip(".")
    cut = line.rfind(". ", 0, limit)
    return line[:cut] if cut > 0 else line[:limit] + "..."
