"""What one drift job looks at: the window (or file), the monitored version's reference
sample and column kinds, and the current rows, checked before anything is computed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from mm_platform.clock import as_utc, readable_stamp, utc_now
from mm_platform.data.columns import PROBA_PREFIX, target_name
from mm_platform.data.tables import read_table
from mm_platform.errors import DataError
from mm_platform.serving.batch import (
    conform_file,
    input_spec,
    logged_with_labels,
)
from mm_platform.serving.predlog.writer import META
from mm_platform.serving.scoring import raw_model, score
from mm_platform.tracking import tags

if TYPE_CHECKING:
    from mm_platform.monitoring.results import ColumnOptions, ColumnSpec, DriftResult
    from mm_platform.project.config import Project

_NUMERIC_TYPES = {"double", "float", "long", "integer"}
_INTEGER_CARDINALITY_LIMIT = 10


@dataclass(frozen=True)
class Window:
    """The slice of production one drift job compares: a time window of the prediction log
    (or a file, or on Spark a table), of one version named by alias or number, the
    reference it is compared with (None: the sample logged with the version) and the
    engine that computes it."""

    start: datetime | None
    end: datetime | None
    alias: str | None  # None when a version number was asked for
    version: str | None
    log_root: str
    current_path: str | None = None
    engine: str = "pandas"
    reference: str | None = None

    @classmethod
    def of(
        cls,
        project: Project,
        *,
        start: datetime | None,
        end: datetime | None,
        current_path: Path | str | None,
        alias: str | None,
        version: str | None,
        log_root: str | None,
        engine: str | None = None,
        reference: str | None = None,
    ) -> Window:
        """The window asked for; a missing bound of a log window defaults to the project's
        `monitoring.window` ending now; the engine and the reference default to the
        project's `monitoring.engine` and `monitoring.reference`."""
        from mm_platform.serving.predlog.writer import log_root as default_log_root

        start, end = as_utc(start), as_utc(end)
        if current_path is None and (start is None or end is None):
            end = end or utc_now()
            start = start or end - timedelta(seconds=project.monitoring.window_seconds)
        if start is not None and end is not None and start >= end:
            raise DataError(f"the window start {start.isoformat()} is not before its end")
        root = log_root or default_log_root(project.serving.prediction_log)
        engine = engine or project.monitoring.engine
        if engine not in ("pandas", "spark"):
            raise DataError(f"the engine must be pandas or spark, got '{engine}'")
        current = None if current_path is None else str(current_path)
        reference = reference or project.monitoring.reference
        return cls(start, end, None if version else alias, version, root, current, engine,
                   reference)  # fmt: skip

    @property
    def source(self) -> str:
        """Where the current rows come from, as the run's `mm.source` tag says it."""
        if self.current_path is not None:
            return str(self.current_path)
        return f"prediction log {self.log_root}"

    def run_name(self, number: str) -> str:
        """`drift v3 2026-01-01 10:00:00..11:00:00` (the end's date too when it differs),
        or the file's name for a file."""
        start, end = self.start, self.end
        if start is None or end is None:
            return f"drift v{number} {Path(self.source).name}"
        shown = f"{end:%H:%M:%S}" if end.date() == start.date() else readable_stamp(end)
        return f"drift v{number} {readable_stamp(start)}..{shown}"

    def tags(self, project: Project, number: str) -> dict[str, str]:
        """The tags that find this window's runs again."""
        return {
            tags.MODEL_NAME: project.name,
            tags.MODEL_VERSION: number,
            tags.ALIAS: self.alias or "",
            tags.WINDOW_START: self.start.isoformat() if self.start else "",
            tags.WINDOW_END: self.end.isoformat() if self.end else "",
            tags.SOURCE: self.source,
            tags.ENGINE: self.engine,
        }


