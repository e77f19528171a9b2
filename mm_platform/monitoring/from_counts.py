"""Evidently's drift tests computed from counts instead of rows.

The Spark engine cannot hand Evidently a column of a billion values, but every test it
runs depends on the values only through exact summaries: how often each value occurs
(chi-square, z, Jensen–Shannon, PSI, KL, Hellinger on categories), how many fall in each
bin of fixed edges (the same tests on a numeric column with many values), or the two
empirical CDFs at the pooled sorted values (KS, Wasserstein; see `spark_sort`). Here those
summaries become the scores, with the arithmetic of Evidently 0.7's own functions
(evidently.legacy.calculations.stattests), so the results equal what Evidently computes on
the rows; tests/unit/test_from_counts.py checks each against Evidently on the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance

# methods the Spark engine computes, and the side of the threshold that means drift
P_VALUE_BELOW = {"chisquare": "<", "chisquare_2s": "<", "z": "<", "ks": "<="}
SCORE_AT_LEAST = frozenset({"jensenshannon", "psi", "kl_div", "hellinger", "wasserstein"})
FROM_COUNTS = frozenset(
    {"chisquare", "chisquare_2s", "z", "jensenshannon", "psi", "kl_div", "hellinger"}
)
SPARK_METHODS = frozenset(FROM_COUNTS | {"ks", "wasserstein"})
_KS_MAX_EXACT = 10_000  # ks_2samp's MAX_AUTO_N: "auto" is exact up to this many values
HISTOGRAM_MIN_UNIQUE = 20  # get_binned_data bins a numeric column with more reference values


def verdict(method: str, score: float, threshold: float) -> bool:
    """Whether `score` means drift for `method` (Evidently's comparison for that test)."""
    side = P_VALUE_BELOW.get(method)
    if side == "<":
        return score < threshold
    if side == "<=":
        return score <= threshold
    return score >= threshold


def sturges_edges(low: float, high: float, n: int) -> np.ndarray:
    """`np.histogram_bin_edges(values, bins="sturges")` of `n` values spanning [low, high],
    with numpy's own arithmetic (the edges depend on the values only through these)."""
    first, last = float(low), float(high)
    if first == last:
        first, last = first - 0.5, last + 0.5
    width = (last - first) / (np.log2(n) + 1.0)
    bins = int(np.ceil((last - first) / width)) if width else 1
    return np.linspace(first, last, bins + 1, endpoint=True)


def _fill_zeroes(percents: np.ndarray) -> np.ndarray:
    """get_binned_data's `feel_zeroes`: empty bins get a small share instead of 0."""
    nonzero = percents[percents != 0]
    low = min(nonzero)
    np.place(percents, percents == 0, low / 10**6 if low <= 0.0001 else 0.0001)
    return percents


def binned(
    ref: Mapping[Any, int] | np.ndarray,
    cur: Mapping[Any, int] | np.ndarray,
    n_ref: int,
    n_cur: int,
    *,
    fill_zeroes: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """get_binned_data's two share arrays, from value counts (dicts) or bin counts (arrays)."""
    if isinstance(ref, Mapping) and isinstance(cur, Mapping):
        keys = list(set(ref) | set(cur))
        ref_p = np.array([ref.get(k, 0) / n_ref for k in keys])
        cur_p = np.array([cur.get(k, 0) / n_cur for k in keys])
    else:
        ref_p = np.asarray(ref) / n_ref
        cur_p = np.asarray(cur) / n_cur
    if fill_zeroes:
        ref_p, cur_p = _fill_zeroes(ref_p), _fill_zeroes(cur_p)
    return ref_p, cur_p


def score_binned(method: str, ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    """Jensen–Shannon distance, PSI or KL divergence of two share arrays."""
    if method == "jensenshannon":
        return float(distance.jensenshannon(ref_p, cur_p, None))
    if method == "psi":
        return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))
    if method == "kl_div":
        return float(stats.entropy(ref_p, cur_p))
    raise ValueError(method)


def chisquare(ref: Mapping[Any, int], cur: Mapping[Any, int], n_ref: int, n_cur: int) -> float:
    """Evidently's chi-square p-value: current counts against the reference's, scaled."""
    keys = list(set(ref) | set(cur))
    k_norm = n_cur / n_ref
    f_exp = [ref.get(k, 0) * k_norm for k in keys]
    f_obs = [cur.get(k, 0) for k in keys]
    with np.errstate(divide="ignore"):  # a value the reference never had: p = 0, as Evidently
        return float(stats.chisquare(f_obs, f_exp)[1])


def chisquare_two_sample(ref: Mapping[Any, int], cur: Mapping[Any, int]) -> float:
    """The two-sample chi-square test of homogeneity (`stattests.chisquare_2s`): Pearson's
    statistic on the 2 x k table of both sides' counts of the k values seen, k - 1 degrees
    of freedom, no continuity correction (scipy's `chi2_contingency(table,
    correction=False)`). One value only on both sides: p = 1."""
    keys = [k for k in set(ref) | set(cur) if ref.get(k, 0) + cur.get(k, 0) > 0]
    if len(keys) < 2:
        return 1.0
    table = np.array([[ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys]], "float64")
    rows, columns, total = table.sum(axis=1), table.sum(axis=0), table.sum()
    if not rows.all():
        return 1.0  # one side is empty: nothing to compare
    expected = np.outer(rows, columns) / total
    statistic = float(((table - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(statistic, len(keys) - 1))


def z_test(ref: Mapping[Any, int], cur: Mapping[Any, int], n_ref: int, n_cur: int) -> float:
    """Evidently's two-proportion z-test p-value: the share of values other than the
    smallest one, on each side."""
    ref_keys = [k for k, n in ref.items() if n]
    cur_keys = [k for k, n in cur.items() if n]
    if len(ref_keys) == 1 and len(cur_keys) == 1 and ref_keys[0] == cur_keys[0]:
        return 1.0
    first = sorted(set(ref_keys) | set(cur_keys))[0]
    p1 = float(n_ref - ref.get(first, 0)) / n_ref
    p2 = float(n_cur - cur.get(first, 0)) / n_cur
    pooled = float(p1 * n_ref + p2 * n_cur) / (n_ref + n_cur)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def hellinger(ref: Mapping[Any, int], cur: Mapping[Any, int], n_ref: int, n_cur: int) -> float:
    """Evidently's Hellinger distance of a categorical column."""
    total = 0.0
    for key in set(ref) | set(cur):
        total += np.sqrt(float(ref.get(key, 0) / n_ref) * float(cur.get(key, 0) / n_cur))
    return float(np.sqrt(1 - np.clip(total, 0, 1)))


def from_value_counts(
    method: str, ref: Mapping[Any, int], cur: Mapping[Any, int], n_ref: int, n_cur: int
) -> float:
    """A score from the two value counts (of cleaned values: no missing, no infinities)."""
    if method == "chisquare":
        return chisquare(ref, cur, n_ref, n_cur)
    if method == "chisquare_2s":
        return chisquare_two_sample(ref, cur)
    if method == "z":
        return z_test(ref, cur, n_ref, n_cur)
    if method == "hellinger":
        return hellinger(ref, cur, n_ref, n_cur)
    ref_p, cur_p = binned(ref, cur, n_ref, n_cur, fill_zeroes=method != "jensenshannon")
    return score_binned(method, ref_p, cur_p)


def from_histograms(method: str, ref: np.ndarray, cur: np.ndarray) -> float:
    """A score from the two histograms over `sturges_edges` (a numeric column with more
    than 20 reference values); the counts of each side sum to its number of values."""
    n_ref, n_cur = int(np.sum(ref)), int(np.sum(cur))
    ref_p, cur_p = binned(ref, cur, n_ref, n_cur, fill_zeroes=method != "jensenshannon")
    return score_binned(method, ref_p, cur_p)


def ks_p_value(d: float, n_ref: int, n_cur: int) -> float:
    """scipy's two-sided `ks_2samp` p-value (method "auto") of statistic `d` between
    samples of `n_ref` and `n_cur` values: exact up to 10,000 values, else asymptotic."""
    from scipy.stats import _stats_py  # the exact path is private in scipy

    g = int(np.gcd(n_ref, n_cur))
    exact = max(n_ref, n_cur) <= _KS_MAX_EXACT
    if exact and n_ref // g < np.iinfo(np.int32).max / (n_cur // g):
        with np.errstate(all="ignore"):
            success, d, prob = _stats_py._attempt_exact_2kssamp(n_ref, n_cur, g, d, "two-sided")
        if success:
            return float(np.clip(prob, 0, 1))
    m, n = sorted([float(n_ref), float(n_cur)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(stats.distributions.kstwo.sf(d, np.round(en)), 0, 1))
