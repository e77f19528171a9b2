"""How long work reports how far it got: a callback the caller renders (a bar, a log line)."""

from __future__ import annotations

from collections.abc import Callable

# (description, steps done, steps in total); the library calls it, the CLI draws it
Progress = Callable[[str, int, int], None]


def silent(_description: str, _done: int, _total: int) -> None:
    """The progress callback of a caller that shows nothing."""