@dataclass
class Inputs:
    """The monitored version's side of the comparison and the window's rows: pandas frames
    on the pandas engine; on Spark, `spark` holds both sides as Spark DataFrames and
    `reference` is the logged sample when it is the reference (else None)."""

    reference: pd.DataFrame | None
    specs: list[ColumnSpec]
    current: pd.DataFrame | None
    n_current: int  # rows of the window
    spark: Any = None  # spark_job.SparkFrames


@dataclass
class Computed:
    """What an engine computed of one window: the drift, the labelled rows performance is
    scored on (a sample on Spark beyond a bound) and the reference rows it is compared with
    (None: the reference has no target), run params and notes for the run's message."""

    result: DriftResult | None  # None: still computing (`worker.Worker.compute_result`)
    labelled: pd.DataFrame
    reference: pd.DataFrame | None
    n_labelled: int
    params: dict[str, Any]
    notes: list[str]


def tested_specs(specs: list[ColumnSpec], enough_labels: bool) -> list[ColumnSpec]:
    """The columns to test: the target only with enough labelled rows."""
    return [s for s in specs if s.role != "target" or enough_labels]


def column_options(project: Project, specs: list[ColumnSpec]) -> dict[str, ColumnOptions]:
    """`monitoring.columns` as drift options; a column the model does not have is an error."""
    from mm_platform.monitoring.results import ColumnOptions

    options = {
        name: ColumnOptions(c.method, c.threshold) for name, c in project.monitoring.columns.items()
    }
    unknown = sorted(set(options) - {s.name for s in specs})
    if unknown:
        raise DataError(
            f"{project.label}: monitoring.columns names {unknown}, which the model does not "
            f"have; its columns are {[s.name for s in specs]}"
        )
    return options


def reference_frame(project: Project, model: Any, uri: str) -> pd.DataFrame:
    """The reference sample of `model`; for a version without one (compressed), its nearest
    ancestor's features and target with this version's own predictions."""
    from mm_platform import tracking

    artifact = model.tags.get(tags.REFERENCE_ARTIFACT)
    if artifact:
        return tracking.load_frame(model.run_id, artifact)
    current = model
    for _ in range(20):
        parent = current.tags.get(tags.PARENT_MODEL_VERSION)
        if not parent:
            break
        current = tracking.resolve_version(project.name, version=parent)
        artifact = current.tags.get(tags.REFERENCE_ARTIFACT)
        if artifact:
            frame = tracking.load_frame(current.run_id, artifact)
            made = ["prediction", *(c for c in frame.columns if c.startswith(PROBA_PREFIX))]
            frame = frame.drop(columns=made)  # the ancestor's; this version's replace them
            pyfunc = tracking.load_pyfunc(uri)
            scores = score(pyfunc, raw_model(pyfunc), frame.drop(columns=[target_name(project)]))
            return frame.assign(**scores.columns())
    raise DataError(
        f"{project.name} version {model.version} has no reference sample "
        "(mm.reference_artifact), nor has any version it descends from; retrain with mm train"
    )


@dataclass(frozen=True)
class ReferenceColumns:
    """What `column_specs` needs of a reference, whatever engine holds its rows: its
    columns, which are numeric, and whether a column has at most `limit` distinct values."""

    names: list[str]
    numeric: set[str]
    at_most_distinct: Callable[[str, int], bool]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> ReferenceColumns:
        numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
        return cls(list(frame.columns), numeric, lambda c, k: frame[c].nunique() <= k)


