"""The drift-job schedule: due windows, catch-up, state across restarts, failures, the lock."""

from __future__ import annotations

import copy
import fcntl
import json
import sys
import types
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mm_platform.errors import DataError, MmError, ProjectConfigError, TrackingError
from mm_platform.monitoring import schedule
from mm_platform.monitoring.schedule import (
    WindowResult,
    due_windows,
    exit_code,
    read_last_end,
    run_due,
    serve,
    write_last_end,
)
from mm_platform.project.config import Project, load_project
from tests.support import SEED_LINEAR, write_project

HOUR = timedelta(hours=1)
JOB_EXIT = {"no_drift": 0, "drift": 5, "not_enough_data": 6}  # as the drift job's outcomes


def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    """A UTC moment on January `day`, 2025."""
    return datetime(2025, 1, day, hour, minute, tzinfo=timezone.utc)


def make_project(folder: Path, name: str = "tiny", **monitoring: object) -> Project:
    """A small project file in `folder` with an hourly schedule, loaded for real."""
    data = copy.deepcopy(SEED_LINEAR)
    data["name"] = name
    data["monitoring"] = {"schedule": "0 * * * *", "window": "1h", **monitoring}
    return load_project(write_project(folder, data, f"{name}.yaml"))


@dataclass(frozen=True)
class Outcome:
    """Stands in for the drift job's DriftOutcome."""

    status: str
    exit_code: int
    run_id: str


class RecordingJob:
    """A drift job that records its windows and fails on the (project, end) it is told to."""

    def __init__(
        self, fail_at: tuple[tuple[str, datetime], ...] = (), status: str = "no_drift"
    ) -> None:
        self.calls: list[tuple[str, datetime, datetime]] = []
        self.fail_at = set(fail_at)
        self.status = status

    def __call__(self, project: Project, *, start: datetime, end: datetime, **_: object) -> Outcome:
        self.calls.append((project.name, start, end))
        if (project.name, end) in self.fail_at:
            raise DataError(f"{project.label}: no predictions between {start} and {end}")
        return Outcome(self.status, JOB_EXIT[self.status], f"run{len(self.calls)}")

    def ends(self, name: str = "tiny") -> list[datetime]:
        return [end for project, _, end in self.calls if project == name]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_first_run_without_state_runs_only_the_latest_window(project: Project, state: Path) -> None:
    job = RecordingJob()
    results = run_due([project], now=at(12, 30), job=job, state_dir=state, echo=lambda _: None)
    assert job.calls == [("tiny", at(11), at(12))]
    assert [(r.start, r.end, r.status, r.run_id) for r in results] == [
        (at(11), at(12), "no_drift", "run1")
    ]
    assert read_last_end("tiny", state) == at(12)


def test_a_window_is_printed_to_the_second(tmp_path: Path, state: Path) -> None:
    project = make_project(tmp_path, window="90s")
    lines: list[str] = []
    run_due([project], now=at(12, 30), job=RecordingJob(), state_dir=state, echo=lines.append)
    assert lines == [
        "tiny: window 2025-01-01T11:58:30Z to 2025-01-01T12:00:00Z: no_drift (run run1)"
    ]


def test_a_fire_time_equal_to_now_is_due(project: Project) -> None:
    assert due_windows(project, at(12), None) == [(at(11), at(12))]
    assert due_windows(project, at(12), at(11)) == [(at(11), at(12))]
    assert due_windows(project, at(11, 59), at(11)) == []


def test_catch_up_runs_every_missed_window_once_in_order(project: Project, state: Path) -> None:
    state.mkdir()
    write_last_end("tiny", at(8), state)
    job = RecordingJob()
    run_due([project], now=at(12, 30), job=job, state_dir=state, echo=lambda _: None)
    assert job.calls == [("tiny", at(h - 1), at(h)) for h in (9, 10, 11, 12)]
    assert read_last_end("tiny", state) == at(12)

    again = run_due([project], now=at(12, 30), job=job, state_dir=state, echo=lambda _: None)
    assert again == []
    assert len(job.calls) == 4


