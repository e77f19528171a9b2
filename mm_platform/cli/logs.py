"""How library log messages reach the user of `mm`: one plain line each on stderr.

The library logs (`logging.getLogger(__name__)`) and never prints; the CLI installs this
handler when a command runs, so a warning shows as its bare message, as before.
"""

from __future__ import annotations

import logging

import click


class _StderrLines(logging.Handler):
    """Each record as its message alone on the stderr of the moment (click's, in tests)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # a closed stderr must not turn a warning into a crash
            self.handleError(record)


def show_library_messages(level: int = logging.WARNING) -> None:
    """Render mm_platform's log records at `level` and above on stderr (once per process)."""
    package = logging.getLogger("mm_platform")
    if any(isinstance(h, _StderrLines) for h in package.handlers):
        return
    handler = _StderrLines(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
