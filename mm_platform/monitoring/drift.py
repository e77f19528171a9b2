"""Drift of one window against a model's reference sample, computed with Evidently.

Evidently's `DataDriftPreset` infers every column's type, computes each column's drift
three times and copies the data into its own `Dataset`. Here the column types come from
the model (its signature and the project's categorical list), each column's drift is
computed once with Evidently's own statistical tests (the same registry, default-method
rule and cleaning that `ValueDrift` uses, so the scores are Evidently's), columns run in
parallel threads, and the report is rendered from those results without touching the
rows again.

Importing this module imports Evidently (6-9 s); only the drift commands do.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("DO_NOT_TRACK", "1")  # before Evidently is imported: no telemetry

import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric
from evidently.legacy.calculations import stattests as _stattests
from evidently.legacy.calculations.data_drift import ColumnDataDriftMetrics, DriftStatsField
from evidently.legacy.core import ColumnType
from evidently.legacy.options.base import Options
from evidently.legacy.options.color_scheme import ColorOptions
from evidently.legacy.utils.visualizations import get_distribution_for_column
from evidently.metrics.column_statistics import ValueDriftCalculation

from mm_platform.monitoring import performance_report
from mm_platform.monitoring.results import (  # noqa: F401  (callers import them from here)
    ColumnOptions,
    ColumnResult,
    ColumnSpec,
    DriftResult,
    QualityResult,
    check_current,
    metric_key,
)
from mm_platform.monitoring.stattests import (  # noqa: F401  (the Spark engine's rule too)
    choose_test,
    resolve_test,
    wasserstein_norm,
)

if TYPE_CHECKING:
    from mm_platform.monitoring.performance_report import PerformanceView

_DEFAULT = ColumnOptions()  # Evidently's default test and threshold
_TYPES: dict[str, ColumnType] = {"num": ColumnType.Numerical, "cat": ColumnType.Categorical}


# --- per-column drift ---------------------------------------------------------------------


def shared_categories(reference: pd.Series, current: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Object (string) columns as pandas categoricals over the categories of both.

    Evidently's categorical tests hash every value several times (nunique, unique,
    value_counts on each side); on codes each of those is a bincount. The values, and so
    every count and score, stay the same. Other dtypes are returned as they are.
    """
    if reference.dtype != object or current.dtype != object:
        return reference, current
    ref, cur = reference.astype("category"), current.astype("category")
    labels = ref.cat.categories.append(cur.cat.categories).unique()
    if any(isinstance(v, float) and not np.isfinite(v) for v in labels):
        return reference, current  # Evidently drops infinities; leave those columns to it
    dtype = pd.CategoricalDtype(labels)
    return ref.astype(dtype), cur.astype(dtype)


def _clean(column: pd.Series) -> pd.Series:
    """Evidently's cleaning before a drift test: infinities and missing values dropped."""
    if pd.api.types.is_float_dtype(column):
        values = column.to_numpy()
        finite = np.isfinite(values)
        return column if finite.all() else column[finite]
    if isinstance(column.dtype, pd.CategoricalDtype):  # from shared_categories: no infinities
        return column.dropna()
    return column.replace([-np.inf, np.inf], np.nan).dropna()


# Evidently's TVD (a permutation test seeded with np.random.seed(0)) and MMD draw from
# numpy's global generator: two such columns in parallel threads would interleave draws
_GLOBAL_RNG_TESTS = frozenset({"TVD", "empirical_mmd"})
_GLOBAL_RNG = threading.Lock()


def column_drift(
    spec: ColumnSpec,
    reference: pd.Series,
    current: pd.Series,
    options: ColumnOptions = _DEFAULT,
    *,
    for_report: bool = True,
) -> ColumnResult | None:
    """One column's drift; None when either side has no value left to test."""
    ref, cur = _clean(reference), _clean(current)
    if ref.empty or cur.empty:
        return None
    test = resolve_test(spec, ref, cur, options)
    ctype = _TYPES[spec.kind]
    if test is _stattests.wasserstein_stat_test:  # Evidently's default for numeric columns
        threshold = test.default_threshold if options.threshold is None else options.threshold
        score = wasserstein_norm(ref, cur)
        result = ColumnResult(spec, test.name, float(threshold), score, score >= threshold)
    else:
        # tests that reseed and draw from numpy's global RNG take turns
        turn = _GLOBAL_RNG if test.name in _GLOBAL_RNG_TESTS else contextlib.nullcontext()
        # an unseen category is expected 0 times: chi-square's x/0 is infinite drift, rightly
        with turn, np.errstate(divide="ignore"):
            outcome = test(ref, cur, ctype, options.threshold)
        result = ColumnResult(
            spec,
            test.name,
            float(outcome.actual_threshold),
            float(outcome.drift_score),
            bool(outcome.drifted),
        )
    result.display = test.display_name
    if for_report:
        cur_dist, ref_dist = get_distribution_for_column(
            column_type=spec.kind, current=cur, reference=ref, bins=_bins(spec, ref, cur)
        )
        result.evidently = drift_metrics(result, cur_dist, ref_dist)
    return result


def drift_metrics(result: ColumnResult, current: Any, reference: Any) -> ColumnDataDriftMetrics:
    """Evidently's per-column drift result for the report, from a column's result and the
    two sides' distributions (both engines build it here)."""
    return ColumnDataDriftMetrics(
        column_name=result.spec.name,
        column_type=result.spec.kind,
        stattest_name=result.display,
        stattest_threshold=result.threshold,
        drift_score=result.score,
        drift_detected=result.drifted,
        current=DriftStatsField(distribution=current),
        reference=DriftStatsField(distribution=reference),
        scatter=None,
    )


