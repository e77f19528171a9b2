"""The project's exceptions: each message says what is wrong, where, and the fix."""

from __future__ import annotations

import re

# `scheme://user:password@` in any message (a library's error may quote a store URI)
_PASSWORD_IN_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/]*@")


class MmError(Exception):
    """Base class of every error mm_platform raises for bad input or an unusable environment.

    The CLI prints these as one line and exits non-zero; anything else is a bug and keeps
    its traceback.
    """

    exit_code = 2

    def __init__(self, message: str = "") -> None:
        # one line whatever the input held: control characters (a newline in a YAML key,
        # a tab in a column name) are shown escaped
        # and no password, whichever URI the message quotes
        text = _PASSWORD_IN_URI.sub(r"\1:***@", str(message))
        super().__init__("".join(_visible(ch) for ch in text))


def _visible(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii") if ord(ch) < 32 or ord(ch) == 127 else ch


class ProjectConfigError(MmError):
    """A project file is missing, unreadable or invalid."""


class DataError(MmError):
    """A dataset cannot be loaded or does not fit the project (missing column, no rows, ...)."""


class TrackingError(MmError):
    """The MLflow tracking server or model registry cannot be used as asked."""

    exit_code = 3


class RegistryError(TrackingError):
    """The registry is not in the state the command needs (no champion, no challenger...)."""

    exit_code = 2
