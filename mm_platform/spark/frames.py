"""Reading a source as a Spark DataFrame, and Spark's data errors in the project's words.

A source is a Parquet file, a Parquet folder (Spark's part files, hive partitions), a CSV
file (with a header; types inferred), or a table of the session's catalog: a value with a
path separator, a file suffix or a leading `.`/`~` names a path (`names_path`), and so
does any other value that exists as a path. Reading is lazy: a Parquet part whose column
has another type than the others fails only when the rows are read, so the code that runs
the job passes Spark's failure to `spark_data_error`, which names the file and the column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from mm_platform.errors import DataError, MmError
from mm_platform.project.config import names_path
from mm_platform.spark.session import spark_error

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["check_types", "read_frame", "spark_data_error", "spark_type_fits"]

CSV_SUFFIXES = (".csv", ".txt")
SOURCES = "a Parquet file or folder, a CSV file, or the name of a table"

# Spark 4: "[FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH] Encountered error while
# reading file file:///d/part-1.parquet. Data type mismatches when reading Parquet column
# [x]. Expected Spark type double, actual Parquet type BINARY."
_MISMATCH_4 = re.compile(
    r"reading file (?P<file>\S+?)\.?\s+Data type mismatches when reading Parquet column "
    r"\[?(?P<column>[^\]]*?)\]?\. Expected Spark type (?P<expected>[^,]+), "
    r"actual Parquet type (?P<found>[^.\s]+)"
)
# Spark 3: "Parquet column cannot be converted in file file:/d/part-1.parquet. Column: [x],
# Expected: double, Found: BINARY"
_MISMATCH_3 = re.compile(
    r"Parquet column cannot be converted in file (?P<file>\S+?)\.?\s+Column: "
    r"\[?(?P<column>[^\]]*?)\]?, Expected: (?P<expected>[^,]+), Found: (?P<found>[^\s.]+)"
)
_NOT_FOUND = ("TABLE_OR_VIEW_NOT_FOUND", "PATH_NOT_FOUND")


def read_frame(spark: SparkSession, source: str) -> DataFrame:
    """`source` (a Parquet file or folder, a CSV file, or a table name) as a DataFrame;
    a missing path or table is a DataError naming it and the fix."""
    if names_path(source) or Path(source).expanduser().exists():
        return _read_path(spark, Path(source).expanduser(), source)
    try:
        return spark.table(source)
    except Exception as exc:  # AnalysisException, or Spark Connect's
        if _condition(exc) == "TABLE_OR_VIEW_NOT_FOUND" or "cannot be found" in str(exc):
            raise DataError(
                f"{source}: no such table in the Spark catalog and no such file; give {SOURCES} "
                "(a path needs a '/' or a suffix such as .parquet)"
            ) from exc
        raise spark_data_error(exc, source) from exc


def _read_path(spark: SparkSession, path: Path, source: str) -> DataFrame:
    if not path.exists():
        raise DataError(f"{source}: no such file or folder; give {SOURCES}")
    try:
        if path.is_file() and path.suffix.lower() in CSV_SUFFIXES:
            return spark.read.csv(str(path), header=True, inferSchema=True)
        return spark.read.parquet(str(path))
    except Exception as exc:  # AnalysisException: an empty folder, an unreadable footer
        if _condition(exc) == "UNABLE_TO_INFER_SCHEMA":
            raise DataError(
                f"{source}: no Parquet files in it; write the data as Parquet there, or give "
                f"{SOURCES}"
            ) from exc
        raise spark_data_error(exc, source) from exc


def _condition(exc: BaseException) -> str | None:
    getter = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    try:
        return getter() if getter is not None else None
    except Exception:  # a Py4J error whose JVM side is gone
        return None


def spark_data_error(exc: BaseException, source: str) -> MmError:
    """A DataError for Spark's failure to read `source`: a Parquet part whose column has
    another type than the others names the file and the column; anything else gives
    Spark's first line. Raise it `from exc`."""
    text = str(getattr(exc, "desc", None) or exc)
    found = _MISMATCH_4.search(text) or _MISMATCH_3.search(text)
    if found is not None:
        file = re.sub(r"^file:(//)?", "", found["file"])
        column = found["column"].strip("`")
        return DataError(
            f"{file}: column '{column}' is {found['found']} in this Parquet part where the "
            f"other parts of {source} have {found['expected']}; rewrite this part with "
            f"'{column}' as {found['expected']}, or move it out of the folder"
        )
    condition = _condition(exc)
    if condition in _NOT_FOUND:
        return DataError(f"{source}: {spark_error(exc)}; give {SOURCES}")
    return DataError(f"{source}: Spark cannot read it: {spark_error(exc)}")


# the Spark types (simpleString prefixes) that each MLflow signature type accepts; a model
# without a signature ("") takes anything
_NUMBERS = ("tinyint", "smallint", "int", "bigint", "float", "double", "decimal")
_FITS: dict[str, tuple[str, ...]] = {
    "double": (*_NUMBERS, "boolean"),
    "float": (*_NUMBERS, "boolean"),
    "long": _NUMBERS,
    "integer": _NUMBERS,
    "boolean": ("boolean", "string"),
    "string": (*_NUMBERS, "boolean", "string", "date", "timestamp"),
    "datetime": ("date", "timestamp", "timestamp_ntz", "string"),
    "binary": ("binary", "string"),
}


def spark_type_fits(spark_type: str, mlflow_type: str) -> bool:
    """Whether a column of Spark type `spark_type` (its simpleString) can be converted to
    MLflow type `mlflow_type` as the pandas path converts it."""
    accepted = _FITS.get(mlflow_type)
    if accepted is None:
        return True
    base = spark_type.split("(", 1)[0]
    return base in accepted


def check_types(frame: DataFrame, expected: dict[str, str], source: str) -> None:
    """Raise a DataError naming the first column of `expected` (column -> MLflow type)
    whose Spark type cannot become that type, e.g. text where the model wants numbers."""
    types = {field.name: field.dataType.simpleString() for field in frame.schema.fields}
    for column, wanted in expected.items():
        have = types.get(column)
        if have is None or spark_type_fits(have, wanted):
            continue
        raise DataError(
            f"{source}: column '{column}' is {have} where the model wants {wanted}; "
            f"write '{column}' as {_spark_name(wanted)} (e.g. CAST({column} AS "
            f"{_spark_name(wanted).upper()})), or fix the rows that made it {have}"
        )


def _spark_name(mlflow_type: str) -> str:
    return {"long": "bigint", "integer": "int", "datetime": "timestamp"}.get(
        mlflow_type, mlflow_type
    )
