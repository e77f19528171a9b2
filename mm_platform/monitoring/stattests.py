"""Which drift test a column gets, and the tests mm adds to Evidently's registry.

The rule is Evidently's `DataDriftPreset` default with one change. For a column of few
values (categorical, or numeric with at most five) and a reference of at most 1,000
values, Evidently's default is its `chisquare`: a goodness-of-fit test of the current
counts against the reference's proportions taken as exact. A reference that small is
itself a noisy sample, so windows of thousands of rows from the very distribution the
reference came from fail it far more often than the 5 % its threshold promises (measured:
p = 0.0009 on a 5,000-row window of the training distribution, where the two-sample test
on the same counts gives p = 0.59). There mm uses `chisquare_2s`, the two-sample
chi-square test of homogeneity (Pearson's, on the 2 x k table of both sides' counts, no
continuity correction), which counts the reference's own sampling error. It is
registered in Evidently's stattest registry like any of Evidently's tests, so
`monitoring.columns.<c>.method` can name it, Evidently's `ValueDrift(method=...)` computes
the same score, and naming `chisquare` keeps Evidently's own test.
"""

from __future__ import annotations

import os

os.environ.setdefault("DO_NOT_TRACK", "1")  # before Evidently is imported: no telemetry

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from evidently.legacy.calculations import stattests as _stattests
from evidently.legacy.calculations.stattests.registry import (
    StatTest,
    StatTestInvalidFeatureTypeError,
    StatTestNotFoundError,
    get_registered_stattest,
    register_stattest,
)
from evidently.legacy.core import ColumnType

from mm_platform.errors import ProjectConfigError
from mm_platform.monitoring.from_counts import chisquare_two_sample
from mm_platform.monitoring.results import ColumnOptions, ColumnSpec

_TYPES: dict[str, ColumnType] = {"num": ColumnType.Numerical, "cat": ColumnType.Categorical}
SMALL_REFERENCE = 1000  # Evidently's bound: at most this many reference values is "small"


def _chisquare_2s(
    reference: pd.Series, current: pd.Series, feature_type: ColumnType, threshold: float
) -> tuple[float, bool]:
    """Evidently's signature: the two-sample chi-square p-value and whether it is below
    `threshold` (the cleaned columns: no missing values, no infinities)."""
    p_value = chisquare_two_sample(
        reference.value_counts().to_dict(), current.value_counts().to_dict()
    )
    return p_value, p_value < threshold


chisquare_2s = StatTest(
    name="chisquare_2s",
    display_name="two-sample chi-square p_value",
    allowed_feature_types=[ColumnType.Categorical, ColumnType.Numerical],
)
register_stattest(chisquare_2s, default_impl=_chisquare_2s)


def resolve_test(
    spec: ColumnSpec, reference: pd.Series, current: pd.Series, options: ColumnOptions
) -> StatTest:
    """The configured test, or the default of `choose_test`, for two cleaned columns."""
    return choose_test(
        spec,
        options,
        small=reference.shape[0] <= SMALL_REFERENCE,
        more_unique=lambda k: _more_unique(reference, current, k),
    )


def choose_test(
    spec: ColumnSpec, options: ColumnOptions, *, small: bool, more_unique: Callable[[int], bool]
) -> StatTest:
    """The test of a column whose cleaned reference has at most 1000 values (`small`) and
    whose cleaned values hold more than k distinct ones (`more_unique(k)`): the configured
    one, or the default (Evidently's rule, `chisquare_2s` where that gives its
    goodness-of-fit `chisquare`); both engines decide with this rule."""
    ctype = _TYPES[spec.kind]
    if options.method is not None:
        if spec.kind == "num" and options.method in ("chisquare", "z"):
            # registered for categorical columns only, yet Evidently's default rule applies
            # them to numeric columns with few values: allow what it does itself
            return {"chisquare": _stattests.chi_stat_test, "z": _stattests.z_stat_test}[
                options.method
            ]
        try:
            return get_registered_stattest(options.method, ctype)
        except (StatTestNotFoundError, StatTestInvalidFeatureTypeError) as exc:
            raise ProjectConfigError(
                f"monitoring.columns.{spec.name}.method: '{options.method}' cannot test a "
                f"{'numeric' if spec.kind == 'num' else 'categorical'} column ({exc})"
            ) from exc
    # Evidently's rule (stattests.registry._get_default_stattest), without its full
    # nunique of both columns concatenated: only "more than 2 / more than 5" matters
    if spec.kind == "cat" and not small:
        return _stattests.jensenshannon_stat_test
    if spec.kind == "num" and more_unique(5):
        return _stattests.ks_stat_test if small else _stattests.wasserstein_stat_test
    if spec.kind == "num" and not small:
        return _stattests.jensenshannon_stat_test
    # few values and a small reference: two-sample chi-square, or the z-test for two values
    return chisquare_2s if more_unique(2) else _stattests.z_stat_test


def _more_unique(reference: pd.Series, current: pd.Series, k: int) -> bool:
    """Whether the two (NaN-free) columns together hold more than `k` distinct values."""
    seen: set[Any] = set()
    for column in (reference, current):
        for start in range(0, len(column), 4096):  # a few thousand values nearly always tell
            seen.update(pd.unique(column.iloc[start : start + 4096]))
            if len(seen) > k:
                return True
    return False


def wasserstein_norm(reference: pd.Series, current: pd.Series) -> float:
    """Evidently's `wasserstein` score, bit for bit, in a fifth of its time.

    Evidently divides scipy's `wasserstein_distance(reference, current)` by
    max(std(reference), 0.001): the sum over the pooled sorted values of |U(x) - V(x)| times
    the gap to the next value, U and V the two empirical CDFs. scipy argsorts both samples,
    sorts their concatenation and binary-searches every pooled value in both. Here both are
    sorted, the two sorted runs are merged by a stable sort in linear time, and the CDFs are
    running counts of which sample each pooled value came from. Inside a run of tied values
    the counts differ from scipy's, but there the gap is 0; everywhere else the terms are
    the same numbers, so the sum is the same (tests/unit/test_drift.py checks equality).
    """
    u = np.sort(reference.to_numpy(dtype="float64"))
    v = np.sort(current.to_numpy(dtype="float64"))
    pooled = np.concatenate((u, v))
    order = np.argsort(pooled, kind="stable")
    merged = pooled[order]
    del pooled
    deltas = np.diff(merged)
    del merged
    from_u = order[:-1] < u.size
    del order
    # counts below 2**53 are exact in float64: the same CDF values, without int64 copies
    gap = np.cumsum(from_u, dtype="float64")
    gap /= u.size
    other = np.cumsum(~from_u, dtype="float64")
    other /= v.size
    gap -= other
    del other
    np.abs(gap, out=gap)
    distance = float(np.dot(gap, deltas))
    return distance / max(float(np.std(reference)), 0.001)
