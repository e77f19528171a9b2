"""Monitoring commands: `mm drift`, `mm drift-ui`, `mm schedule`."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

import click

from mm_platform.cli.options import moment
from mm_platform.cli.render import print_drift
from mm_platform.errors import ExitCode, MmError
from mm_platform.tracking.tags import CHAMPION


@click.command()
@click.argument("project")
@click.option(
    "--window",
    default=None,
    help="Window ending now, e.g. 6h, 1d (default: the project's monitoring.window).",
)
@click.option("--start", default=None, help="Window start (ISO time, UTC unless it says).")
@click.option("--end", default=None, help="Window end (ISO time, exclusive); default now.")
@click.option(
    "--current",
    "current_file",
    default=None,
    help="Current data instead of the prediction log: a CSV/Parquet file or Parquet folder "
    "(on Spark also a table name).",
)
@click.option(
    "--reference",
    default=None,
    help="Reference data instead of the sample logged with the version: a CSV/Parquet file "
    "or Parquet folder (on Spark also a table name); default: monitoring.reference.",
)
@click.option(
    "--engine",
    default=None,
    callback=lambda _ctx, _param, value: _engine(value),
    metavar="[pandas|spark]",
    help="Where drift is computed (same scores); default (or ''): monitoring.engine.",
)
@click.option("--alias", default=CHAMPION, show_default=True, help="Version to monitor.")
@click.option("--version", default=None, help="A version number instead of --alias.")
@click.option(
    "--ok-if-empty",
    is_flag=True,
    help="Exit 0, not 6, when the window has too few rows (`mlflow run . -e drift` passes "
    "it, so its run ends FINISHED; the run's mm.status tag says not_enough_data).",
)
def drift(
    project: str, window: str | None, start: str | None, end: str | None,
    current_file: str | None, reference: str | None, engine: str | None, alias: str,
    version: str | None, ok_if_empty: bool,
) -> None:  # fmt: skip
    """Drift of PROJECT's production data against its model's reference sample (Evidently).

    Exit status: 0 no drift, 5 drift (or a data-quality failure) found, 6 not enough data
    (0 with --ok-if-empty), 2 bad input, 3 tracking store unusable. The run goes to
    experiment <project>-monitoring.
    """
    from mm_platform.project.config import load_project

    if window is not None and start is not None:
        raise click.UsageError("give --window or --start/--end, not both")
    if current_file is not None and (window or start or end):
        raise click.UsageError("--current replaces the window; drop --window/--start/--end")
    loaded = load_project(project)
    start_at: datetime | None = None
    end_at: datetime | None = None
    if current_file is None:
        start_at, end_at = _window(loaded.monitoring.window_seconds, window, start, end)
    on_spark = (engine or loaded.monitoring.engine) == "spark"
    click.echo(f"computing drift{' on Spark' if on_spark else ''} (loading Evidently)...", err=True)
    from mm_platform.monitoring.worker import Worker

    # Evidently starts loading in its own process before this one imports the job's stack
    worker = Worker() if not on_spark and not loaded.monitoring.workspace else None
    from mm_platform.monitoring.job import run_drift

    outcome = run_drift(
        loaded, start=start_at, end=end_at, current_path=current_file or None, alias=alias,
        version=version, engine=engine, reference=reference or None, evidently=worker,
    )  # fmt: skip
    print_drift(outcome)
    sys.exit(0 if ok_if_empty and outcome.status == "not_enough_data" else outcome.exit_code)


def _engine(value: str | None) -> str | None:
    """`--engine`: pandas or spark; empty (an MLproject run's default) keeps the project's."""
    if not value:
        return None
    if value not in ("pandas", "spark"):
        raise click.BadParameter(f"'{value}' is not one of pandas, spark")
    return value


def _window(
    default_seconds: float, window: str | None, start: str | None, end: str | None
) -> tuple[datetime, datetime]:
    """(start, end) in UTC from --start/--end, or --window (else the project's) ending at
    --end or now."""
    from mm_platform.clock import utc_now
    from mm_platform.project.config import parse_duration

    end_at = moment(end) or utc_now()
    start_at = moment(start)
    if start_at is None:
        try:
            seconds = parse_duration(window) if window else default_seconds
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--window") from exc
        start_at = end_at - timedelta(seconds=seconds)
    return start_at, end_at


@click.command("drift-ui")
@click.argument("project")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def drift_ui(project: str, host: str, port: int) -> None:
    """Serve PROJECT's Evidently workspace (monitoring.workspace): drift over time.

    Runs `evidently ui` with DO_NOT_TRACK=1, so the UI sends no usage telemetry.
    """
    import os

    from mm_platform.data.tables import require_path
    from mm_platform.errors import ProjectConfigError
    from mm_platform.project.config import load_project

    loaded = load_project(project)
    folder = loaded.monitoring.workspace
    if not folder:
        raise ProjectConfigError(
            f"{loaded.label}: monitoring.workspace is not set; add e.g. "
            "monitoring: {workspace: evidently_workspace} and run mm drift again"
        )
    require_path(folder, f"no Evidently workspace yet; run mm drift {project} first", folder=True)
    _require_free_port(host, port)
    command = [str(Path(sys.executable).with_name("evidently")), "ui", "--workspace", folder,
               "--host", host, "--port", str(port)]  # fmt: skip
    click.echo(f"Evidently UI for {loaded.name}: http://{host}:{port} (Ctrl-C stops it)")
    sys.exit(_run_child(command, {**os.environ, "DO_NOT_TRACK": "1"}))


def _require_free_port(host: str, port: int) -> None:
    from mm_platform.errors import TrackingError
    from mm_platform.tracking.server import check_port_free

    try:
        check_port_free(host, port)
    except TrackingError as exc:  # the Evidently UI is no tracking server: bad input, exit 2
        raise MmError(f"port {port} on {host} is already in use; pick another with --port") from exc


def _run_child(command: list[str], env: dict[str, str]) -> int:
    """Run `command` in its own process group until it exits, Ctrl-C or SIGTERM (`kill`
    stops the child too, not just this process); its exit code, 0 when stopped."""
    import signal
    import subprocess

    from mm_platform.tracking.server import raise_keyboard_interrupt, stop_process_group

    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    child = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        return child.wait()
    except KeyboardInterrupt:
        stop_process_group(child)
        return 0


@click.command()
@click.argument("projects", nargs=-1, required=True)
@click.option("--once", is_flag=True, help="Run every due window, then exit (for cron/systemd).")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="Where the last completed window per project is kept "
              "(default: MM_SCHEDULE_STATE or ./mm_schedule_state).")  # fmt: skip
def schedule(projects: tuple[str, ...], once: bool, state_dir: Path | None) -> None:
    """Run each project's drift job on the cron schedule in its project file.

    A restart catches up on windows missed while it was down; a completed window never runs
    twice. With --once the exit status is the first failed window's, else 5 if a window
    drifted, else 6 if a window had too few rows, else 0.
    """
    from mm_platform.clock import utc_now, utc_stamp
    from mm_platform.monitoring import schedule as scheduler
    from mm_platform.project.config import load_project

    loaded = [load_project(p) for p in projects]
    if once:  # Evidently is imported only if a window is due
        now = utc_now()
        results = scheduler.run_due(loaded, now=now, state_dir=state_dir, echo=click.echo)
        if not results:
            upcoming = min(scheduler.next_fire_time(p, now) for p in loaded)
            click.echo(f"nothing due; next window ends {utc_stamp(upcoming)}")
        sys.exit(scheduler.exit_code(results))
    click.echo("loading Evidently (once for the whole schedule)...", err=True)
    import mm_platform.monitoring.drift  # noqa: F401  (import Evidently once, up front)

    try:
        scheduler.serve(loaded, state_dir=state_dir, echo=click.echo)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
        sys.exit(ExitCode.STOPPED)


COMMANDS = (drift, drift_ui, schedule)
