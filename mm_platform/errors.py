"""The project's exceptions and the `mm` exit-code table.

Each message says what is wrong, where, and the fix. Library code raises these; the CLI
renders them in one place (one line on stderr) and exits with the code of the class.

Exit codes of `mm` (`ExitCode`), one table for every command:

====  ==================  ==========================================================
code  name                when
====  ==================  ==========================================================
0     OK                  done; `mm drift`: no drift; `mm promote`: promoted
1     STOPPED             `mm schedule` stopped by Ctrl-C; a click-level failure
2     BAD_INPUT           `MmError`, `ProjectConfigError`, `DataError`, `RegistryError`:
                          the command, its files or the registry's state need a fix
3     TRACKING            `TrackingError`: the tracking store or server is unusable
4     REFUSED             `mm promote`: the challenger failed the gate
5     DRIFT               `mm drift`/`mm schedule`: drift or a data-quality failure
6     NOT_ENOUGH_DATA     `mm drift`/`mm schedule`: too few rows in the window
====  ==================  ==========================================================

`RegistryError` is a `TrackingError` (code that handles registry trouble catches both) yet
exits 2, not 3: the store works, and the user fixes the state by running another command
(train a champion, fine-tune a challenger), as with bad input. The rule for a new class:
3 only when the store itself cannot be used; whatever the user fixes in the request is 2.
"""

from __future__ import annotations

import enum
import re

# `scheme://user:password@` in any message (a library's error may quote a store URI)
_PASSWORD_IN_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/]*@")


class ExitCode(enum.IntEnum):
    """The exit status of `mm` (see the table in the module docstring)."""

    OK = 0
    STOPPED = 1
    BAD_INPUT = 2
    TRACKING = 3
    REFUSED = 4
    DRIFT = 5
    NOT_ENOUGH_DATA = 6


class MmError(Exception):
    """Base class of every error mm_platform raises for bad input or an unusable environment.

    The CLI prints these as one line and exits with `exit_code`; anything else is a bug and
    keeps its traceback.
    """

    exit_code: ExitCode = ExitCode.BAD_INPUT

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

    exit_code = ExitCode.TRACKING


class RegistryError(TrackingError):
    """The registry is not in the state the command needs (no champion, no challenger...).

    Exits 2, not 3: the store works; the user fixes the state (see the module docstring).
    """

    exit_code = ExitCode.BAD_INPUT