def _bins(spec: ColumnSpec, reference: pd.Series, current: pd.Series) -> Any:
    """50 equal bins over both samples for the report's histogram (Evidently's own choice,
    Doane's rule on the two concatenated, costs more than the drift test at 1M rows)."""
    if spec.kind != "num":
        return None
    low = min(float(reference.min()), float(current.min()))
    high = max(float(reference.max()), float(current.max()))
    return np.linspace(low, high, 51) if high > low else None


def quality(spec: ColumnSpec, reference: pd.Series, current: pd.Series) -> QualityResult:
    """Missing values, categories the reference never had, values outside its range."""
    n = len(current)
    missing = int(current.isna().sum())
    result = QualityResult(spec.name, missing, missing / n if n else 0.0)
    if n and missing == n:
        result.failure = "all values missing"
        return result
    present = current.dropna()
    if spec.kind == "cat":
        known = set(pd.unique(reference.dropna()))
        unseen = present[~present.isin(known)]
        result.unseen_categories = len(unseen)
        result.unseen_examples = [str(v) for v in pd.unique(unseen)[:5]]
    else:
        ref = reference.to_numpy(dtype="float64", na_value=np.nan)
        ref = ref[np.isfinite(ref)]
        if ref.size:
            values = present.to_numpy(dtype="float64")
            result.out_of_range = int(((values < ref.min()) | (values > ref.max())).sum())
    return result


def compute(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    specs: list[ColumnSpec],
    *,
    options: Mapping[str, ColumnOptions] | None = None,
    drift_share: float = 0.5,
    workers: int | None = None,
    for_report: bool = True,
) -> DriftResult:
    """Every column's drift (in parallel threads) and the current data's quality.

    `current` must have passed `check_current`. Target columns may have fewer current rows
    (only the labelled ones); give them as a separate `current` column with NaN elsewhere.
    """
    options = options or {}
    workers = workers or min(len(specs), os.cpu_count() or 1) or 1

    def one(spec: ColumnSpec) -> tuple[ColumnResult | None, QualityResult | None]:
        ref, cur = reference[spec.name], current[spec.name]
        if spec.kind == "cat":
            ref, cur = shared_categories(ref, cur)
        check = quality(spec, ref, cur) if spec.role == "feature" else None
        if check is not None and check.failure:
            return None, check
        drift = column_drift(
            spec, ref, cur, options.get(spec.name, ColumnOptions()), for_report=for_report
        )
        if drift is None and check is not None:
            check.failure = (
                "no finite values in the reference sample"
                if _clean(ref).empty
                else "no finite values to compare"
            )
        return drift, check

    # numpy sorts and pandas hashing release the GIL: threads share the data, no copies
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mm-drift") as pool:
        outcomes = list(pool.map(one, specs))
    return DriftResult(
        columns=[d for d, _ in outcomes if d is not None],
        quality=[q for _, q in outcomes if q is not None],
        n_reference=len(reference),
        n_current=len(current),
        drift_share_threshold=drift_share,
    )


# --- the Evidently report -----------------------------------------------------------------

# results handed to the report's metrics, keyed by (report token, column); see MmColumnDrift
_PENDING: dict[tuple[str, str], ColumnDataDriftMetrics] = {}


class MmColumnDrift(SingleValueMetric):
    """A column's drift computed by `compute`, shown with Evidently's ValueDrift widget.

    The snapshot stores column, method, threshold and score; reloading it needs
    `mm_platform.monitoring.drift` imported (it registers this metric type).
    """

    column: str
    method: str
    threshold: float
    role: str = "feature"
    token: str = ""


class MmColumnDriftCalculation(SingleValueCalculation[MmColumnDrift]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        drift = _PENDING[(self.metric.token, self.metric.column)]
        result = self.result(drift.drift_score)
        result.widget = ValueDriftCalculation._render(self, drift, Options(), ColorOptions())
        return result

    def display_name(self) -> str:
        what = {"prediction": "Prediction drift", "target": "Target drift"}
        return f"{what.get(self.metric.role, 'Value drift')} for {self.metric.column}"


def build_report(
    result: DriftResult,
    *,
    performance: PerformanceView | None = None,
    timestamp: datetime | None = None,
    name: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Any:
    """An Evidently snapshot: summary counters, every column's drift widget and, with a
    `performance` view, the scores on the labelled rows with their binned plots. Every
    metric carries its own result: the report reads no rows."""
    from evidently import Dataset, Report

    token = uuid.uuid4().hex
    metrics: list[Any] = []
    for column in result.columns:
        if column.evidently is None:
            continue
        _PENDING[(token, column.spec.name)] = column.evidently
        metrics.append(
            MmColumnDrift(
                column=column.spec.name,
                method=column.method,
                threshold=column.threshold,
                role=column.spec.role,
                token=token,
            )
        )
    if performance is not None:
        metrics.append(performance_report.pending(performance, token))
    tiny = Dataset.from_pandas(pd.DataFrame({"_": [0.0, 1.0]}))
    try:
        return Report(metrics).run(
            tiny, tiny, timestamp=timestamp, name=name, metadata=metadata or {}
        )
    finally:
        performance_report.release(token)
        for column in result.columns:
            _PENDING.pop((token, column.spec.name), None)
