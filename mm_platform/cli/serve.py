"""Commands around serving: `mm serve`, `mm predict`, `mm labels`, `mm log ...`, and the
MLflow processes `mm server` and `mm ui`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mm_platform.tracking.tags import CHAMPION

if TYPE_CHECKING:
    from mm_platform.project.config import Project


@click.command()
@click.argument("project")
@click.option("--alias", default=CHAMPION, show_default=True, help="Serve this alias.")
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

    from mm_platform import tracking
    from mm_platform.data.columns import target_name
    from mm_platform.project.config import load_project
    from mm_platform.serving.launcher import build_monitored_model, run_server
    from mm_platform.serving.predlog.writer import log_root

    loaded = load_project(project)
    tracking.connect()
    chosen = tracking.resolve_version(loaded.name, alias=alias, version=version)
    root = log_root(loaded.serving.prediction_log)
    with tempfile.TemporaryDirectory(prefix="mm-serve-") as tmp:
        model_dir = build_monitored_model(
            loaded.name, str(chosen.version), root, Path(tmp) / "model",
            ids=tuple(loaded.features.drop), ignored=(target_name(loaded),),
        )  # fmt: skip
        run_server(
            model_dir, host=host, port=port, echo=click.echo, max_rows=max_rows,
            max_bytes=max_bytes,
            banner=f"serving {loaded.name} version {chosen.version}, logging to {root}",
        )  # fmt: skip


@click.command()
@click.argument("project")
@click.argument("input_file", metavar="INPUT")
@click.option("--alias", default=CHAMPION, show_default=True, help="Score with this alias.")
@click.option("--version", default=None, help="Score with this registered version instead.")
@click.option("--engine", type=click.Choice(["pandas", "spark"]), default="pandas",
              show_default=True,
              help="pandas: in this process; spark: mlflow's spark_udf on the project's "
              "spark.master.")  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Where to write predictions: CSV, or Parquet for a .parquet name or an "
              "existing folder (default: INPUT.predictions.csv). Spark: a Parquet folder, "
              "required.")  # fmt: skip
@click.option("--log/--no-log", "log", default=None,
              help="Append the scored rows to the prediction log (pandas: on by default; "
              "spark: off by default).")  # fmt: skip
def predict(
    project: str, input_file: str, alias: str, version: str | None, engine: str,
    output: Path | None, log: bool | None,
) -> None:  # fmt: skip
    """Score INPUT in batch: a CSV or Parquet file or a folder of Parquet parts (with
    --engine spark also a table name).

    INPUT may also hold the project's dropped columns (ids such as customer_id), which
    are carried into the output and the log, and the target, which is ignored.
    """
    from mm_platform import tracking
    from mm_platform.project.config import load_project
    from mm_platform.serving.predlog.writer import log_root

    if engine == "spark" and output is None:
        raise click.UsageError("--engine spark needs --output (a Parquet folder to write)")
    loaded = load_project(project)
    tracking.connect()
    chosen = tracking.resolve_version(loaded.name, alias=alias, version=version)
    root = log_root(loaded.serving.prediction_log)
    if engine == "spark":
        from mm_platform.serving.spark_batch import predict_spark

        assert output is not None
        done = predict_spark(
            loaded, input_file, version=str(chosen.version), output=output, log=bool(log),
            log_root=root,
        )  # fmt: skip
        rows, where, logged = done.rows, done.output, done.log_root
    else:
        rows, where, logged = _predict_pandas(loaded, Path(input_file), str(chosen.version),
                                              output, root, log is not False)  # fmt: skip
    click.echo(
        f"scored {rows} rows with {loaded.name} version {chosen.version} on {engine}; "
        f"predictions and request ids in {where}; "
        + (f"logged to {logged}" if logged else "not logged (--log to log them)")
    )


def _predict_pandas(
    loaded: Project, path: Path, version: str, output: Path | None, root: str, log: bool
) -> tuple[int, Path, str | None]:
    """`mm predict` in this process: (rows, output file, log root or None)."""
    from mm_platform import tracking
    from mm_platform.serving.batch import predict_file

    model = tracking.load_pyfunc(tracking.verify_model_files(loaded.name, version))
    result = predict_file(
        loaded, path, version=version, model=model,
        schema=tracking.model_input_schema(model), log_root=root, output=output, log=log,
    )  # fmt: skip
    return result.rows, result.output, root if log else None


@click.command()
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


@click.command()
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


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--project", default=None, help="Print the runs table of this project's experiment.")
def ui(host: str, port: int, project: str | None) -> None:
    """Start the MLflow UI on the current store (job execution off) and print its URL."""
    from mm_platform.tracking.server import run_ui

    run_ui(host=host, port=port, project=project, echo=click.echo)


@click.group(name="log")
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


COMMANDS = (serve, predict, labels, server, ui, log_group)
