"""What a drift computation takes and gives: column specs, per-column and per-window
results with their MLflow metrics, and the check of the current data's columns.

Free of Evidently, so the job and the CLI can use these types without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import pandas as pd

from mm_platform.errors import DataError

if TYPE_CHECKING:
    from evidently.legacy.calculations.data_drift import ColumnDataDriftMetrics

Kind = Literal["num", "cat"]
Role = Literal["feature", "prediction", "target"]


@dataclass(frozen=True)
class ColumnSpec:
    """A column to test: its name, declared kind and role."""

    name: str
    kind: Kind
    role: Role = "feature"


@dataclass(frozen=True)
class ColumnOptions:
    """A configured method and threshold (None keeps Evidently's default)."""

    method: str | None = None
    threshold: float | None = None


@dataclass
class ColumnResult:
    """One column's drift: Evidently's test, its score and verdict."""

    spec: ColumnSpec
    method: str
    threshold: float
    score: float
    drifted: bool
    evidently: ColumnDataDriftMetrics | None = None  # for the report
    display: str = ""  # Evidently's name of the test and its score, e.g. "K-S p_value"


@dataclass
class QualityResult:
    """Data-quality summary of one column of the current data."""

    column: str
    missing: int
    missing_share: float
    unseen_categories: int = 0
    unseen_examples: list[str] = field(default_factory=list)
    out_of_range: int = 0
    failure: str | None = None  # e.g. "all values missing"


@dataclass
class DriftResult:
    """Drift of every column of one window, and the current data's quality."""

    columns: list[ColumnResult]
    quality: list[QualityResult]
    n_reference: int
    n_current: int
    drift_share_threshold: float

    @property
    def features(self) -> list[ColumnResult]:
        return [c for c in self.columns if c.spec.role == "feature"]

    @property
    def n_drifted(self) -> int:
        return sum(c.drifted for c in self.features)

    @property
    def drift_share(self) -> float:
        tested = len(self.features)
        return self.n_drifted / tested if tested else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Evidently's rule: drift when the share of drifted features reaches the threshold."""
        return bool(self.features) and self.drift_share >= self.drift_share_threshold

    def role(self, role: Role) -> ColumnResult | None:
        return next((c for c in self.columns if c.spec.role == role), None)

    @property
    def quality_failures(self) -> list[QualityResult]:
        return [q for q in self.quality if q.failure]

    @property
    def detected(self) -> bool:
        """Anything a person should look at: dataset drift, prediction drift, a quality failure."""
        prediction = self.role("prediction")
        target = self.role("target")
        return (
            self.dataset_drift
            or (prediction is not None and prediction.drifted)
            or (target is not None and target.drifted)
            or bool(self.quality_failures)
        )

    def metrics(self) -> dict[str, float]:
        """Flat metrics with MLflow-valid keys (see README, 'Drift jobs')."""
        out: dict[str, float] = {
            "drift_share": self.drift_share,
            "n_drifted_columns": float(self.n_drifted),
            "dataset_drift": float(self.dataset_drift),
            "n_reference_rows": float(self.n_reference),
            "n_current_rows": float(self.n_current),
            "n_quality_failures": float(len(self.quality_failures)),
        }
        for c in self.features:
            out[f"drift_score.{metric_key(c.spec.name)}"] = c.score
            out[f"drifted.{metric_key(c.spec.name)}"] = float(c.drifted)
        for role in ("prediction", "target"):
            result = self.role(role)
            if result is not None:
                out[f"{role}_drift_score"] = result.score
                out[f"{role}_drifted"] = float(result.drifted)
        for q in self.quality:
            key = metric_key(q.column)
            out[f"missing_share.{key}"] = q.missing_share
            out[f"unseen_categories.{key}"] = float(q.unseen_categories)
            out[f"out_of_range.{key}"] = float(q.out_of_range)
        return out


_DEFAULT_WHY = {
    "ks": "default: numeric with more than 5 values, reference of at most 1000 values",
    "wasserstein": "default: numeric with more than 5 values, reference over 1000 values",
    "jensenshannon": "default: categorical or at most 5 values, reference over 1000 values",
    "z": "default: two values, reference of at most 1000 values",
    "chisquare_2s": (
        "default: more than two values, reference of at most 1000 values; two-sample, as "
        "Evidently's goodness-of-fit chisquare takes so small a reference as exact"
    ),
}


def test_reason(column: ColumnResult, options: ColumnOptions | None) -> str:
    """Why `column` got its test: configured in the project file, or the default rule
    (`stattests.choose_test`) for its kind and reference size."""
    if options is not None and options.method is not None:
        return f"monitoring.columns.{column.spec.name}.method"
    return _DEFAULT_WHY.get(column.method, "default")


_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /")


def metric_key(name: str) -> str:
    """`name` with every character MLflow does not allow in a metric key made `_`."""
    return "".join(ch if ch in _KEY_CHARS else "_" for ch in str(name))


# --- checking the current data ------------------------------------------------------------


def check_current(current: pd.DataFrame, specs: list[ColumnSpec], *, source: str) -> pd.DataFrame:
    """Refuse current data that lacks a reference column or has a wrong dtype.

    Evidently silently drops a column missing from current data and fails with a pandas
    TypeError on a string in a numeric column; both become one clear error here.
    """
    missing = [s.name for s in specs if s.name not in current.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing} that the model's reference has; "
            f"the current data needs every column of {[s.name for s in specs]}"
        )
    wrong = [
        f"{s.name} ({current[s.name].dtype})"
        for s in specs
        if s.kind == "num"
        and not current[s.name].isna().all()
        and not (
            pd.api.types.is_numeric_dtype(current[s.name])
            and not pd.api.types.is_bool_dtype(current[s.name])
        )
    ]
    if wrong:
        raise DataError(
            f"{source}: column(s) {', '.join(wrong)} should be numeric, as in the reference; "
            "fix the values or the column types"
        )
    return current
