"""The Spark engine of `mm drift`: the same window, reference, checks and run as the pandas
engine, with the rows read and summarised by Spark.

- The current rows are the prediction-log window (`predlog.spark_reader`: the window's
  days only, labels joined), or `--current` (a Parquet file or folder, a CSV file, or a
  table), read by `spark.frames.read_frame`.
- The reference is the sample logged with the version (a pandas frame, handed to Spark),
  or `--reference`/`monitoring.reference` read by Spark (any size).
- Column kinds, the checks of the current columns and "not enough data" follow the pandas
  engine; the drift is `spark_drift.compute_spark`, the whole window (no `sample_rows`).
- Performance needs rows: the labelled rows are counted by Spark and brought to the
  driver only up to `PERFORMANCE_ROWS` (a seeded sample beyond), which the run says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from mm_platform.data.columns import PROBA_PREFIX, target_name
from mm_platform.errors import DataError, MmError
from mm_platform.monitoring.performance import labelled_rows
from mm_platform.monitoring.window import (
    Computed,
    Inputs,
    ReferenceColumns,
    Window,
    column_specs,
    reference_frame,
    tested_specs,
)
from mm_platform.serving.predlog.writer import META

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from mm_platform.monitoring.drift import ColumnOptions, ColumnSpec
    from mm_platform.project.config import Project

PERFORMANCE_ROWS = 200_000  # labelled rows brought to the driver for performance, at most
_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double", "decimal")


@dataclass
class SparkFrames:
    """The two sides of the comparison as Spark DataFrames."""

    reference: DataFrame
    current: DataFrame
    master: str


def spark_inputs(project: Project, window: Window, model: Any, uri: str) -> Inputs:
    """The reference, column kinds and current rows of `window` on Spark; only the row
    count reaches the driver."""
    from mm_platform.spark import master_of, session
    from mm_platform.spark.frames import read_frame

    spark = session(project.spark)
    logged: pd.DataFrame | None = None
    if window.reference is None:
        logged = reference_frame(project, model, uri)
        reference = spark.createDataFrame(logged)
    else:
        reference = with_predictions(project, spark, read_frame(spark, window.reference), uri,
                                     window.reference)  # fmt: skip
    specs = column_specs(
        project, uri, reference_columns(reference, window.reference or "the reference")
    )
    current: DataFrame | None
    if window.current_path is not None:
        current = read_frame(spark, window.current_path)
        check_columns(current, [s for s in specs if s.role == "feature"], window.source)
        current = with_predictions(project, spark, current, uri, window.current_path)
    else:
        current = rows_from_log(project, spark, window, str(model.version))
    if current is None:  # no file in the window: not enough data
        return Inputs(logged, specs, None, 0, SparkFrames(reference, reference.limit(0), ""))
    n_current = run_spark(current.count, window.source)
    frames = SparkFrames(reference, current, master_of(spark, project.spark))
    return Inputs(logged, specs, None, n_current, frames)


def rows_from_log(
    project: Project, spark: SparkSession, window: Window, number: str
) -> DataFrame | None:
    """The window's logged rows of version `number` with labels joined (None: no files)."""
    from pyspark.sql import functions as F

    from mm_platform.serving.predlog.spark_reader import logged_with_labels

    logged = logged_with_labels(
        spark, window.log_root, project.name, target_name(project),
        start=window.start, end=window.end,
    )  # fmt: skip
    if logged is None:
        return None
    logged = logged.where(F.col("model_version").cast("string") == number)
    return logged.drop(*[c for c in META if c in logged.columns])


def reference_columns(frame: DataFrame, source: str) -> ReferenceColumns:
    """`ReferenceColumns` of a Spark reference: distinct values counted by Spark, exactly,
    and no further than one past the limit."""
    from pyspark.sql import functions as F

    types = dict(frame.dtypes)

    def at_most_distinct(name: str, limit: int) -> bool:
        present = _present(F.col(f"`{name}`"), types[name])
        values = frame.where(present).select(f"`{name}`").distinct().limit(limit + 1)
        return bool(run_spark(values.count, source) <= limit)

    numeric = {c for c, t in types.items() if t.startswith(_NUMERIC)}
    return ReferenceColumns(list(frame.columns), numeric, at_most_distinct)


def _present(column: Column, spark_type: str) -> Column:
    """Not missing, as pandas counts missing: null, and NaN in a float column."""
    from pyspark.sql import functions as F

    if spark_type in ("double", "float"):
        return column.isNotNull() & ~F.isnan(column)
    return column.isNotNull()


