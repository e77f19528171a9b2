"""The drift-job schedule: one window per cron fire time, missed windows caught up in order.

For every fire time t of a project's `monitoring.schedule` (five-field cron, UTC) the drift
job checks the window [t - monitoring.window, t). The end of the last completed window is
kept per project in `<state dir>/<name>.json`, written atomically, so a restart catches up
the windows it missed and never repeats a completed one; a non-blocking `flock` on
`<state dir>/<name>.lock` keeps two schedulers off the same project at the same time.

Everything runs in one process: the drift job imports Evidently (6-9 s) once, not per window.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice, takewhile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from croniter import CroniterBadDateError, croniter

from mm_platform.clock import require_utc, utc_now, utc_stamp
from mm_platform.errors import MmError, ProjectConfigError

if TYPE_CHECKING:
    from mm_platform.project.config import Project

DEFAULT_STATE_DIR = "mm_schedule_state"
ENV_STATE_DIR = "MM_SCHEDULE_STATE"
MAX_CATCH_UP = 1000  # windows per project and round; the rest wait for the next round

Status = Literal["no_drift", "drift", "not_enough_data", "error"]
Window = tuple[datetime, datetime]


class DriftJob(Protocol):
    """What the scheduler calls per window; `mm_platform.monitoring.job.run_drift` by default.

    It returns an outcome with `.status`, `.exit_code` and `.run_id`, and raises `MmError`
    for a window it cannot check.
    """

    def __call__(self, project: Project, *, start: datetime, end: datetime) -> Any: ...


@dataclass(frozen=True)
class WindowResult:
    """What happened to one window of one project."""

    project: str
    start: datetime
    end: datetime
    status: Status
    exit_code: int
    run_id: str | None = None
    error: str | None = None


# --- fire times ------------------------------------------------------------------------------


def due_windows(
    project: Project, now: datetime, last_end: datetime | None, *, limit: int = MAX_CATCH_UP
) -> list[Window]:
    """The windows to run now, oldest first: one per fire time t with last_end < t <= now.

    Without state (`last_end` None) only the latest fire time <= now is due: history is not
    backfilled. At most `limit` windows are returned, with a warning when more are due.
    """
    now = require_utc(now, "now")
    if last_end is None:
        ends = [latest_fire_time(project, now)]
    else:
        ends = _fire_times(
            project, after=require_utc(last_end, "last_end"), until=now, cap=limit + 1
        )
        if len(ends) > limit:
            warnings.warn(
                f"{project.name}: more than {limit} windows are due since "
                f"{utc_stamp(last_end)}; "
                f"running the oldest {limit} now and the rest in the next rounds",
                stacklevel=2,
            )
            ends = ends[:limit]
    width = timedelta(seconds=project.monitoring.window_seconds)
    return [(end - width, end) for end in ends]


def latest_fire_time(project: Project, now: datetime) -> datetime:
    """The project's last fire time at or before `now`."""
    now = require_utc(now, "now")
    before = next(_cron_times(project, now, backwards=True))  # strictly before now
    at_or_after = next(_cron_times(project, before))
    return at_or_after if at_or_after <= now else before


def next_fire_time(project: Project, after: datetime) -> datetime:
    """The project's first fire time strictly after `after`."""
    return next(_cron_times(project, require_utc(after, "after")))


def _fire_times(project: Project, *, after: datetime, until: datetime, cap: int) -> list[datetime]:
    """Fire times t with after < t <= until, oldest first, at most `cap` of them."""
    return list(islice(takewhile(lambda t: t <= until, _cron_times(project, after)), cap))


def _cron_times(
    project: Project, start: datetime, *, backwards: bool = False
) -> Iterator[datetime]:
    """The project's fire times strictly after `start` (or before it, going backwards), in UTC."""
    expression = _schedule(project)
    cron = croniter(expression, start)
    step = cron.get_prev if backwards else cron.get_next
    while True:
        try:
            moment = step(datetime)
        except CroniterBadDateError as exc:
            raise ProjectConfigError(
                f"{project.label}: monitoring.schedule '{expression}' never fires "
                "(e.g. a day that does not exist in the month); use a date that occurs, "
                "such as '0 0 28 2 *'"
            ) from exc
        yield moment.astimezone(timezone.utc)


def _schedule(project: Project) -> str:
    """The project's cron expression, or a ProjectConfigError saying how to set one."""
    expression = project.monitoring.schedule
    if expression is None:
        raise ProjectConfigError(
            f"{project.label}: monitoring.schedule is not set, so there is nothing to "
            "schedule; add a cron expression in UTC, e.g. monitoring: {schedule: '0 * * * *'}"
        )
    return expression


# --- state -----------------------------------------------------------------------------------


def resolve_state_dir(configured: str | Path | None = None) -> Path:
    """The state folder: `configured`, else MM_SCHEDULE_STATE, else ./mm_schedule_state."""
    folder = configured or os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR
    return Path(folder).expanduser().resolve()


