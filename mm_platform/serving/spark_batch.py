"""Batch scoring on Spark (`mm predict --engine spark`): MLflow's `spark_udf` over a Parquet
folder or a table, predictions written as Parquet, optionally appended to the prediction log.

The rows meet the same contract as `mm predict` on pandas (`batch.predict_file`): the
columns are checked against the model's signature (ids and the target accepted), the
features are converted to the signature's types, the registered version scores them, and
the output holds `request_id`, the id columns (as text), the features as the model saw
them, `prediction` and, for classifiers, one `proba_<class>` column per class.

`spark_udf` runs the registered version wrapped in a small pyfunc (`ScoringModel`, whose
loader is this module): it conforms each Arrow batch with `inputs.conform` and scores it
with `scoring.score`, so predictions and probabilities are the pandas path's, and answers
a frame that the UDF's struct result type takes whole. Executors therefore need
mm_platform installed, as the served model does.

Nothing row-sized reaches the driver: the output is written by the executors, request ids
are made there (a hash of the job and the partition, then the row's index), and the log is
written from the output as read back, one file per partition through the store's own
`write_table`, named by job and partition so that a retried task replaces its file.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mm_platform.errors import DataError, MmError
from mm_platform.serving.batch import input_spec
from mm_platform.serving.inputs import InputError, InputSpec, conform
from mm_platform.serving.scoring import raw_model, score
from mm_platform.spark.session import SparkUnavailable

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame

    from mm_platform.project.config import Project

LOADER = "mm_platform.serving.spark_batch"
CONFIG_FILE = "config.json"
# the Spark type a column gets for each MLflow signature type (what `conform` makes of it)
SPARK_TYPES = {"double": "double", "float": "float", "long": "bigint", "integer": "int",
               "boolean": "boolean", "string": "string", "datetime": "timestamp",
               "binary": "binary"}  # fmt: skip


class ScoringModel:
    """The pyfunc `spark_udf` runs: conform each batch as the pandas path does and answer
    `prediction` (+ `proba_<class>` columns) as a frame."""

    def __init__(self, inner: Any, spec: InputSpec, outputs: tuple[str, ...] = ()) -> None:
        self.inner = inner
        self.raw = raw_model(inner)
        self.spec = spec
        self.outputs = outputs or ("prediction",)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The scores of one batch of rows."""
        frame = pd.DataFrame(model_input)
        if not len(frame):  # conform refuses no rows; an empty batch has empty scores
            return pd.DataFrame({name: pd.Series(dtype=float) for name in self.outputs})
        features, _ = conform(frame, self.spec)
        return pd.DataFrame(score(self.inner, self.raw, features).columns())


def _load_pyfunc(data_path: str) -> ScoringModel:
    """MLflow pyfunc entry point (`loader_module`) of the wrapper `scoring_udf` saves."""
    from mm_platform.tracking.models import load_pyfunc

    folder = Path(data_path)
    config = json.loads((folder / CONFIG_FILE).read_text())
    spec = InputSpec.build([tuple(pair) for pair in config["schema"]])
    return ScoringModel(load_pyfunc(str(folder / "inner")), spec, tuple(config["outputs"]))


@dataclass
class SparkBatchResult:
    """What `mm predict --engine spark` scored and where it went."""

    rows: int
    version: str
    output: Path
    log_root: str | None  # None: not logged
    log_files: int = 0


def predict_spark(
    project: Project, source: str, *, version: str, output: Path | str,
    model_uri: str | None = None, log: bool = False, log_root: str | None = None,
) -> SparkBatchResult:  # fmt: skip
    """Score `source` (a Parquet file or folder, a CSV file, or a table name) with version
    `version` of the project's model on Spark, write the predictions as a Parquet folder
    at `output` (replaced if it exists) and, with `log`, append them to the prediction log
    at `log_root`. `model_uri` is the version's files (default: downloaded from the
    registry and checked against their digest)."""
    from mm_platform import tracking
    from mm_platform.spark import session
    from mm_platform.spark.frames import check_types, read_frame

    output = Path(output).expanduser().resolve()
    _check_output(output, source)
    if log and not log_root:
        raise ValueError("The 'log_root' parameter of predict_spark must be set with log=True")
    spark = session(project.spark)
    frame = read_frame(spark, source)
    folder = model_uri or tracking.verify_model_files(project.name, str(version))
    inner = tracking.load_pyfunc(folder)
    spec = _full_spec(project, tracking.model_input_schema(inner), frame.columns)
    check_columns(frame.columns, spec, source)
    check_types(frame, dict(spec.features), source)
    _require_rows(frame, source)
    scored = _scored(frame, spec, scoring_udf(spark, folder, inner, list(spec.features)))
    _run(lambda: scored.write.mode("overwrite").parquet(str(output)), source)
    written = spark.read.parquet(str(output))
    rows = written.count()
    if not log:
        return SparkBatchResult(rows, str(version), output, None)
    files = _run(
        lambda: append_to_log(written, spec, project.name, str(version), str(log_root)), source
    )
    return SparkBatchResult(rows, str(version), output, log_root, files)