def check_columns(frame: DataFrame, specs: list[ColumnSpec], source: str) -> None:
    """`results.check_current` on Spark: every column of `specs` is there, and numeric
    where the reference is (unless it holds no value at all)."""
    types = dict(frame.dtypes)
    missing = [s.name for s in specs if s.name not in types]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing} that the model's reference has; "
            f"the current data needs every column of {[s.name for s in specs]}"
        )
    wrong = [
        f"{s.name} ({types[s.name]})"
        for s in specs
        if s.kind == "num"
        and not types[s.name].startswith(_NUMERIC)
        and run_spark(frame.where(f"`{s.name}` IS NOT NULL").limit(1).count, source)
    ]
    if wrong:
        raise DataError(
            f"{source}: column(s) {', '.join(wrong)} should be numeric, as in the reference; "
            "fix the values or the column types"
        )


def check_rows(frame: DataFrame, specs: list[ColumnSpec], target: str, source: str) -> None:
    """`window.check_rows` on Spark: features, prediction, then the target if present."""
    for role in ("feature", "prediction", "target"):  # features first: they name the fix
        if role != "target" or target in frame.columns:
            check_columns(frame, [s for s in specs if s.role == role], source)


def compute_on_spark(
    project: Project, window: Window, inputs: Inputs, options: Mapping[str, ColumnOptions]
) -> Computed:
    """Drift of the whole window by `compute_spark`, and the rows performance needs."""
    from mm_platform.monitoring.spark_drift import compute_spark

    frames: SparkFrames = inputs.spark
    target, source = target_name(project), window.source
    check_rows(frames.current, inputs.specs, target, source)
    n_labelled, labelled = _labelled(project, frames.current, target, source)
    enough = n_labelled >= project.monitoring.min_rows
    tested = tested_specs(inputs.specs, enough)
    result = run_spark(
        lambda: compute_spark(frames.reference, frames.current, tested, options=options,
                              drift_share=project.monitoring.drift_share),
        source,
    )  # fmt: skip
    reference = inputs.reference
    if reference is None and target in frames.reference.columns:
        _, reference = _labelled(project, frames.reference, target, str(window.reference))
    if reference is not None and target in reference.columns:
        labelled = labelled_rows(labelled, reference, target)
    else:
        reference = None
    params: dict[str, Any] = {"sample_rows": "none", "spark.master": frames.master}
    notes = []
    if len(labelled) < n_labelled:
        params["performance_rows"] = len(labelled)
        notes.append(f"performance on a sample of {len(labelled)} of {n_labelled} labelled rows")
    return Computed(result, labelled, reference, n_labelled, params, notes)


def _labelled(
    project: Project, frame: DataFrame, target: str, source: str
) -> tuple[int, pd.DataFrame]:
    """How many rows of `frame` have a label, and those rows' target, prediction and
    probabilities on the driver: all of them up to PERFORMANCE_ROWS, else a seeded sample."""
    from pyspark.sql import functions as F

    types = dict(frame.dtypes)
    if target not in types:
        return 0, pd.DataFrame()
    wanted = [c for c in frame.columns if c in (target, "prediction") or c.startswith(PROBA_PREFIX)]
    labelled = frame.where(_present(F.col(f"`{target}`"), types[target])).select(
        *[f"`{c}`" for c in wanted]
    )
    count = int(run_spark(labelled.count, source))
    if count > PERFORMANCE_ROWS:
        share = min(1.0, 1.1 * PERFORMANCE_ROWS / count)
        labelled = labelled.sample(fraction=share, seed=project.seed).limit(PERFORMANCE_ROWS)
    return count, run_spark(labelled.toPandas, source)


def with_predictions(
    project: Project, spark: SparkSession, frame: DataFrame, uri: str, source: str
) -> DataFrame:
    """`frame`, with the monitored version's predictions (and class probabilities) added
    by `spark_udf` when it has none: the reference or current rows of a file or table."""
    if "prediction" in frame.columns:
        return frame
    from pyspark.sql import functions as F

    from mm_platform.serving.spark_batch import scoring_udf
    from mm_platform.tracking.models import load_pyfunc, model_input_schema

    inner = load_pyfunc(uri)
    schema = model_input_schema(inner)
    missing = [name for name, _ in schema if name not in frame.columns]
    if missing:
        raise DataError(f"{source}: no 'prediction' column to compare, and the model's "
                        f"column(s) {missing} to make it are missing")  # fmt: skip
    udf = scoring_udf(spark, uri, inner, schema)
    scores = udf(F.struct(*[F.col(f"`{name}`") for name, _ in schema]))
    return frame.withColumn("_mm_scores", scores).select("*", "_mm_scores.*").drop("_mm_scores")


def run_spark(action: Callable[[], Any], source: str) -> Any:
    """`action()`, a Spark job, with Spark's failures to read `source` as a DataError
    naming the file and column; errors of our own code are left as they are."""
    from mm_platform.spark.frames import spark_data_error

    try:
        return action()
    except MmError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith(("pyspark", "py4j")):
            raise
        raise spark_data_error(exc, source) from exc
