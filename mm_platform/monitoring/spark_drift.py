"""Drift on Spark: the pandas engine's tests and scores, from exact distributed summaries.

`compute_spark` takes the reference and the current window as Spark DataFrames and gives
the same `DriftResult` as `drift.compute` gives for the same rows: each column gets the
test of the same rule (`drift.choose_test`), and its score from summaries Spark computes
exactly, never from rows brought to the driver:

- a profile of each column, one scan a side (rows, missing, finite count, range, the
  reference's standard deviation, values outside the reference's range, and the value
  counts of categorical columns and of numeric ones with at most 2,000 values): chi-square,
  z, Jensen–Shannon, PSI, KL and Hellinger come from those counts (`from_counts`);
- histograms counted by numpy's own `np.histogram` on each Arrow batch: the report's 50
  bins, and Sturges bins for Jensen–Shannon, PSI and KL on numeric columns with more than
  20 values;
- the sorted pass of `spark_sort`: KS and Wasserstein.

The results carry Evidently's report widgets, so the report and the MLflow run are those
of the pandas engine.
"""

from __future__ import annotations

import os

os.environ.setdefault("DO_NOT_TRACK", "1")  # before Evidently is imported: no telemetry

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from evidently.legacy.calculations.data_drift import ColumnDataDriftMetrics
from evidently.legacy.metric_results import Distribution

from mm_platform.errors import ProjectConfigError
from mm_platform.monitoring import from_counts
from mm_platform.monitoring.drift import choose_test, drift_metrics
from mm_platform.monitoring.results import (
    ColumnOptions,
    ColumnResult,
    ColumnSpec,
    DriftResult,
    QualityResult,
)
from mm_platform.monitoring.spark_sort import CdfStats, SortedColumn, cdf_stats
from mm_platform.monitoring.spark_summaries import Profile, histograms, profiles

REPORT_BINS = 50


@dataclass
class _Column:
    """What the engine knows of one column on both sides."""

    spec: ColumnSpec
    ref: Profile
    cur: Profile
    ref_counts: dict[Any, int] | None = None  # cleaned value -> count, when few values
    cur_counts: dict[Any, int] | None = None

    @property
    def low(self) -> float:
        return min(self.ref.low, self.cur.low)

    @property
    def high(self) -> float:
        return max(self.ref.high, self.cur.high)

    def more_unique(self, k: int) -> bool:
        if self.ref_counts is None or self.cur_counts is None:
            return True  # thousands of values
        return len(set(self.ref_counts) | set(self.cur_counts)) > k

    def ref_unique_over(self, k: int) -> bool:
        return self.ref_counts is None or len(self.ref_counts) > k


def compute_spark(
    reference: Any,
    current: Any,
    specs: list[ColumnSpec],
    *,
    options: Mapping[str, ColumnOptions] | None = None,
    drift_share: float = 0.5,
    for_report: bool = True,
    rows_per_bucket: int = 200_000,
) -> DriftResult:
    """Every column's drift and the current data's quality, as `drift.compute` gives them
    for the same rows; `reference` and `current` are Spark DataFrames."""
    options = options or {}
    ref_profiles, n_reference = profiles(reference, specs, with_std=True)
    bounds = {name: (p.low, p.high) for name, p in ref_profiles.items()}
    cur_profiles, n_current = profiles(current, specs, with_std=False, bounds=bounds)
    columns = {s.name: _Column(s, ref_profiles[s.name], cur_profiles[s.name]) for s in specs}
    for column in columns.values():
        if column.ref.counts is not None and column.cur.counts is not None:
            column.ref_counts, column.cur_counts = column.ref.counts, column.cur.counts
    quality = {s.name: _quality(columns[s.name]) for s in specs if s.role == "feature"}
    tests = {}
    for spec in specs:
        column, check = columns[spec.name], quality.get(spec.name)
        if (check is not None and check.failure) or not column.ref.clean or not column.cur.clean:
            continue
        tests[spec.name] = _test_of(column, options.get(spec.name, ColumnOptions()))
    sorted_stats = _sorted_pass(reference, current, columns, tests, rows_per_bucket)
    binned = _histogram_pass(reference, current, columns, tests, for_report)
    results = []
    for spec in specs:
        column, check = columns[spec.name], quality.get(spec.name)
        if spec.name not in tests:
            if check is not None and not check.failure:
                check.failure = (
                    "no finite values in the reference sample"
                    if not column.ref.clean
                    else "no finite values to compare"
                )
            continue
        result = _result(column, tests[spec.name], options, sorted_stats, binned)
        if for_report:
            result.evidently = _widget(column, result, binned)
        results.append(result)
    return DriftResult(
        columns=results,
        quality=[quality[s.name] for s in specs if s.name in quality],
        n_reference=n_reference,
        n_current=n_current,
        drift_share_threshold=drift_share,
    )


def _quality(column: _Column) -> QualityResult:
    """Missing values, unseen categories, and values outside the reference's range."""
    cur = column.cur
    result = QualityResult(
        column.spec.name, cur.missing, cur.missing / cur.rows if cur.rows else 0.0
    )
    if cur.rows and cur.missing == cur.rows:
        result.failure = "all values missing"
        return result
    if column.spec.kind == "cat":
        known = set(column.ref_counts or {})
        unseen = {k: n for k, n in (column.cur_counts or {}).items() if k not in known}
        result.unseen_categories = int(sum(unseen.values()))
        examples = sorted(unseen, key=lambda k: (-unseen[k], str(k)))[:5]
        result.unseen_examples = [str(v) for v in examples]
    elif column.ref.clean:
        result.out_of_range = cur.outside
    return result