def _check_output(output: Path, source: str) -> None:
    """Refuse an output that is a file, or a folder that holds the input or lies in it
    (the input is read while the output is replaced)."""
    if output.is_file():
        raise DataError(f"{output}: is a file; the Spark engine writes a folder of Parquet "
                        "parts: give --output a folder path")  # fmt: skip
    given = Path(source).expanduser()
    if not given.exists():
        return
    given = given.resolve()
    if output == given or output in given.parents or given in output.parents:
        raise DataError(f"{output}: the output would overwrite the input {source}; give "
                        "--output a folder of its own")  # fmt: skip


def _full_spec(project: Project, schema: list[tuple[str, str]], columns: list[str]) -> InputSpec:
    """The input spec; a model without a signature takes the columns it is given."""
    spec = input_spec(project, schema)
    if spec.features:
        return spec
    taken = [(c, "") for c in columns if c not in spec.ids and c not in spec.ignored]
    return InputSpec(tuple(taken), spec.ids, spec.ignored)


def check_columns(columns: list[str], spec: InputSpec, source: str) -> None:
    """A DataError naming the missing and unknown columns, as `mm predict` on a file."""
    known = set(spec.columns) | set(spec.ids) | set(spec.ignored)
    missing = [c for c in spec.columns if c not in columns]
    extra = [c for c in columns if c not in known]
    if not missing and not extra:
        return
    also = [*spec.ids, *spec.ignored]
    parts = ([f"missing {missing}"] if missing else []) + (
        [f"not in the model {extra}"] if extra else []
    )
    raise DataError(
        f"{source}: columns do not match the model's signature {spec.columns}"
        + (f" (also accepted: {also})" if also else "")
        + ": "
        + "; ".join(parts)
    )


def _require_rows(frame: DataFrame, source: str) -> None:
    if not _run(lambda: frame.limit(1).count(), source):
        raise DataError(f"{source}: no rows to score")


def _run(action: Callable[[], Any], source: str) -> Any:
    """`action()` (a Spark job), its failures in one line: a Parquet part of another type
    (the file and the column), a value `conform` refused on an executor (the column and
    the value), a Python worker without the driver's packages (the fix)."""
    from mm_platform.spark.frames import spark_data_error

    try:
        return action()
    except MmError:
        raise
    except Exception as exc:  # Py4JJavaError, PythonException, AnalysisException
        text = str(exc)
        refused = _raised_in_worker(text, InputError.__name__)
        if refused is not None:
            raise DataError(f"{source}: {refused}") from exc
        missing = _raised_in_worker(text, "ModuleNotFoundError")
        if missing is not None:
            raise SparkUnavailable(
                f"Spark's Python workers cannot import what scoring needs ({missing}); give "
                f"them this Python: PYSPARK_PYTHON={sys.executable} (or spark.pyspark.python "
                "in the project's spark.conf), or install mm-platform on the executors"
            ) from exc
        raise spark_data_error(exc, source) from exc


def _raised_in_worker(text: str, error: str) -> str | None:
    """The message of exception class `error` raised in a Python worker, if `text` (a
    Spark failure) holds one."""
    marker = f"{error}: "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].splitlines()[0].strip()


def scoring_udf(spark: Any, folder: str, inner: Any, schema: list[tuple[str, str]]) -> Any:
    """`spark_udf` of the wrapper around the version's files (`folder`, loaded as `inner`;
    `schema` its input signature), answering a struct of `prediction` and the class
    probabilities as `scoring.score` makes them. Call it on the struct of the columns."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    from mm_platform.modeling.metrics import model_classes, proba_column
    from mm_platform.tracking.models import save_wrapper_model, spark_udf

    raw = raw_model(inner)
    classes = model_classes(raw) if raw is not None else None
    fields = [StructField("prediction", _prediction_type(classes))]
    if classes is not None and hasattr(raw, "predict_proba"):
        fields += [StructField(proba_column(c), DoubleType()) for c in classes]
    dest = Path(tempfile.mkdtemp(prefix="mm-spark-model-"))
    try:
        wrapper = save_wrapper_model(
            folder, str(dest / "model"), loader_module=LOADER,
            config={"schema": [list(pair) for pair in schema],
                    "outputs": [f.name for f in fields]},
        )  # fmt: skip
        return spark_udf(spark, wrapper, result_type=StructType(fields))
    finally:  # spark_udf keeps its own copy of the model files
        shutil.rmtree(dest, ignore_errors=True)


def _prediction_type(classes: list[Any] | None) -> Any:
    """The Spark type of `prediction`: a double for a regressor, the classes' type else."""
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType

    if classes is None:
        return DoubleType()
    kind = np.asarray(classes).dtype.kind
    return {"b": BooleanType(), "i": LongType(), "u": LongType(), "f": DoubleType()}.get(
        kind, StringType()
    )


