"""What one drift job looks at: the window (or file), the monitored version's reference
sample and column kinds, and the current rows, checked before anything is computed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from mm_platform.clock import as_utc, utc_now
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
    from mm_platform.monitoring.drift import ColumnSpec
    from mm_platform.project.config import Project

_NUMERIC_TYPES = {"double", "float", "long", "integer"}
_INTEGER_CARDINALITY_LIMIT = 10


@dataclass(frozen=True)
class Window:
    """The slice of production one drift job compares: a time window of the prediction log
    (or a file), of one version named by alias or number."""

    start: datetime | None
    end: datetime | None
    alias: str | None  # None when a version number was asked for
    version: str | None
    log_root: str
    current_path: Path | None = None

    @classmethod
    def of(
        cls,
        project: Project,
        *,
        start: datetime | None,
        end: datetime | None,
        current_path: Path | None,
        alias: str | None,
        version: str | None,
        log_root: str | None,
    ) -> Window:
        """The window asked for; a missing bound of a log window defaults to the project's
        `monitoring.window` ending now."""
        from mm_platform.serving.predlog.writer import log_root as default_log_root

        start, end = as_utc(start), as_utc(end)
        if current_path is None and (start is None or end is None):
            end = end or utc_now()
            start = start or end - timedelta(seconds=project.monitoring.window_seconds)
        if start is not None and end is not None and start >= end:
            raise DataError(f"the window start {start.isoformat()} is not before its end")
        root = log_root or default_log_root(project.serving.prediction_log)
        return cls(start, end, None if version else alias, version, root, current_path)

    @property
    def source(self) -> str:
        """Where the current rows come from, as the run's `mm.source` tag says it."""
        if self.current_path is not None:
            return str(self.current_path)
        return f"prediction log {self.log_root}"

    def run_name(self, number: str) -> str:
        """`drift v3 2026-01-01 10:00:00..11:00:00`, or the file's name for a file."""
        start, end = self.start, self.end
        span = f"{start:%Y-%m-%d %H:%M:%S}..{end:%H:%M:%S}" if start and end else None
        return f"drift v{number} " + (span or Path(self.source).name)

    def tags(self, project: Project, number: str) -> dict[str, str]:
        """The tags that find this window's runs again."""
        return {
            tags.MODEL_NAME: project.name,
            tags.MODEL_VERSION: number,
            tags.ALIAS: self.alias or "",
            tags.WINDOW_START: self.start.isoformat() if self.start else "",
            tags.WINDOW_END: self.end.isoformat() if self.end else "",
            tags.SOURCE: self.source,
        }


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


def column_specs(project: Project, uri: str, reference: pd.DataFrame) -> list[ColumnSpec]:
    """Features with their kinds from the model's signature (and the project's categorical
    list), then the prediction and the target; Evidently infers nothing."""
    from mm_platform import tracking
    from mm_platform.monitoring.drift import ColumnSpec

    target = target_name(project)
    schema = tracking.input_schema(uri)
    if not schema:  # no signature: the reference's own columns and dtypes
        schema = [
            (c, "double" if pd.api.types.is_numeric_dtype(reference[c]) else "string")
            for c in reference.columns
            if c not in (target, "prediction")
        ]
    categorical = set(project.features.categorical)

    def kind_of(name: str, kind: str) -> Literal["num", "cat"]:
        if name in categorical or kind not in _NUMERIC_TYPES:
            return "cat"
        if kind in ("long", "integer") and name in reference.columns:
            # Evidently's own rule (evidently.core.datasets.infer_column_type): integers
            # with at most 10 distinct values are categories
            return "cat" if reference[name].nunique() <= _INTEGER_CARDINALITY_LIMIT else "num"
        return "num"

    specs = [ColumnSpec(name, kind_of(name, kind)) for name, kind in schema]
    label_kind: Literal["num", "cat"] = "num" if project.task == "regression" else "cat"
    specs.append(ColumnSpec("prediction", label_kind, "prediction"))
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
    from mm_platform import tracking
    from mm_platform.monitoring.drift import check_current

    frame = read_table(path)
    features = [s for s in specs if s.role == "feature"]
    check_current(frame, features, source=str(path))
    if "prediction" not in frame.columns:
        model = tracking.load_pyfunc(uri)
        spec = input_spec(project, tracking.model_input_schema(model))
        known = [c for c in frame.columns if c in {*spec.columns, *spec.ids, *spec.ignored}]
        conformed, _ = conform_file(path, frame[known], spec)
        try:
            scores = score(model, raw_model(model), conformed)
        except Exception as exc:  # MLflow's schema enforcement names the column and type
            message = str(getattr(exc, "message", exc)).splitlines()[0][:300]
            raise DataError(f"{path}: the model refuses this data: {message}") from exc
        frame = frame.reset_index(drop=True).assign(**scores.columns())
    check_rows(frame, specs, target_name(project), str(path))
    return frame


def check_rows(
    current: pd.DataFrame, specs: list[ColumnSpec], target: str, source: str
) -> pd.DataFrame:
    """`current` once its features, prediction and (if present) target pass the checks."""
    from mm_platform.monitoring.drift import check_current

    for role in ("feature", "prediction", "target"):  # features first: they name the fix
        if role != "target" or target in current.columns:
            check_current(current, [s for s in specs if s.role == role], source=source)
    return current
