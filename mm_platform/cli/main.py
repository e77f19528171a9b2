"""The `mm` command: parse arguments, load the project, call one library function, render.

Nothing heavy is imported at module level, so `mm --help` stays fast; each command imports
what it needs when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mm_platform import __version__
from mm_platform.errors import MmError

if TYPE_CHECKING:
    from mm_platform.training.search import TrainResult


class _Group(click.Group):
    """Turns the project's own errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MmError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mm")
def main() -> None:
    """Manage scikit-learn models on MLflow: train, compress, serve, fine-tune, promote,
    and monitor drift with Evidently.

    The tracking store is MLFLOW_TRACKING_URI, or MLflow's default sqlite:///mlflow.db in
    the working directory.
    """


@contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
        disable=not console.is_terminal,
    ) as bar:
        tasks: dict[str, Any] = {}

        def report(description: str, done: int, total: int) -> None:
            name = description.split(":")[0]
            if name not in tasks:
                tasks[name] = bar.add_task(description, total=total)
            bar.update(tasks[name], description=description, completed=done, total=total)

        yield report


def _retry_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--retry-for",
        default=None,
        metavar="DURATION",
        help="How long to wait for a tracking server that goes away while logging, from the "
        "first failure: e.g. 90 (seconds), 30s, 5m, or 0 not to wait (default: "
        "MM_TRACKING_RETRY, else 2m).",
    )(function)


def _retry_seconds(value: str | None) -> float:
    import os

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


@main.command()
@click.argument("project")
@_retry_option
def train(project: str, retry_for: str | None) -> None:
    """Search PROJECT's candidates by CV, refit the best and register it.

    PROJECT is a project file (projects/diabetes.yaml) or the name of one in ./projects.
    A tracking server that goes away while the results are logged is waited for
    (--retry-for); if it stays away, the trained model is kept in ./mm_pending
    (MM_PENDING_DIR) for `mm relog`.
    """
    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project

    budget = _retry_seconds(retry_for)
    loaded = load_project(project)
    with _progress_bar() as report:
        result = train_project(loaded, progress=report, retry_for=budget)
    _print_train_result(result)


@main.command()
@click.argument("folder")
@_retry_option
def relog(folder: str, retry_for: str | None) -> None:
    """Log a trained model `mm train` kept in FOLDER when the tracking server was gone.

    Runs and versions it wrote before the server went away are completed, not repeated;
    FOLDER is removed once everything is logged.
    """
    from mm_platform.training.search import relog as relog_record

    result = relog_record(folder, retry_for=_retry_seconds(retry_for))
    _print_train_result(result)
    click.echo(f"removed {folder}")


def _print_train_result(result: TrainResult) -> None:
    metric, value = result.key_metric
    click.echo(
        f"{result.project}: {result.candidate} ({result.n_trials} configuration"
        + ("s" if result.n_trials != 1 else "")
        + (f", {result.n_failed} failed" if result.n_failed else "")
        + f"), cv_{result.selection_metric}_mean={result.cv_score:.4g}, {metric}={value:.4g}"
    )
    given = (
        f"as @{result.alias}"
        if result.alias
        else "without an alias (@challenger is on a newer version)"
    )
    click.echo(
        f"registered {result.project} version {result.version} {given} "
        f"(run {result.run_id}, store {result.tracking_uri})"
    )


@main.command()
@click.argument("project")
@click.option(
    "--model",
    "model_ref",
    default=None,
    metavar="NAME@ALIAS",
    help="Compress this alias of the project's model (default: NAME@champion).",
)
@click.option("--version", default=None, help="Compress this registered version instead.")
def compress(project: str, model_ref: str | None, version: str | None) -> None:
    """Prune, quantize and distill PROJECT's champion; log and register every variant."""
    from mm_platform.compression.job import compress_project, parse_model_ref
    from mm_platform.project.config import load_project

    loaded = load_project(project)
    if model_ref and version:
        raise click.UsageError("give --model or --version, not both")
    alias = parse_model_ref(model_ref, loaded) if model_ref else None  # "" from MLproject: none
    with _progress_bar() as report:
        result = compress_project(loaded, alias=alias, version=version, progress=report)
    _print_compression(result)