def _scored(frame: DataFrame, spec: InputSpec, udf: Any) -> DataFrame:
    """request_id, the ids as text, the features in their signature types, the scores."""
    from pyspark.sql import functions as F

    types = dict(frame.dtypes)
    ids = [
        (as_text(F.col(c), types[c]) if c in types else F.lit(None).cast("string")).alias(c)
        for c in spec.ids
    ]
    features = [_converted(F.col(c), types[c], kind).alias(c) for c, kind in spec.features]
    converted = frame.select(*ids, *features)
    scores = udf(F.struct(*[F.col(c) for c in spec.columns])).alias("_scores")
    return converted.select(request_ids(), *converted.columns, scores).select(
        "request_id", *converted.columns, "_scores.*"
    )


def _converted(column: Column, spark_type: str, kind: str) -> Column:
    """`column` in the Spark type of MLflow type `kind` (numbers as text like a CSV cell)."""
    if kind == "string":
        return as_text(column, spark_type)
    target = SPARK_TYPES.get(kind)
    return column if target is None or target == spark_type else column.cast(target)


def as_text(column: Column, spark_type: str) -> Column:
    """Text as `inputs.as_text` makes it: a whole float without its `.0` (12, not 12.0)."""
    from pyspark.sql import functions as F

    if spark_type in ("float", "double"):
        whole = column == F.floor(column)
        return F.when(whole & (F.abs(column) < 1e15), column.cast("bigint").cast("string")
                      ).otherwise(column.cast("string"))  # fmt: skip
    return column if spark_type == "string" else column.cast("string")


def request_ids() -> Column:
    """`<32 hex>-<row>`: the hex a hash of a fresh job id and the partition, the row its
    index in the partition (the shape of a served request's ids)."""
    from pyspark.sql import functions as F

    job = uuid.uuid4().hex
    base = F.substring(F.sha2(F.concat(F.lit(job), F.spark_partition_id().cast("string")), 256),
                       1, 32)  # fmt: skip
    row = F.monotonically_increasing_id().bitwiseAND(F.lit((1 << 33) - 1))
    return F.concat(base, F.lit("-"), row.cast("string")).alias("request_id")


# --- the prediction log ------------------------------------------------------------------


def append_to_log(scored: DataFrame, spec: InputSpec, model: str, version: str, root: str) -> int:
    """Append scored rows (as `predict_spark` writes them) to the prediction log at `root`:
    one file per partition, in the columns and types a served request's record has."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    floats = [c for c, kind in spec.features if kind in ("double", "float")]
    order = [*spec.columns, *spec.ids]
    writer = _partition_writer(root, model, version, time.time_ns(), uuid.uuid4().hex[:8],
                               floats, order)  # fmt: skip
    summary = StructType([StructField("path", StringType()), StructField("rows", LongType())])
    written = scored.mapInArrow(writer, summary).collect()  # one small row per partition
    return len(written)


def _partition_writer(
    root: str, model: str, version: str, stamp: int, job: str, floats: list[str],
    order: list[str],
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:  # fmt: skip
    """The function each partition runs: its rows as one log file, written atomically."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        from pyspark import TaskContext

        from mm_platform.serving.predlog.store import days_of, write_table

        parts = list(batches)
        if not parts or not sum(b.num_rows for b in parts):
            return
        table = log_table(pa.Table.from_batches(parts), model, version, stamp, floats, order)
        context = TaskContext.get()
        tag = f"{job}-spark{context.partitionId() if context else 0:05d}"
        paths = [write_table(root, "predictions", model, piece, day=day, tag=tag, stamp=stamp)
                 for day, piece in days_of(table)]  # fmt: skip
        yield pa.RecordBatch.from_pydict({"path": paths[-1:], "rows": [table.num_rows]})

    return write


def log_table(
    table: pa.Table, model: str, version: str, stamp: int, floats: list[str], order: list[str]
) -> pa.Table:
    """Scored rows as a served request's record: request_id, timestamp (UTC ns),
    model_name, model_version, the features (a missing number as NaN, as `conform`
    makes it), the ids, then prediction and the probabilities."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mm_platform.serving.predlog.records import TIMESTAMP, with_model_columns

    scores = [n for n in table.column_names if n not in order and n != "request_id"]
    columns = {"request_id": table.column("request_id")}
    columns["timestamp"] = pa.array(np.full(table.num_rows, stamp, dtype="int64")).view(TIMESTAMP)
    for name in [*order, *scores]:
        values = table.column(name)
        if name in floats:
            values = pc.fill_null(values, pa.scalar(float("nan"), values.type))
        columns[name] = values
    return with_model_columns(pa.table(columns), model, version)
