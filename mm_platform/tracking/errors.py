"""The one translation of MLflow's exceptions into the project's TrackingError.

Every module of tracking/ and training/ that turns an MLflow failure into a message goes
through here, so a refused credential or an unusable store reads the same from any command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from mm_platform.errors import TrackingError


def auth_message(exc: BaseException, action: str) -> str | None:
    """One line for a 401 or 403 from an auth-protected server, naming the user (never the
    password) and what was refused; None for any other error."""
    code = str(getattr(exc, "error_code", ""))
    text = str(getattr(exc, "message", exc))
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == "UNAUTHENTICATED" or ("401" in text[:200] and "nauthorized" in text[:400]):
        who = f"user '{user}'" if user else "no user (MLFLOW_TRACKING_USERNAME is not set)"
        return (
            f"the server refused {who}: wrong or missing credentials (401). Set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on it"
        )
    if code == "PERMISSION_DENIED" or ("403" in text[:200] and "ermission" in text[:400]):
        return (
            f"user '{user or '?'}' lacks the permission to {action} (403). Ask an admin of "
            "the server to grant it (MLflow's basic-auth permissions: READ, EDIT, MANAGE)"
        )
    return None


def store_label() -> str:
    """The tracking store in force, fit to print (its password hidden)."""
    import mlflow

    from mm_platform.tracking.store import redact_uri

    return redact_uri(mlflow.get_tracking_uri())


def tracking_error(exc: BaseException, action: str = "do this") -> TrackingError:
    """The TrackingError to raise (`from exc`) for an MLflow error met while doing `action`:
    the refusal in one line for a 401/403, else the first line of MLflow's message."""
    denied = auth_message(exc, action)
    message = denied or (str(getattr(exc, "message", exc)).splitlines() or [""])[0]
    return TrackingError(f"MLflow store {store_label()}: {message}")


def translate(exc: BaseException, action: str = "do this") -> BaseException:
    """`tracking_error(exc, action)` for an MLflow error; any other exception unchanged."""
    from mlflow.exceptions import MlflowException

    return tracking_error(exc, action) if isinstance(exc, MlflowException) else exc


@contextlib.contextmanager
def translated(action: str, *, refusals_only: bool = False) -> Iterator[None]:
    """MLflow errors raised inside become `tracking_error(exc, action)`. With
    `refusals_only`, only a 401/403 is translated; any other MLflow error goes through
    unchanged for the caller to handle (a missing alias, a version that does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if refusals_only and auth_message(exc, action) is None:
            raise
        raise translate(exc, action) from exc
