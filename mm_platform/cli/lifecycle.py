"""Commands that move a model through its life: `mm finetune`, `mm promote`,
`mm rollback`, `mm lineage`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mm_platform.cli.options import moment
from mm_platform.cli.render import print_lineage
from mm_platform.errors import ExitCode


@click.command()
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
        loaded, data_path=data_file, since=moment(since), lam=lam,
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


@click.command()
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
    sys.exit(ExitCode.REFUSED)


@click.command()
@click.argument("project")
def rollback(project: str) -> None:
    """Move PROJECT's champion back to the previous champion."""
    from mm_platform.lifecycle.promotion import rollback_project
    from mm_platform.project.config import load_project

    current, previous = rollback_project(load_project(project))
    click.echo(f"@champion -> v{previous}" + (f", @previous -> v{current}" if current else ""))


@click.command()
@click.argument("project")
def lineage(project: str) -> None:
    """Print the tree of PROJECT's registered versions: trained -> compressed -> ..."""
    from mm_platform import tracking
    from mm_platform.project.config import load_project

    loaded = load_project(project)
    tracking.connect()
    print_lineage(loaded.name, loaded.selection.metric)


COMMANDS = (finetune, promote, rollback, lineage)