def _test_of(column: _Column, option: ColumnOptions) -> Any:
    """The column's Evidently test, as the pandas engine chooses it; one the Spark engine
    cannot compute from exact summaries is a configuration error naming the column."""
    spec = column.spec
    test = choose_test(spec, option, small=column.ref.clean <= 1000, more_unique=column.more_unique)
    numeric_by_keys = spec.kind == "num" and test.name == "hellinger"
    if test.name not in from_counts.SPARK_METHODS or numeric_by_keys:
        allowed = ", ".join(sorted(from_counts.SPARK_METHODS))
        raise ProjectConfigError(
            f"monitoring.columns.{spec.name}.method: '{test.name}' is not available on the "
            f"Spark engine (it computes {allowed}; hellinger on categorical columns only); "
            "pick one of those or run this project's drift with the pandas engine"
        )
    return test


def _histogram_edges(column: _Column, method: str) -> np.ndarray | None:
    """Sturges edges when `method` bins this numeric column as get_binned_data does."""
    binned_methods = {"jensenshannon", "psi", "kl_div"}
    if column.spec.kind != "num" or method not in binned_methods:
        return None
    if not column.ref_unique_over(from_counts.HISTOGRAM_MIN_UNIQUE):
        return None
    return from_counts.sturges_edges(column.low, column.high, column.ref.clean + column.cur.clean)


def _report_edges(column: _Column) -> np.ndarray:
    """The report histogram's 50 equal bins over both sides (the pandas engine's `_bins`)."""
    if column.high > column.low:
        return np.linspace(column.low, column.high, REPORT_BINS + 1)
    return np.array([column.low - 0.5, column.low + 0.5])


def _sorted_pass(
    reference: Any, current: Any, columns: dict[str, _Column], tests: dict[str, Any], rows: int
) -> dict[str, CdfStats]:
    wanted = [
        SortedColumn(
            name,
            columns[name].ref.clean,
            columns[name].cur.clean,
            columns[name].low,
            columns[name].high,
        )
        for name, test in tests.items()
        if test.name in ("ks", "wasserstein")
    ]
    return cdf_stats(reference, current, wanted, rows_per_bucket=rows)


def _histogram_pass(
    reference: Any,
    current: Any,
    columns: dict[str, _Column],
    tests: dict[str, Any],
    for_report: bool,
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(column, "test"|"report") -> (edges, reference counts, current counts)."""
    edges: dict[tuple[str, str], np.ndarray] = {}
    for name, test in tests.items():
        sturges = _histogram_edges(columns[name], test.name)
        if sturges is not None:
            edges[(name, "test")] = sturges
        if for_report and columns[name].spec.kind == "num":
            edges[(name, "report")] = _report_edges(columns[name])
    if not edges:
        return {}
    ref, cur = histograms(reference, edges), histograms(current, edges)
    return {key: (e, ref[key], cur[key]) for key, e in edges.items()}


def _result(
    column: _Column,
    test: Any,
    options: Mapping[str, ColumnOptions],
    sorted_stats: dict[str, CdfStats],
    binned: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> ColumnResult:
    name, method = column.spec.name, test.name
    option = options.get(name, ColumnOptions())
    threshold = float(test.default_threshold if option.threshold is None else option.threshold)
    n_ref, n_cur = column.ref.clean, column.cur.clean
    if method == "wasserstein":
        score = sorted_stats[name].wasserstein / max(column.ref.std, 0.001)
    elif method == "ks":
        score = from_counts.ks_p_value(sorted_stats[name].ks_statistic, n_ref, n_cur)
    elif (name, "test") in binned:
        _, ref_hist, cur_hist = binned[(name, "test")]
        score = from_counts.from_histograms(method, ref_hist, cur_hist)
    else:
        assert column.ref_counts is not None and column.cur_counts is not None
        score = from_counts.from_value_counts(
            method, column.ref_counts, column.cur_counts, n_ref, n_cur
        )
    result = ColumnResult(
        column.spec, method, threshold, float(score), from_counts.verdict(method, score, threshold)
    )
    result.display = test.display_name
    return result


def _widget(
    column: _Column,
    result: ColumnResult,
    binned: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> ColumnDataDriftMetrics:
    """Evidently's per-column drift result, as `drift.column_drift` builds it."""
    if column.spec.kind == "num":
        edges, ref_hist, cur_hist = binned[(column.spec.name, "report")]
        ref_dist = Distribution(x=edges, y=ref_hist)
        cur_dist = Distribution(x=edges, y=cur_hist)
    else:
        ref_dist = _category_distribution(column.ref_counts or {}, column.cur_counts or {})
        cur_dist = _category_distribution(column.cur_counts or {}, column.ref_counts or {})
    return drift_metrics(result, cur_dist, ref_dist)


def _category_distribution(mine: dict[Any, int], other: dict[Any, int]) -> Distribution:
    """Counts by category, most frequent first, the other side's categories at 0 (as the
    pandas engine's shared categories show them)."""
    keys = sorted(set(mine) | set(other), key=lambda k: (-mine.get(k, 0), str(k)))
    return Distribution(x=keys, y=[mine.get(k, 0) for k in keys])
