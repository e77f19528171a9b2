"""Riding out a tracking server that goes away: which errors may pass if tried again (the
server could not be reached, is restarting, asks to come back later, or answered 408/500,
as a locked SQLite store does), and `replay`, which runs a whole attempt again until it
passes or the retry budget is spent."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException

T = TypeVar("T")

_GONE_STATUS = (429, 502, 503, 504)  # a proxy with no server behind it, or "come back later"
_BUSY_STATUS = (408, 500)  # an answer, possibly transient (a locked SQLite store): retried
_NO_CONNECTION = re.compile(
    r"failed with (timeout )?exception|Max retries exceeded|Connection (refused|reset|aborted)"
    r"|RemoteDisconnected"
)


def unreachable(exc: BaseException) -> str | None:
    """A short reason when `exc` says the server could not be reached, is restarting or
    asks to come back later (connection errors, 429, 502, 503, 504); None otherwise."""
    found = transient(exc)
    return found[0] if found is not None and found[1] else None


def transient(exc: BaseException) -> tuple[str, bool] | None:
    """(reason, gone) when `exc` may pass if tried again: gone=True when the server could
    not be reached (see `unreachable`), False for a 408 or 500 answer; None otherwise."""
    import requests

    seen: BaseException | None = exc
    for _ in range(10):  # the chain of causes, not forever
        if seen is None:
            return None
        if isinstance(seen, (requests.ConnectionError, requests.Timeout)):
            return type(seen).__name__, True
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(seen, requests.HTTPError) and status is not None:
            return _by_status(status)
        text = str(getattr(seen, "message", seen))
        if isinstance(seen, MlflowException):
            answered = re.search(r"too many (\d{3}) error responses|error code (\d{3})", text)
            if answered:
                return _by_status(int(answered.group(1) or answered.group(2)))
            if _NO_CONNECTION.search(text):
                for reason in ("Connection refused", "Connection reset", "RemoteDisconnected"):
                    if reason in text:
                        return reason, True
                return ("no answer" if "timeout" in text else "connection failed"), True
        seen = seen.__cause__ or seen.__context__
    return None


def _by_status(status: int) -> tuple[str, bool] | None:
    if status in _GONE_STATUS:
        return f"HTTP {status}", True
    if status in _BUSY_STATUS:
        return f"HTTP {status}", False
    return None


class ServerGone(Exception):
    """The tracking server stayed unreachable for the whole retry budget."""

    def __init__(self, reason: str, waited: float, step: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.waited = waited
        self.step = step


_BUSY_PASSES = 3  # a 408/500 answer is retried this many times, then reported as the error


@contextmanager
def no_transport_retries(budget_s: float | None = None) -> Iterator[None]:
    """MLflow's HTTP retries off (and its request timeout within `budget_s`, 10 s at least)."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    if budget_s is not None:
        timeout = int(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or 120)
        settings["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(10, min(timeout, int(budget_s))))
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_for_server(uri: str, deadline: float) -> None:
    import requests

    while time.monotonic() < deadline:
        try:  # any answer but a 5xx: the server is up (an auth app may answer 401)
            if requests.get(f"{uri.rstrip('/')}/health", timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def replay(
    attempt: Callable[[], T],
    *,
    budget_s: float,
    step: Callable[[], str] = lambda: "logging",
    notify: Callable[[str], None] | None = None,
) -> T:
    """Run `attempt` until it succeeds; while the server is unreachable, wait for it and
    run it again, for at most `budget_s` seconds from the first failure on. `step()` names
    what the attempt was trying to do, for the messages. Raises ServerGone when the budget
    runs out; other errors pass through."""
    say = notify or logging.getLogger(__name__).warning
    uri = mlflow.get_tracking_uri()
    lost_since = deadline = 0.0  # the budget runs from the first failure on
    busy = passes = 0
    lost_at = ""  # the step the outage was first met at: later passes stop sooner
    with no_transport_retries(budget_s):
        while True:
            try:
                return attempt()
            except Exception as exc:
                found = transient(exc)
                if found is None or not uri.startswith(("http://", "https://")):
                    raise
                reason, gone = found
                if not lost_at:
                    lost_at, lost_since = step(), time.monotonic()
                    deadline = lost_since + budget_s
                busy += not gone
                if busy > _BUSY_PASSES:
                    raise  # the server keeps answering 500: its answer is the error
                pause = min(10.0, 0.5 * 2**passes)  # never hammer a server that is struggling
                passes += 1
                left = deadline - time.monotonic()
                if left <= pause:
                    if gone:
                        raise ServerGone(reason, time.monotonic() - lost_since, lost_at) from exc
                    raise
                from mm_platform.tracking.store import redact_uri

                what = "unreachable" if gone else "answered"
                say(
                    f"tracking server {redact_uri(uri)} {what} while trying to {step()} "
                    f"({reason}); retrying for up to {left:.0f} s more"
                )
                time.sleep(pause)
                _wait_for_server(uri, deadline)
                if gone and time.monotonic() < deadline:
                    say(f"tracking server {redact_uri(uri)} is back; resuming where it stopped")