def _print_compression(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from mm_platform.compression.job import summary_rows

    primary = result.primary
    table = Table(
        title=f"mm compress: {result.project} version {result.parent_version} "
        f"({result.parent_metrics['size_bytes']:,.0f} bytes, "
        f"{primary} = {result.parent_metrics[primary]:.4g})"
    )
    for column in ("method", "variant", "size", "ratio", "speedup", primary, "loss", "version"):
        table.add_column(column, justify="left" if column in ("method", "variant") else "right")
    skipped = []
    for row in summary_rows(result.variants, primary):
        if row.get("note"):
            skipped.append(row)
            continue
        table.add_row(
            row["method"], row["variant"], f"{row['size_bytes']:,.0f}",
            f"{row['compression_ratio']:.1f}x", f"{row['speedup']:.1f}x",
            f"{row[primary]:.4g}", f"{row['relative_loss']:+.2%}", str(row["version"]),
        )  # fmt: skip
    console = Console(width=max(Console().width, 110))
    console.print(table)
    for row in skipped:
        console.print(f"{row['variant']}: {row['note']}")


@main.command()
@click.argument("project")
@click.option("--alias", default="champion", show_default=True, help="Serve this alias.")
@click.option("--version", default=None, help="Serve this registered version instead.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--max-rows", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Rows one request may hold; more is answered 413.")  # fmt: skip
@click.option("--max-bytes", default=16 * 1024 * 1024, show_default=True,
              type=click.IntRange(min=1024),
              help="Bytes one request body may hold; more is answered 413.")  # fmt: skip
def serve(
    project: str, alias: str, version: str | None, host: str, port: int, max_rows: int,
    max_bytes: int,
) -> None:  # fmt: skip
    """Serve PROJECT's champion with MLflow's scoring server, logging every prediction."""
    import tempfile
    from pathlib import Path as _Path

    from mm_platform import tracking
    from mm_platform.project.config import load_project
    from mm_platform.serving.batch import target_name
    from mm_platform.serving.launcher import build_monitored_model, run_server
    from mm_platform.serving.predlog.writer import log_root

    loaded = load_project(project)
    tracking.connect()
    chosen = tracking.resolve_version(loaded.name, alias=alias, version=version)
    root = log_root(loaded.serving.prediction_log)
    with tempfile.TemporaryDirectory(prefix="mm-serve-") as tmp:
        model_dir = build_monitored_model(
            loaded.name, str(chosen.version), root, _Path(tmp) / "model",
            ids=tuple(loaded.features.drop), ignored=(target_name(loaded),),
        )  # fmt: skip
        run_server(
            model_dir, host=host, port=port, echo=click.echo, max_rows=max_rows,
            max_bytes=max_bytes,
            banner=f"serving {loaded.name} version {chosen.version}, logging to {root}",
        )  # fmt: skip


@main.command()
@click.argument("project")
@click.argument("input_file", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--alias", default="champion", show_default=True, help="Score with this alias.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Where to write predictions (default: INPUT.predictions.csv).")  # fmt: skip
def predict(project: str, input_file: Path, alias: str, output: Path | None) -> None:
    """Score a CSV or Parquet file in batch; every row goes to the prediction log.

    The file may also hold the project's dropped columns (ids such as customer_id), which
    are carried into the output and the log, and the target, which is ignored.
    """
    from mm_platform import tracking
    from mm_platform.project.config import load_project
    from mm_platform.serving.batch import predict_file
    from mm_platform.serving.predlog.writer import log_root

    loaded = load_project(project)
    tracking.connect()
    chosen = tracking.resolve_version(loaded.name, alias=alias)
    model = tracking.load_pyfunc(tracking.verify_model_files(loaded.name, str(chosen.version)))
    result = predict_file(
        loaded, input_file, version=str(chosen.version), model=model,
        schema=tracking.model_input_schema(model),
        log_root=log_root(loaded.serving.prediction_log),
        output=output,
    )  # fmt: skip
    click.echo(
        f"scored {result.rows} rows with {loaded.name} version {result.version}; "
        f"predictions and request ids in {result.output}; logged to {result.log_root}"
    )


@main.command()
@click.argument("project")
@click.argument("labels_file", metavar="FILE", type=click.Path(path_type=Path))
def labels(project: str, labels_file: Path) -> None:
    """Ingest ground truth (columns request_id, label) for logged predictions."""
    from mm_platform.project.config import load_project
    from mm_platform.serving.batch import ingest_labels
    from mm_platform.serving.predlog.writer import log_root

    loaded = load_project(project)
    result = ingest_labels(loaded, labels_file, log_root=log_root(loaded.serving.prediction_log))
    click.echo(f"ingested {result.ingested} labels for {loaded.name}")
    if result.missing:
        click.echo(f"{result.missing} rows had no label value and were not stored")
    if result.duplicates:
        click.echo(f"{result.duplicates} duplicate request ids: the last label of each was kept")
    if result.unknown:
        click.echo(
            f"{result.unknown} labels name request ids not in the prediction log and were not "
            f"stored (e.g. {', '.join(result.unknown_examples)})"
        )


def _since(value: str | None) -> Any:
    if value is None:
        return None
    from datetime import datetime, timezone

    try:
        stamp = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO date or time, e.g. 2026-11-29") from exc
    return stamp.astimezone(timezone.utc) if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


@main.command()
@click.argument("project")
@click.option(
    "--data",
    "data_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled CSV/Parquet with the model's columns and the target.",
)
@click.option(
    "--from-production", is_flag=True, help="Use logged predictions joined with their labels."
)
@click.option("--since", default=None, help="With --from-production: rows from this UTC time on.")
@click.option("--lam", type=float, default=None, help="λ of λ‖θ − θ₀‖² (default: the project's).")
def finetune(
    project: str, data_file: Path | None, from_production: bool, since: str | None,
    lam: float | None,
) -> None:  # fmt: skip
    """Fine-tune PROJECT's champion on new data, near its own parameters; register a challenger."""
    from mm_platform.lifecycle.finetuning import finetune_project
    from mm_platform.project.config import load_project
    from mm_platform.serving.predlog.writer import log_root

    if (data_file is None) == (not from_production):
        raise click.UsageError("give exactly one of --data FILE and --from-production")
    if since is not None and not from_production:
        raise click.UsageError("--since goes with --from-production")
    loaded = load_project(project)
    result = finetune_project(
        loaded, data_path=data_file, since=_since(since), lam=lam,
        log_root=log_root(loaded.serving.prediction_log),
    )  # fmt: skip
    metric, m = loaded.selection.metric, result.metrics
    key = f"holdout_{metric}"
    click.echo(
        f"fine-tuned {result.project} version {result.parent_version} on {result.n_rows} rows "
        f"(lambda={result.lam:g}): new-data {metric} {m['parent_new_' + metric]:.4g} -> "
        f"{m['new_' + metric]:.4g}, {key} {m['parent_' + key]:.4g} -> {m[key]:.4g} "
        f"(forgetting {m['forgetting']:+.2%})"
    )
    click.echo(f"registered {result.project} version {result.version} as @challenger")


@main.command()
@click.argument("project")
def promote(project: str) -> None:
    """Promote PROJECT's challenger if it passes the gate (exit 0), else refuse (exit 4)."""
    from mm_platform.lifecycle.promotion import promote_project
    from mm_platform.project.config import load_project
    from mm_platform.serving.predlog.writer import log_root

    loaded = load_project(project)
    result = promote_project(loaded, log_root=log_root(loaded.serving.prediction_log))
    metric = loaded.selection.metric
    click.echo(
        f"{result.project}: champion v{result.champion} {metric}="
        f"{result.champion_metrics[metric]:.4g}, challenger v{result.challenger} "
        f"{metric}={result.challenger_metrics[metric]:.4g} on {result.n_holdout} holdout + "
        f"{result.n_production} labelled production rows"
    )
    if result.promoted:
        click.echo(f"promoted: @champion -> v{result.challenger}, @previous -> v{result.champion}")
        return
    click.echo("refused: " + "; ".join(result.reasons))
    sys.exit(4)


@main.command()
@click.argument("project")
def rollback(project: str) -> None:
    """Move PROJECT's champion back to the previous champion."""
    from mm_platform.lifecycle.promotion import rollback_project
    from mm_platform.project.config import load_project

    current, previous = rollback_project(load_project(project))
    click.echo(f"@champion -> v{previous}" + (f", @previous -> v{current}" if current else ""))


@main.command()
@click.argument("project")
def lineage(project: str) -> None:
    """Print the tree of PROJECT's registered versions: trained -> compressed -> ..."""
    from mm_platform import tracking
    from mm_platform.project.config import load_project

    loaded = load_project(project)
    tracking.connect()
    _print_lineage(loaded.name, loaded.selection.metric)


def _print_lineage(name: str, metric: str) -> None:
    from rich.console import Console
    from rich.tree import Tree

    from mm_platform import tracking
    from mm_platform.lifecycle.lineage import build_tree

    roots = build_tree(tracking.list_versions(name))
    key = f"holdout_{metric}"
    tree = Tree(f"[bold]{name}[/bold]  (key metric {key})")

    def add(branch: Tree, node: Any) -> None:
        parts = [f"v{node.version}", node.run_type]
        if node.label:
            parts.append(node.label)
        if key in node.metrics:
            parts.append(f"{key}={node.metrics[key]:.4g}")
        if "size_bytes" in node.metrics:
            parts.append(f"{node.metrics['size_bytes']:,.0f} B")
        if node.aliases:
            parts.append(" ".join(f"[green]@{a}[/green]" for a in node.aliases))
        child = branch.add("  ".join(parts))
        for sub in node.children:
            add(child, sub)

    for root in roots:
        add(tree, root)
    Console(width=max(Console().width, 110)).print(tree)


@main.command()
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
    type=click.Path(path_type=Path),
    default=None,
    help="CSV/Parquet file of current data instead of the prediction log.",
)
@click.option("--alias", default="champion", show_default=True, help="Version to monitor.")
@click.option("--version", default=None, help="A version number instead of --alias.")
def drift(
    project: str, window: str | None, start: str | None, end: str | None,
    current_file: Path | None, alias: str, version: str | None,
) -> None:  # fmt: skip
    """Drift of PROJECT's production data against its model's reference sample (Evidently).

    Exit status: 0 no drift, 5 drift (or a data-quality failure) found, 6 not enough data,
    2 bad input, 3 tracking store unusable. The run goes to experiment <project>-monitoring.
    """
    from datetime import datetime, timedelta, timezone

    from mm_platform.project.config import load_project, parse_duration

    if window is not None and start is not None:
        raise click.UsageError("give --window or --start/--end, not both")
    if current_file is not None and (window or start or end):
        raise click.UsageError("--current replaces the window; drop --window/--start/--end")
    loaded = load_project(project)
    end_at = _since(end) or datetime.now(timezone.utc)
    start_at = _since(start)
    if current_file is None and start_at is None:
        try:
            seconds = parse_duration(window) if window else loaded.monitoring.window_seconds
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--window") from exc
        start_at = end_at - timedelta(seconds=seconds)
    if current_file is not None:
        start_at = end_at = None
    click.echo("computing drift (loading Evidently)...", err=True)
    from mm_platform.monitoring.job import run_drift

    outcome = run_drift(
        loaded, start=start_at, end=end_at, current_path=current_file, alias=alias,
        version=version,
    )  # fmt: skip
    _print_drift(outcome)
    sys.exit(outcome.exit_code)


def _print_drift(outcome: Any) -> None:
    window = (
        f"{outcome.start:%Y-%m-%d %H:%M}..{outcome.end:%Y-%m-%d %H:%M} UTC"
        if outcome.start and outcome.end
        else "file"
    )
    click.echo(f"{outcome.project} v{outcome.version}, window {window}: {outcome.n_current} rows")
    label = {"no_drift": "no drift", "drift": "DRIFT", "not_enough_data": "not enough data"}
    click.echo(f"  {label[outcome.status]}: {outcome.message}")
    if outcome.report_uri:
        click.echo(f"  report: {outcome.report_uri}")
    for decision in outcome.decisions:
        click.echo(f"  {decision}")
    click.echo(f"  run: {outcome.run_id} (experiment {outcome.project}-monitoring)")


@main.command("drift-ui")
@click.argument("project")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def drift_ui(project: str, host: str, port: int) -> None:
    """Serve PROJECT's Evidently workspace (monitoring.workspace): drift over time.

    Runs `evidently ui` with DO_NOT_TRACK=1, so the UI sends no usage telemetry.
    """
    import os
    import subprocess

    from mm_platform.errors import DataError, ProjectConfigError
    from mm_platform.project.config import load_project

    loaded = load_project(project)
    folder = loaded.monitoring.workspace
    if not folder:
        raise ProjectConfigError(
            f"{loaded.label}: monitoring.workspace is not set; add e.g. "
            "monitoring: {workspace: evidently_workspace} and run mm drift again"
        )
    if not Path(folder).is_dir():
        raise DataError(f"{folder}: no Evidently workspace yet; run mm drift {project} first")
    import signal
    import socket

    with socket.socket() as probe:
        if probe.connect_ex((host, port)) == 0:
            raise MmError(f"port {port} on {host} is already in use; pick another with --port")
    command = [str(Path(sys.executable).with_name("evidently")), "ui", "--workspace", folder,
               "--host", host, "--port", str(port)]  # fmt: skip
    click.echo(f"Evidently UI for {loaded.name}: http://{host}:{port} (Ctrl-C stops it)")

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `kill` stops the UI too, not just this process
    ui = subprocess.Popen(command, env={**os.environ, "DO_NOT_TRACK": "1"})
    try:
        code = ui.wait()
    except KeyboardInterrupt:
        ui.terminate()
        try:
            ui.wait(20)
        except subprocess.TimeoutExpired:
            ui.kill()
        code = 0
    sys.exit(code)


@main.command()
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
    from datetime import datetime, timezone

    from mm_platform.monitoring import schedule as scheduler
    from mm_platform.project.config import load_project

    loaded = [load_project(p) for p in projects]
    if once:  # Evidently is imported only if a window is due
        now = datetime.now(timezone.utc)
        results = scheduler.run_due(loaded, now=now, state_dir=state_dir, echo=click.echo)
        if not results:
            upcoming = min(scheduler.next_fire_time(p, now) for p in loaded)
            click.echo(f"nothing due; next window ends {upcoming:%Y-%m-%dT%H:%MZ}")
        sys.exit(scheduler.exit_code(results))
    click.echo("loading Evidently (once for the whole schedule)...", err=True)
    import mm_platform.monitoring.drift  # noqa: F401  (import Evidently once, up front)

    try:
        scheduler.serve(loaded, state_dir=state_dir, echo=click.echo)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
        sys.exit(1)


@main.command()
@click.option(
    "--projects",
    "folder",
    default="projects",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder of project files to train.",
)
def demo(folder: Path) -> None:
    """Train every project in the projects folder and show what was registered."""
    from rich.console import Console
    from rich.table import Table

    from mm_platform.cli.demo import run_demo

    with _progress_bar() as report:
        outcome = run_demo(folder, progress=report)
    results = outcome.trained
    table = Table(title="mm demo: trained and registered")
    for column in ("project", "estimator", "holdout metric", "version", "alias"):
        table.add_column(column)
    for r in results:
        metric, value = r.key_metric
        table.add_row(r.project, r.candidate, f"{metric} = {value:.4g}", r.version, r.alias)
    console = Console()
    console.print(table)
    for compressed in outcome.compressed:
        _print_compression(compressed)
    if outcome.loop is not None:
        _print_loop(outcome.loop)
    uri = results[0].tracking_uri if results else ""
    console.print(f"store: {uri}")
    console.print("compare the runs in the MLflow UI:  mm ui")


def _print_loop(loop: Any) -> None:
    tuned, decision = loop.finetune, loop.promotion
    click.echo(
        f"\nproduction loop ({loop.project}): served v{loop.served_version} with mlflow models "
        f"serve, {loop.n_requests} requests / {loop.n_rows} rows logged, inputs and truth "
        f"shifted after row {loop.shifted_from}"
    )
    for name, outcome in (("before", loop.drift_before), ("after", loop.drift_after)):
        if outcome is not None:
            click.echo(f"drift {name} the shift ({outcome.n_current} rows of "
                       f"v{outcome.version}): {outcome.status}: {outcome.message}")  # fmt: skip
            if outcome.report_uri:
                click.echo(f"  HTML report: {outcome.report_uri}")
    click.echo(
        f"labels: {loop.labels.ingested} ingested, {loop.labels.unknown} unknown; fine-tuned "
        f"v{tuned.parent_version} on {tuned.n_rows} labelled production rows -> "
        f"v{tuned.version} @challenger (lambda={tuned.lam:g}, forgetting on the original "
        f"holdout {tuned.metrics['forgetting']:+.2%})"
    )
    verdict = (
        f"promoted v{decision.challenger} to @champion"
        if decision.promoted
        else "refused: " + "; ".join(decision.reasons)
    )
    click.echo(
        f"promotion gate on {decision.n_holdout} holdout + {decision.n_production} production "
        f"rows: {verdict}"
    )
    _print_lineage(loop.project, loop.metric)


@main.command()
@click.option(
    "--backend-store-uri",
    envvar="MM_BACKEND_STORE_URI",
    default=None,
    help="Database store, e.g. postgresql://user@host:5432/mlflow "
    "(default: MM_BACKEND_STORE_URI, else sqlite:///mlflow.db here).",
)
@click.option(
    "--artifacts-destination",
    envvar="MM_ARTIFACTS_DESTINATION",
    default=None,
    help="Folder or s3:// location the server keeps artifacts in (default ./mlartifacts).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--jobs", is_flag=True, help="Turn MLflow's background job execution on.")
@click.option("--allowed-hosts", default=None, help="Passed to mlflow server (non-local hosts).")
@click.option(
    "--auth",
    is_flag=True,
    help="MLflow's basic-auth app; the first start needs MLFLOW_AUTH_ADMIN_PASSWORD.",
)
def server(
    backend_store_uri: str | None, artifacts_destination: str | None, host: str, port: int,
    jobs: bool, allowed_hosts: str | None, auth: bool,
) -> None:  # fmt: skip
    """Start an MLflow tracking server: database store, proxied artifacts, jobs off.

    Point every mm command at it with MLFLOW_TRACKING_URI=http://HOST:PORT.
    """
    from mm_platform.tracking.server import run_tracking_server

    uri = backend_store_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    destination = artifacts_destination or str(Path.cwd() / "mlartifacts")
    run_tracking_server(
        backend_store_uri=uri, artifacts_destination=destination, host=host, port=port,
        jobs=jobs, allowed_hosts=allowed_hosts, echo=click.echo, auth=auth,
    )  # fmt: skip


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--project", default=None, help="Print the runs table of this project's experiment.")
def ui(host: str, port: int, project: str | None) -> None:
    """Start the MLflow UI on the current store (job execution off) and print its URL."""
    from mm_platform.tracking.server import run_ui

    run_ui(host=host, port=port, project=project, echo=click.echo)


@main.group(name="log")
def log_group() -> None:
    """Look after the prediction log: its state, and compaction of its small files."""


@log_group.command(name="compact")
@click.argument("project")
@click.option("--before", default=None, metavar="DATE",
              help="Only days before this UTC date, e.g. 2026-11-29 (default: all).")  # fmt: skip
def log_compact(project: str, before: str | None) -> None:
    """Merge each day's small prediction-log files of PROJECT into one file per day."""
    from datetime import date

    from mm_platform.project.config import load_project
    from mm_platform.serving.predlog.writer import compact, log_root

    if before is not None:
        try:
            date.fromisoformat(before)
        except ValueError as exc:
            raise click.BadParameter(f"{before!r} is not a date, e.g. 2026-11-29") from exc
    loaded = load_project(project)
    root = log_root(loaded.serving.prediction_log)
    try:
        result = compact(root, loaded.name, before=before)
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{loaded.name}: {result.files_before} files -> {result.files_after} "
        f"({result.partitions} days compacted, {result.rows:,} rows rewritten) in {root}"
    )
    if result.left_for_later:
        click.echo(f"{result.left_for_later} files of flushes still in a journal were left "
                   "for a later run")  # fmt: skip


@log_group.command(name="status")
@click.argument("project")
def log_status(project: str) -> None:
    """Files, rows, dead letters and set-aside files of PROJECT's prediction log."""
    from mm_platform.project.config import load_project
    from mm_platform.serving.predlog.maintenance import inventory
    from mm_platform.serving.predlog.writer import log_root

    loaded = load_project(project)
    root = log_root(loaded.serving.prediction_log)
    state = inventory(root, loaded.name)
    click.echo(f"prediction log of {loaded.name} in {root}")
    for kind in ("predictions", "labels"):
        click.echo(f"  {kind}: {state.rows[kind]:,} rows in {state.files[kind]:,} files over "
                   f"{state.days[kind]} days")  # fmt: skip
    click.echo(f"  journal segments waiting: {state.journal_segments}")
    click.echo(f"  dead letters: {state.dead_letters}")
    click.echo(f"  damaged files set aside: {state.corrupt_files}")


if __name__ == "__main__":  # pragma: no cover
    main()
