"""The pieces every command shares: the exit-code table, UTC times, library messages."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_every_error_class_exits_with_its_code_from_the_one_table() -> None:
    from mm_platform.errors import (
        DataError,
        ExitCode,
        MmError,
        ProjectConfigError,
        RegistryError,
        TrackingError,
    )

    codes = {cls: cls.exit_code for cls in (MmError, ProjectConfigError, DataError,
                                            TrackingError, RegistryError)}  # fmt: skip
    assert all(isinstance(code, ExitCode) for code in codes.values())
    assert codes == {
        MmError: 2, ProjectConfigError: 2, DataError: 2, TrackingError: 3, RegistryError: 2,
    }  # fmt: skip
    assert issubclass(RegistryError, TrackingError)  # caught as tracking trouble, exits 2


def test_user_times_are_utc_shown_to_the_second_and_library_times_must_say_their_zone() -> None:
    from datetime import datetime, timedelta, timezone

    from mm_platform.clock import format_window, parse_utc, require_utc, utc_stamp

    assert parse_utc("2026-11-29") == datetime(2026, 11, 29, tzinfo=timezone.utc)
    assert parse_utc("2026-11-29T02:00+02:00") == datetime(2026, 11, 29, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match=r"'yesterday' is not an ISO date or time"):
        parse_utc("yesterday")
    with pytest.raises(ValueError, match=r"The 'now' datetime must be timezone-aware"):
        require_utc(datetime(2026, 11, 29), "now")
    start = datetime(2026, 11, 29, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    assert utc_stamp(start) == "2026-11-29T00:30:00Z"
    end = parse_utc("2026-11-29T06:00:59")
    assert format_window(require_utc(start, "start"), end) == (
        "2026-11-29 00:30:00..2026-11-29 06:00:59 UTC"
    )


def test_library_warnings_reach_stderr_as_bare_lines_once() -> None:
    code = (
        "import logging\n"
        "from mm_platform.cli.logs import show_library_messages\n"
        "show_library_messages(); show_library_messages()\n"
        "logging.getLogger('mm_platform.tracking.durable').warning('waiting for the server')\n"
        "logging.getLogger('mm_platform.tracking.durable').info('not shown')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (out.stdout, out.stderr) == ("", "waiting for the server\n")
