"""The prediction log as a Spark DataFrame: the rows of one window, labels joined.

The pandas reader (`reader.read_window`) reads the files on this machine; this one lists
them the same way (only the days of the window, each day's files once even while it is
being compacted, damaged footers set aside) and hands the list to Spark, so the rows are
read by the executors and never reach the driver.

Two things Spark does not do by itself:

- the log's `timestamp` is Parquet TIMESTAMP(NANOS, UTC), which Spark 4 refuses to read
  unless a schema asks for it as a long: every read gives Spark a schema, taken from the
  files' footers (read on the driver with pyarrow: footers only), with nanosecond
  timestamps as `bigint` nanoseconds since the epoch;
- files of one day may type a column differently (ints in one, floats in another);
  Spark's Parquet reader does not widen int64 to double, so files are read in groups of
  one schema and each column is cast to the type the pandas reader's promotion gives.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mm_platform.errors import DataError
from mm_platform.serving.predlog.journal import recover
from mm_platform.serving.predlog.store import (
    data_files,
    filesystem,
    is_compacted,
    is_damage,
    model_folder,
    partitions,
    set_aside,
    utc,
    visible_files,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_RETRIES = 20  # listings of a day whose files changed under the reader (compaction)
_FILE = "_mm_file"  # the file a label came from: ties of labelled_at go to the later file
_TIMES = ("timestamp", "labelled_at")  # the log's own times: nanoseconds since the epoch


def logged_with_labels(
    spark: SparkSession,
    root: str,
    model: str,
    target: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> DataFrame | None:
    """The logged predictions of `model` with timestamps in [start, end), with the latest
    label of each request as column `target` where labels were ingested (no label files:
    no target column); None when the window has no files at all. Recovers the journals of
    killed writers first, as `batch.logged_with_labels` does."""
    recover(root, model)
    logged = read_log(spark, root, "predictions", model, start, end)
    if logged is None:
        return None
    labels = read_log(spark, root, "labels", model, with_file=True)
    if labels is None:
        return logged
    return join_labels(logged, labels, target)


def join_labels(logged: DataFrame, labels: DataFrame, target: str) -> DataFrame:
    """`logged` with the latest label of each request (by `labelled_at`, then file) as
    column `target`, null where there is none."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = [F.col("labelled_at").desc_nulls_last()]
    if _FILE in labels.columns:
        order.append(F.col(_FILE).desc())
    latest = (
        labels.where(F.col("request_id").isNotNull())
        .withColumn(
            "_mm_rank", F.row_number().over(Window.partitionBy("request_id").orderBy(*order))
        )
        .where(F.col("_mm_rank") == 1)
        .select("request_id", F.col("label").alias(target))
    )
    if target in logged.columns:
        logged = logged.drop(target)
    return logged.join(latest, on="request_id", how="left")


def read_log(
    spark: SparkSession,
    root: str,
    kind: str,
    model: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    with_file: bool = False,
) -> DataFrame | None:
    """Rows of dataset `kind` of `model` with timestamps in [start, end) (None when no file
    overlaps the window); nanosecond timestamps as `bigint` nanoseconds; with `with_file`,
    the name of each row's file in column `_mm_file`."""
    fs, base = filesystem(root)
    # the day after the window too, as reader.read_window does (older writers filed rows
    # under the day they wrote them)
    listed_end = None if end is None else utc(end) + pd.Timedelta(days=1)
    schemas: dict[str, pa.Schema] = {}
    for _day, folder in partitions(fs, model_folder(base, kind, model), start, listed_end):
        schemas.update(day_schemas(fs, base, folder))
    if not schemas:
        return None
    columns = unified_columns(schemas, f"the prediction log {root}")
    frames = [
        _read_group(spark, _spark_paths(root, paths), schema, columns, start, end, with_file)
        for schema, paths in _groups(schemas).items()
    ]
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    return frame


def day_schemas(fs: pafs.FileSystem, base: str, folder: str) -> dict[str, pa.Schema]:
    """Path -> Arrow schema of the files of one day to read, each row once even while the
    day is compacted (as `reader.read_partition` lists them); damaged footers set aside."""
    for _ in range(_RETRIES):
        try:
            names, compacted = visible_files(fs, base, folder)
            found = {}
            for name in names:
                schema = _footer(fs, base, f"{folder}/{name}")
                if schema is not None:
                    found[f"{folder}/{name}"] = schema
        except FileNotFoundError:
            continue  # compacted (or set aside) while listed: list the day again
        if compacted >= {n for n in data_files(fs, folder) if is_compacted(n)}:
            return found
    raise OSError(f"{folder}: the files kept changing while being listed; try again")