def read_last_end(name: str, folder: Path) -> datetime | None:
    """The end of project `name`'s last completed window, or None if it never ran."""
    path = folder / f"{name}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MmError(f"{path}: cannot read the schedule state ({exc})") from exc
    try:
        end = datetime.fromisoformat(json.loads(text)["last_end"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MmError(
            f"{path}: the schedule state is not valid JSON with a 'last_end' timestamp; "
            "delete the file to restart from the latest window"
        ) from exc
    return require_utc(end, "last_end") if end.tzinfo else end.replace(tzinfo=timezone.utc)


def write_last_end(name: str, end: datetime, folder: Path) -> None:
    """Record `end` as project `name`'s last completed window end, atomically."""
    path = folder / f"{name}.json"
    payload = json.dumps({"project": name, "last_end": require_utc(end, "end").isoformat()})
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _try_lock(handle: IO[str]) -> bool:
    """Take the exclusive lock on `handle` without waiting; False if another process has it."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# --- running ---------------------------------------------------------------------------------


def run_due(
    projects: Sequence[Project],
    *,
    now: datetime | None = None,
    job: DriftJob | None = None,
    state_dir: str | Path | None = None,
    echo: Callable[[str], Any] = print,
) -> list[WindowResult]:
    """Run every due window of every project, oldest first, recording each as it completes.

    A window whose job raises `MmError` is recorded as an error; that project's state stays
    before it (the next round retries it) and its later windows wait. Other projects go on.
    A project locked by another scheduler is skipped this round.
    """
    now = require_utc(now or utc_now(), "now")
    for project in projects:
        _schedule(project)  # every project is checked before any job runs
    folder = _state_folder(state_dir)
    results: list[WindowResult] = []
    for project in projects:
        results.extend(_run_project(project, now, job or _default_job, folder, echo))
    return results


def serve(
    projects: Sequence[Project],
    *,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], Any] = time.sleep,
    job: DriftJob | None = None,
    state_dir: str | Path | None = None,
    echo: Callable[[str], Any] = print,
    max_iterations: int | None = None,
) -> None:
    """Run due windows, sleep until the next fire time of any project, repeat.

    Runs until interrupted (KeyboardInterrupt propagates; the state is always consistent)
    or for `max_iterations` rounds.
    """
    if not projects:
        raise ValueError("The 'projects' parameter of serve must name at least one project.")
    rounds = 0
    while max_iterations is None or rounds < max_iterations:
        now = require_utc(clock(), "clock()")
        run_due(projects, now=now, job=job, state_dir=state_dir, echo=echo)
        rounds += 1
        if max_iterations is not None and rounds >= max_iterations:
            break
        wake = min(next_fire_time(project, now) for project in projects)
        echo(f"next fire time {utc_stamp(wake)}")
        # measured after the jobs ran: the time they took is not slept again
        sleep(max((wake - require_utc(clock(), "clock()")).total_seconds(), 0.0))


def exit_code(results: Sequence[WindowResult]) -> int:
    """The command's exit code: the first error's code, else the first drift's, else the
    first not-enough-data code, else 0 (the same codes as `mm drift`)."""
    for status in ("error", "drift", "not_enough_data"):
        for result in results:
            if result.status == status:
                return result.exit_code
    return 0


def _run_project(
    project: Project,
    now: datetime,
    job: DriftJob,
    folder: Path,
    echo: Callable[[str], Any],
) -> list[WindowResult]:
    """Run one project's due windows under its lock; stop at the first failed window."""
    lock_path = folder / f"{project.name}.lock"
    with lock_path.open("a") as handle:  # closing the file releases the lock
        if not _try_lock(handle):
            echo(f"{project.name}: skipped this round, another scheduler holds {lock_path}")
            return []
        results: list[WindowResult] = []
        # read under the lock: another scheduler may have just advanced it
        last_end = read_last_end(project.name, folder)
        windows = due_windows(project, now, last_end)
        if last_end is None and windows:
            # the first window: record the fire time before it, so that a failure leaves
            # this window due (retried next round) rather than forgotten
            before = next(_cron_times(project, windows[0][1], backwards=True))
            write_last_end(project.name, before, folder)
        for start, end in windows:
            result = _run_window(project, start, end, job)
            results.append(result)
            echo(_describe(result))
            if result.status == "error":
                break
            write_last_end(project.name, end, folder)
        return results


def _run_window(project: Project, start: datetime, end: datetime, job: DriftJob) -> WindowResult:
    try:
        outcome = job(project, start=start, end=end)
    except MmError as exc:
        code = getattr(exc, "exit_code", 2)
        return WindowResult(project.name, start, end, "error", code, error=str(exc))
    except Exception as exc:  # a bug must not stop the schedule of every other project
        message = f"unexpected {type(exc).__name__}: {exc}"
        return WindowResult(project.name, start, end, "error", 1, error=message)
    return WindowResult(
        project.name, start, end, outcome.status, outcome.exit_code, run_id=outcome.run_id
    )


def _default_job(project: Project, *, start: datetime, end: datetime) -> Any:
    from mm_platform.monitoring.job import run_drift
    from mm_platform.monitoring.worker import Local

    # a schedule runs window after window: Evidently is imported in this process once (when
    # the first job runs), not once per window by a worker process
    return run_drift(project, start=start, end=end, evidently=Local())


def _describe(result: WindowResult) -> str:
    """One line for a window: what ran, and how it ended."""
    head = f"{result.project}: window {utc_stamp(result.start)} to {utc_stamp(result.end)}"
    if result.status == "error":
        reason = " ".join((result.error or "").split())
        return f"{head} failed: {reason}; it is retried next round"
    return f"{head}: {result.status} (run {result.run_id})"


def _state_folder(configured: str | Path | None) -> Path:
    folder = resolve_state_dir(configured)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MmError(
            f"{folder}: cannot create the schedule state folder ({exc}); "
            f"set {ENV_STATE_DIR} to a writable folder"
        ) from exc
    return folder