def test_state_survives_a_restart(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = RecordingJob()
    run_due([make_project(tmp_path)], now=at(10, 5), job=first, state_dir=state, echo=print)
    saved = json.loads((state / "tiny.json").read_text())
    assert saved == {"project": "tiny", "last_end": "2025-01-01T10:00:00+00:00"}

    # a new process: the project reloaded, the folder found through the environment
    monkeypatch.setenv("MM_SCHEDULE_STATE", str(state))
    second = RecordingJob()
    run_due([make_project(tmp_path)], now=at(13, 1), job=second, echo=print)
    assert second.ends() == [at(11), at(12), at(13)]
    assert sorted(p.name for p in state.iterdir()) == ["tiny.json", "tiny.lock"]


def test_state_dir_defaults_to_the_working_directory(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MM_SCHEDULE_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    run_due([project], now=at(10, 5), job=RecordingJob(), echo=lambda _: None)
    assert read_last_end("tiny", tmp_path / "mm_schedule_state") == at(10)


def test_a_failed_window_keeps_the_state_before_it_and_is_retried(
    tmp_path: Path, state: Path
) -> None:
    tiny, other = make_project(tmp_path), make_project(tmp_path, "other")
    state.mkdir()
    write_last_end("tiny", at(8), state)
    write_last_end("other", at(8), state)
    lines: list[str] = []
    failing = RecordingJob(fail_at=(("tiny", at(10)),))
    results = run_due(
        [tiny, other], now=at(12, 30), job=failing, state_dir=state, echo=lines.append
    )

    assert failing.ends("tiny") == [at(9), at(10)]  # stops at the failed window
    assert failing.ends("other") == [at(9), at(10), at(11), at(12)]  # other projects go on
    assert [(r.end, r.status) for r in results if r.project == "tiny"] == [
        (at(9), "no_drift"),
        (at(10), "error"),
    ]
    failed = results[1]
    assert failed.exit_code == 2
    assert failed.error is not None and "no predictions" in failed.error
    assert read_last_end("tiny", state) == at(9)
    assert read_last_end("other", state) == at(12)
    assert any("failed" in line and "retried" in line and "\n" not in line for line in lines)

    healthy = RecordingJob()
    run_due([tiny], now=at(12, 30), job=healthy, state_dir=state, echo=lambda _: None)
    assert healthy.ends() == [at(10), at(11), at(12)]
    assert read_last_end("tiny", state) == at(12)


def test_a_bug_in_the_job_is_recorded_and_other_projects_go_on(tmp_path: Path, state: Path) -> None:
    tiny, other = make_project(tmp_path), make_project(tmp_path, "other")
    good = RecordingJob()

    def broken_for_tiny(project: Project, *, start: datetime, end: datetime) -> Outcome:
        if project.name == "tiny":
            raise ZeroDivisionError("a bug")
        return good(project, start=start, end=end)

    state.mkdir()
    write_last_end("tiny", at(8), state)
    results = run_due(
        [tiny, other], now=at(12, 30), job=broken_for_tiny, state_dir=state, echo=lambda _: None
    )
    assert [(r.project, r.status) for r in results] == [("tiny", "error"), ("other", "no_drift")]
    assert results[0].error == "unexpected ZeroDivisionError: a bug"
    assert exit_code(results) == 1
    assert read_last_end("tiny", state) == at(8)  # retried next round


def test_a_failed_first_window_is_retried(project: Project, state: Path) -> None:
    def failing(project: Project, *, start: datetime, end: datetime) -> Outcome:
        raise MmError("store down")

    run_due([project], now=at(12, 30), job=failing, state_dir=state, echo=lambda _: None)
    job = RecordingJob()
    run_due([project], now=at(13, 5), job=job, state_dir=state, echo=lambda _: None)
    assert job.ends("tiny") == [at(12), at(13)]  # the failed first window, then the next


def test_a_locked_project_is_skipped_and_others_run(tmp_path: Path, state: Path) -> None:
    tiny, other = make_project(tmp_path), make_project(tmp_path, "other")
    state.mkdir()
    lines: list[str] = []
    job = RecordingJob()
    with (state / "tiny.lock").open("a") as held:  # another scheduler, as far as flock knows
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        results = run_due([tiny, other], now=at(10, 5), job=job, state_dir=state, echo=lines.append)
    assert [r.project for r in results] == ["other"]
    assert job.ends("tiny") == []
    assert read_last_end("tiny", state) is None
    assert any(line.startswith("tiny: skipped") for line in lines)

    run_due([tiny], now=at(10, 5), job=job, state_dir=state, echo=lambda _: None)
    assert job.ends("tiny") == [at(10)]  # released: runs the next round


def test_a_project_without_a_schedule_is_a_clear_error(tmp_path: Path, state: Path) -> None:
    data = copy.deepcopy(SEED_LINEAR)
    unscheduled = load_project(write_project(tmp_path, data, "plain.yaml"))
    job = RecordingJob()
    match = r"plain\.yaml: monitoring\.schedule is not set.*'0 \* \* \* \*'"
    with pytest.raises(ProjectConfigError, match=match):
        run_due([make_project(tmp_path), unscheduled], now=at(10, 5), job=job, state_dir=state)
    with pytest.raises(ProjectConfigError, match=match):
        serve([unscheduled], clock=lambda: at(10, 5), sleep=lambda _: None, job=job)
    assert job.calls == []  # checked before any window runs


def test_a_schedule_that_never_fires_is_a_clear_error(tmp_path: Path) -> None:
    project = make_project(tmp_path, schedule="0 0 31 2 *")
    with pytest.raises(ProjectConfigError, match=r"monitoring\.schedule '0 0 31 2 \*' never fires"):
        due_windows(project, at(10), None)


def test_windows_are_as_wide_as_the_window_setting(tmp_path: Path) -> None:
    project = make_project(tmp_path, schedule="0 0 * * *", window="2d")
    assert due_windows(project, at(5, day=4), at(0, day=2)) == [
        (at(0, day=1), at(0, day=3)),
        (at(0, day=2), at(0, day=4)),
    ]


def test_catch_up_is_capped_with_a_warning(tmp_path: Path) -> None:
    project = make_project(tmp_path, schedule="* * * * *", window="1m")
    with pytest.warns(UserWarning, match="more than 1000 windows are due"):
        windows = due_windows(project, at(0, day=3), at(0, day=1))
    assert len(windows) == 1000
    assert windows[0] == (at(0, day=1), at(0, 1, day=1))  # oldest first: nothing is skipped


def test_naive_datetimes_are_refused(project: Project) -> None:
    with pytest.raises(ValueError, match="'now' datetime must be timezone-aware"):
        due_windows(project, datetime(2025, 1, 1, 12), None)


def test_a_corrupt_state_file_names_the_file_and_the_fix(state: Path) -> None:
    state.mkdir()
    (state / "tiny.json").write_text("{not json")
    with pytest.raises(MmError, match=r"tiny\.json: .*delete the file"):
        read_last_end("tiny", state)


def test_a_crash_while_saving_keeps_the_previous_state(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state.mkdir()
    write_last_end("tiny", at(8), state)

    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt("interrupted while saving")

    monkeypatch.setattr(schedule.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt, match="while saving"):
        write_last_end("tiny", at(9), state)
    assert read_last_end("tiny", state) == at(8)
    assert [p.name for p in state.iterdir()] == ["tiny.json"]  # no temporary file left


def test_serve_runs_windows_as_time_passes_and_sleeps_until_the_next_fire_time(
    tmp_path: Path, state: Path
) -> None:
    hourly = make_project(tmp_path)
    often = make_project(tmp_path, "often", schedule="*/20 * * * *", window="20m")
    clock = [at(10, 5)]
    sleeps: list[float] = []

    class SlowJob(RecordingJob):
        def __call__(self, project: Project, *, start: datetime, end: datetime) -> Outcome:
            clock[0] += timedelta(minutes=1)  # each job takes a minute
            return super().__call__(project, start=start, end=end)

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    job = SlowJob()
    serve(
        [hourly, often],
        clock=lambda: clock[0],
        sleep=sleep,
        job=job,
        state_dir=state,
        echo=lambda _: None,
        max_iterations=3,
    )
    assert job.calls == [
        ("tiny", at(9), at(10)),
        ("often", at(9, 40), at(10)),
        ("often", at(10), at(10, 20)),
        ("often", at(10, 20), at(10, 40)),
    ]
    # 10:07 after two jobs -> 10:20; 10:21 after one -> 10:40; no sleep after the last round
    assert sleeps == [13 * 60, 19 * 60]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], 0),
        ([("no_drift", 0), ("not_enough_data", 6)], 6),
        ([("no_drift", 0), ("drift", 5), ("not_enough_data", 6)], 5),
        ([("drift", 5), ("error", 3), ("error", 2)], 3),
    ],
)
def test_exit_code_prefers_errors_then_drift(
    statuses: list[tuple[str, int]], expected: int
) -> None:
    results = [WindowResult("tiny", at(h), at(h) + HOUR, s, c) for h, (s, c) in enumerate(statuses)]
    assert exit_code(results) == expected


def test_an_error_keeps_the_exit_code_it_carries(project: Project, state: Path) -> None:
    def unreachable(project: Project, *, start: datetime, end: datetime) -> Outcome:
        raise TrackingError("the tracking server does not answer")

    results = run_due(
        [project], now=at(10, 5), job=unreachable, state_dir=state, echo=lambda _: None
    )
    assert [(r.status, r.exit_code) for r in results] == [("error", 3)]
    assert exit_code(results) == 3


def test_the_default_job_is_the_drift_job_imported_when_a_window_runs(
    project: Project, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drift_job = RecordingJob(status="drift")
    module = types.ModuleType("mm_platform.monitoring.job")
    module.run_drift = drift_job  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mm_platform.monitoring.job", module)
    results = run_due([project], now=at(10, 5), state_dir=state, echo=lambda _: None)
    assert drift_job.calls == [("tiny", at(9), at(10))]
    assert [(r.status, r.exit_code, r.run_id) for r in results] == [("drift", 5, "run1")]
    assert exit_code(results) == 5