def _footer(fs: pafs.FileSystem, base: str, path: str) -> pa.Schema | None:
    try:
        with fs.open_input_file(path) as source:
            return pq.read_schema(source)
    except (pa.ArrowException, OSError) as exc:
        if not is_damage(exc):
            raise
        set_aside(fs, base, path, f"{type(exc).__name__}: {exc}")
        return None


# --- types ------------------------------------------------------------------------------------


def spark_type(kind: pa.DataType) -> str | None:
    """The Spark type (DDL) to read an Arrow/Parquet column as; None: not read."""
    if pa.types.is_dictionary(kind):
        return spark_type(kind.value_type)
    if pa.types.is_timestamp(kind):
        return "bigint" if kind.unit == "ns" else "timestamp"
    simple = {
        pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
        pa.uint8(): "smallint", pa.uint16(): "int", pa.uint32(): "bigint",
        pa.float16(): "float", pa.float32(): "float", pa.float64(): "double",
        pa.bool_(): "boolean", pa.string(): "string", pa.large_string(): "string",
        pa.binary(): "binary", pa.large_binary(): "binary", pa.date32(): "date",
    }  # fmt: skip
    if kind in simple:
        return simple[kind]
    if pa.types.is_decimal(kind):
        return f"decimal({kind.precision},{kind.scale})"
    return None


_INTEGERS = ("tinyint", "smallint", "int", "bigint")
_NUMBERS = (*_INTEGERS, "float", "double")


def unified_columns(schemas: dict[str, pa.Schema], source: str) -> dict[str, str]:
    """Column -> Spark type over all files, in order of appearance: numbers of different
    types become bigint (all integers) or double, as the pandas reader promotes them;
    a column of another kind (text where others hold numbers) is a DataError naming the
    file and the column."""
    seen: dict[str, dict[str, str]] = {}  # column -> type -> first file with it
    for path, schema in schemas.items():
        for field in schema:
            kind = spark_type(field.type)
            if kind is not None:
                seen.setdefault(field.name, {}).setdefault(kind, path)
    return {
        name: "bigint" if name in _TIMES else _common_type(name, found, source)
        for name, found in seen.items()
    }


def _common_type(name: str, found: dict[str, str], source: str) -> str:
    kinds = list(found)
    if len(kinds) == 1:
        return kinds[0]
    if all(k in _NUMBERS for k in kinds):
        return "bigint" if all(k in _INTEGERS for k in kinds) else "double"
    usual = kinds[0]
    odd = next(k for k in kinds if k != usual)
    raise DataError(
        f"{found[odd]}: column '{name}' is {odd} in this Parquet part where other parts of "
        f"{source} have {usual} ({found[usual]}); rewrite this part with '{name}' as {usual}, "
        "or move it out of the log"
    )


def _groups(schemas: dict[str, pa.Schema]) -> dict[tuple[tuple[str, str], ...], list[str]]:
    """Files by their Spark schema: one Spark read per group."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for path, schema in schemas.items():
        pairs = tuple((f.name, kind) for f in schema if (kind := spark_type(f.type)) is not None)
        groups.setdefault(pairs, []).append(path)
    return groups


def _spark_paths(root: str, paths: Iterable[str]) -> list[str]:
    """Paths as Spark names them: local ones as they are, s3://bucket/x as s3a://bucket/x."""
    if "://" not in root:
        return list(paths)
    scheme = root.split("://", 1)[0]
    scheme = "s3a" if scheme == "s3" else scheme
    return [f"{scheme}://{p}" for p in paths]


def _read_group(
    spark: SparkSession,
    paths: list[str],
    schema: tuple[tuple[str, str], ...],
    columns: dict[str, str],
    start: datetime | None,
    end: datetime | None,
    with_file: bool,
) -> DataFrame:
    """One group's files with every column of `columns` (null where they lack one), cast
    to its common type, and the window's time filter."""
    from pyspark.sql import functions as F

    ddl = ", ".join(f"`{name.replace('`', '``')}` {kind}" for name, kind in schema)
    frame = spark.read.schema(ddl).parquet(*paths)
    have = dict(schema)
    for name in _TIMES:
        if have.get(name) == "timestamp":  # an older file in micro- or milliseconds
            frame = frame.withColumn(name, F.unix_micros(F.col(name)) * 1000)
            have[name] = "bigint"
    if "timestamp" in have and start is not None:
        frame = frame.where(F.col("timestamp") >= int(utc(start).value))
    if "timestamp" in have and end is not None:
        frame = frame.where(F.col("timestamp") < int(utc(end).value))
    selected = [
        (F.col(f"`{name}`") if have.get(name) == kind else F.col(f"`{name}`").cast(kind))
        if name in have
        else F.lit(None).cast(kind)
        for name, kind in columns.items()
    ]
    named = [c.alias(name) for c, name in zip(selected, columns, strict=True)]
    if with_file:
        named.append(F.input_file_name().alias(_FILE))
    return frame.select(*named)
