"""UTC time for the whole package: now, conversion, parsing, and how moments are shown.

Every moment mm_platform stores or compares is timezone-aware UTC. A naive moment from a
user (`--since 2026-11-29`) is taken to be UTC; a naive one inside the library where the
zone matters is a bug (`require_utc`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import overload


def utc_now() -> datetime:
    """The current moment, timezone-aware UTC."""
    return datetime.now(timezone.utc)


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """`moment` in UTC; a naive one is taken to be UTC already; None stays None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def require_utc(moment: datetime, name: str) -> datetime:
    """`moment` in UTC; a naive datetime is a bug, since its zone is unknown."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"The '{name}' datetime must be timezone-aware. Got {moment} instead.")
    return moment.astimezone(timezone.utc)


def from_ms(milliseconds: int) -> datetime:
    """The UTC moment `milliseconds` after the epoch (how MLflow stores run times)."""
    return datetime.fromtimestamp(milliseconds / 1000, timezone.utc)


def parse_utc(text: str) -> datetime:
    """An ISO date or time as UTC (naive means UTC); ValueError names an example."""
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO date or time, e.g. 2026-11-29") from exc
    return as_utc(stamp)


def utc_stamp(moment: datetime) -> str:
    """`moment` to the second in UTC, ISO style: 2026-11-29T06:00:00Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def readable_stamp(moment: datetime) -> str:
    """`moment` to the second in UTC, for people: 2026-11-29 06:00:00 (run names, windows)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def format_window(start: datetime, end: datetime) -> str:
    """A window to the second, as the CLI shows it:
    2026-11-29 00:00:00..2026-11-29 06:00:00 UTC."""
    return f"{readable_stamp(start)}..{readable_stamp(end)} UTC"
