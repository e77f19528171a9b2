"""Commands that make models: `mm train`, `mm relog`, `mm compress`, `mm demo`."""

from __future__ import annotations

from pathlib import Path

import click

from mm_platform.cli.options import retry_option, retry_seconds
from mm_platform.cli.render import (
    print_compression,
    print_demo,
    print_train_result,
    progress_bar,
)


@click.command()
@click.argument("project")
@retry_option
@click.option(
    "--engine",
    type=click.Choice(["pandas", "spark"]),
    default="pandas",
    show_default=True,
    help="Where the CV fits run: this process, or the project's Spark cluster (spark: "
    "section, MM_SPARK_MASTER) through joblib's Spark backend. Same scores either way.",
)
def train(project: str, retry_for: str | None, engine: str) -> None:
    """Search PROJECT's candidates by CV, refit the best and register it.

    PROJECT is a project file (projects/diabetes.yaml) or the name of one in ./projects.
    A tracking server that goes away while the results are logged is waited for
    (--retry-for); if it stays away, the trained model is kept in ./mm_pending
    (MM_PENDING_DIR) for `mm relog`.
    """
    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project

    budget = retry_seconds(retry_for)
    loaded = load_project(project)
    with progress_bar() as report:
        result = train_project(loaded, progress=report, retry_for=budget, engine=engine)
    print_train_result(result)


@click.command()
@click.argument("folder")
@retry_option
def relog(folder: str, retry_for: str | None) -> None:
    """Log a trained model `mm train` kept in FOLDER when the tracking server was gone.

    Runs and versions it wrote before the server went away are completed, not repeated;
    FOLDER is removed once everything is logged.
    """
    from mm_platform.training.log import relog as relog_record

    result = relog_record(folder, retry_for=retry_seconds(retry_for))
    print_train_result(result)
    click.echo(f"removed {folder}")


@click.command()
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
    with progress_bar() as report:
        result = compress_project(loaded, alias=alias, version=version, progress=report)
    print_compression(result)


@click.command()
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
    from mm_platform.cli.demo import run_demo

    with progress_bar() as report:
        outcome = run_demo(folder, progress=report)
    print_demo(outcome)


COMMANDS = (train, relog, compress, demo)