def column_specs(
    project: Project, uri: str, reference: pd.DataFrame | ReferenceColumns
) -> list[ColumnSpec]:
    """Features with their kinds from the model's signature (and the project's categorical
    list), then the prediction and the target (when the reference has it); Evidently
    infers nothing."""
    from mm_platform import tracking
    from mm_platform.monitoring.results import ColumnSpec

    ref = reference if isinstance(reference, ReferenceColumns) else ReferenceColumns.of(reference)
    target = target_name(project)
    schema = tracking.input_schema(uri)
    if not schema:  # no signature: the reference's own columns and dtypes
        schema = [
            (c, "double" if c in ref.numeric else "string")
            for c in ref.names
            if c not in (target, "prediction")
        ]
    categorical = set(project.features.categorical)

    def kind_of(name: str, kind: str) -> Literal["num", "cat"]:
        if name in categorical or kind not in _NUMERIC_TYPES:
            return "cat"
        if kind in ("long", "integer") and name in ref.names:
            # Evidently's own rule (evidently.core.datasets.infer_column_type): integers
            # with at most 10 distinct values are categories
            return "cat" if ref.at_most_distinct(name, _INTEGER_CARDINALITY_LIMIT) else "num"
        return "num"

    specs = [ColumnSpec(name, kind_of(name, kind)) for name, kind in schema]
    label_kind: Literal["num", "cat"] = "num" if project.task == "regression" else "cat"
    specs.append(ColumnSpec("prediction", label_kind, "prediction"))
    if target in ref.names:  # a reference without it: no target drift
        specs.append(ColumnSpec(target, label_kind, "target"))
    return specs


def rows_from_log(project: Project, window: Window, number: str) -> pd.DataFrame:
    """The window's logged rows of version `number`, with labels joined where there are some."""
    logged = logged_with_labels(project, window.log_root, start=window.start, end=window.end)
    if not len(logged):
        return logged
    logged = logged[logged["model_version"].astype(str) == number]
    return logged.drop(columns=[c for c in META if c in logged.columns]).reset_index(drop=True)


def rows_from_file(project: Project, path: Path, specs: list[ColumnSpec], uri: str) -> pd.DataFrame:
    """Features (and optionally target and predictions), checked before anything is logged;
    predictions are made with the monitored version when the file has none."""
    from mm_platform.monitoring.results import check_current

    frame = read_table(path)
    features = [s for s in specs if s.role == "feature"]
    check_current(frame, features, source=str(path))
    frame = with_predictions(project, frame, uri, path)
    check_rows(frame, specs, target_name(project), str(path))
    return frame


def reference_from_file(project: Project, source: str, uri: str) -> pd.DataFrame:
    """A reference given as a CSV/Parquet file or a Parquet folder (`--reference`,
    `monitoring.reference`), scored with the monitored version when it has no predictions."""
    from mm_platform.project.config import names_path

    path = Path(source).expanduser()
    if not names_path(source) and not path.exists():
        raise DataError(
            f"{source}: no such file or folder; a table as the reference needs the Spark "
            "engine (--engine spark or monitoring.engine: spark)"
        )
    return with_predictions(project, read_table(path), uri, path)


def with_predictions(project: Project, frame: pd.DataFrame, uri: str, path: Path) -> pd.DataFrame:
    """`frame`, with the monitored version's predictions added when it has none."""
    from mm_platform import tracking

    if "prediction" in frame.columns:
        return frame
    model = tracking.load_pyfunc(uri)
    spec = input_spec(project, tracking.model_input_schema(model))
    known = [c for c in frame.columns if c in {*spec.columns, *spec.ids, *spec.ignored}]
    conformed, _ = conform_file(path, frame[known], spec)
    try:
        scores = score(model, raw_model(model), conformed)
    except Exception as exc:  # MLflow's schema enforcement names the column and type
        message = str(getattr(exc, "message", exc)).splitlines()[0][:300]
        raise DataError(f"{path}: the model refuses this data: {message}") from exc
    return frame.reset_index(drop=True).assign(**scores.columns())


def check_rows(
    current: pd.DataFrame, specs: list[ColumnSpec], target: str, source: str
) -> pd.DataFrame:
    """`current` once its features, prediction and (if present) target pass the checks."""
    from mm_platform.monitoring.results import check_current

    for role in ("feature", "prediction", "target"):  # features first: they name the fix
        if role != "target" or target in current.columns:
            check_current(current, [s for s in specs if s.role == role], source=source)
    return current
