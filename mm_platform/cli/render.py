"""How the commands show their results: progress bars, lines, `rich` tables and trees.

Computing stays in the library; these functions only turn its results into text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mm_platform.cli.demo import DemoResult, LoopResult
    from mm_platform.compression.job import CompressResult
    from mm_platform.monitoring.job import DriftOutcome
    from mm_platform.training.record import TrainResult


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A `report(description, done, total)` callback drawing one bar per task on stderr
    (nothing when stderr is not a terminal)."""
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


def print_train_result(result: TrainResult) -> None:
    """Two lines: the chosen candidate and its scores, then what was registered."""
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


def print_compression(result: CompressResult) -> None:
    """A table of the compressed variants against their parent, then the skipped ones."""
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


def print_lineage(name: str, metric: str) -> None:
    """The tree of model `name`'s registered versions with their key metric and aliases."""
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


def print_drift(outcome: DriftOutcome) -> None:
    """The window, the verdict, the report, the retrain decisions and the run."""
    from mm_platform.clock import format_window

    window = format_window(outcome.start, outcome.end) if outcome.start and outcome.end else "file"
    click.echo(f"{outcome.project} v{outcome.version}, window {window}: {outcome.n_current} rows")
    label = {"no_drift": "no drift", "drift": "DRIFT", "not_enough_data": "not enough data"}
    click.echo(f"  {label[outcome.status]}: {outcome.message}")
    if outcome.report_uri:
        click.echo(f"  report: {outcome.report_uri}")
    for decision in outcome.decisions:
        click.echo(f"  {decision}")
    click.echo(f"  run: {outcome.run_id} (experiment {outcome.project}-monitoring)")


def print_demo(outcome: DemoResult) -> None:
    """The table of trained projects, the compressions, the production loop, the store."""
    from rich.console import Console
    from rich.table import Table

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
        print_compression(compressed)
    if outcome.loop is not None:
        print_loop(outcome.loop)
    uri = results[0].tracking_uri if results else ""
    console.print(f"store: {uri}")
    console.print("compare the runs in the MLflow UI:  mm ui")


def print_loop(loop: LoopResult) -> None:
    """What the demo's production loop did, step by step, then the lineage tree."""
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
    print_lineage(loop.project, loop.metric)
