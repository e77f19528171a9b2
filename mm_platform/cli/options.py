"""Options and argument parsing shared by several commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click


def retry_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """The `--retry-for DURATION` option of the commands that log a trained model."""
    return click.option(
        "--retry-for",
        default=None,
        metavar="DURATION",
        help="How long to wait for a tracking server that goes away while logging, from the "
        "first failure: e.g. 90 (seconds), 30s, 5m, or 0 not to wait (default: "
        "MM_TRACKING_RETRY, else 2m).",
    )(function)


def retry_seconds(value: str | None) -> float:
    """Seconds of `--retry-for` (or MM_TRACKING_RETRY, else 2m); BadParameter if unreadable."""
    from mm_platform.project.config import parse_duration

    text = (value or os.environ.get("MM_TRACKING_RETRY") or "2m").strip()
    if text.isdigit():
        return float(text)  # plain seconds; 0: keep the model for `mm relog` at once
    if text[:-1].isdigit() and int(text[:-1]) == 0 and text[-1] in "smhdw":
        return 0.0  # 0s, 0m, ...
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        where = "--retry-for" if value else "MM_TRACKING_RETRY"
        raise click.BadParameter(
            f"'{text}' is not a duration: write whole seconds or a number and a unit, "
            "e.g. 90, 30s, 5m, 1h, or 0 not to wait",
            param_hint=where,
        ) from exc


def moment(value: str | None) -> datetime | None:
    """An ISO date or time option as UTC (naive means UTC); None when not given."""
    if value is None:
        return None
    from mm_platform.clock import parse_utc

    try:
        return parse_utc(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
