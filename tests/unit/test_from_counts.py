"""The count-based scores equal Evidently's own tests on the rows they summarise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.registry import get_registered_stattest
from evidently.legacy.core import ColumnType
from scipy.stats import ks_2samp

from mm_platform.monitoring import from_counts

RNG = np.random.default_rng(7)
CATS_REF = pd.Series(RNG.choice(["a", "b", "c", "d"], 3000, p=[0.4, 0.3, 0.2, 0.1]))
CATS_CUR = pd.Series(RNG.choice(["a", "b", "c", "e"], 2000, p=[0.3, 0.3, 0.3, 0.1]))
TWO_REF = pd.Series(RNG.choice([3, 8], 700))
TWO_CUR = pd.Series(RNG.choice([3, 8], 900, p=[0.6, 0.4]))


def _counts(series: pd.Series) -> dict:
    return series.value_counts().to_dict()


def _evidently(method: str, ref: pd.Series, cur: pd.Series, kind: ColumnType) -> float:
    return float(get_registered_stattest(method, kind)(ref, cur, kind, None).drift_score)


@pytest.mark.parametrize(
    "method", ["chisquare", "chisquare_2s", "jensenshannon", "psi", "kl_div", "hellinger"]
)
def test_value_count_scores_equal_evidently(method: str) -> None:
    import mm_platform.monitoring.stattests  # noqa: F401  (registers chisquare_2s)

    ours = from_counts.from_value_counts(
        method, _counts(CATS_REF), _counts(CATS_CUR), len(CATS_REF), len(CATS_CUR)
    )
    assert ours == pytest.approx(
        _evidently(method, CATS_REF, CATS_CUR, ColumnType.Categorical), abs=1e-12
    )


@pytest.mark.parametrize(("ref", "cur"), [(TWO_REF, TWO_CUR), (TWO_REF, TWO_REF[:50])])
def test_z_test_equals_evidently(ref: pd.Series, cur: pd.Series) -> None:
    ours = from_counts.z_test(_counts(ref), _counts(cur), len(ref), len(cur))
    assert ours == pytest.approx(_evidently("z", ref, cur, ColumnType.Categorical), abs=1e-12)


def test_z_test_of_one_shared_value_is_one() -> None:
    ones = pd.Series([5] * 40)
    assert from_counts.z_test(_counts(ones), _counts(ones), 40, 40) == 1.0


@pytest.mark.parametrize("method", ["jensenshannon", "psi", "kl_div"])
def test_histogram_scores_equal_evidently(method: str) -> None:
    ref = pd.Series(RNG.gamma(2.0, 1.0, 4000))
    cur = pd.Series(RNG.gamma(2.3, 1.0, 2500))
    both = pd.concat([ref, cur])
    edges = from_counts.sturges_edges(both.min(), both.max(), len(both))
    assert np.array_equal(edges, np.histogram_bin_edges(both.to_numpy(), bins="sturges"))
    ours = from_counts.from_histograms(
        method, np.histogram(ref, edges)[0], np.histogram(cur, edges)[0]
    )
    assert ours == pytest.approx(_evidently(method, ref, cur, ColumnType.Numerical), abs=1e-12)


@pytest.mark.parametrize(("n_ref", "n_cur"), [(300, 500), (900, 20_000), (15_000, 40_000)])
def test_ks_p_value_from_the_statistic_equals_scipy(n_ref: int, n_cur: int) -> None:
    ref, cur = RNG.normal(0, 1, n_ref), RNG.normal(0.05, 1, n_cur)
    result = ks_2samp(ref, cur)
    assert from_counts.ks_p_value(float(result.statistic), n_ref, n_cur) == pytest.approx(
        float(result.pvalue), rel=1e-12, abs=1e-300
    )


def test_verdicts_follow_each_tests_side() -> None:
    verdict = from_counts.verdict
    assert verdict("ks", 0.05, 0.05) and not verdict("chisquare", 0.05, 0.05)
    assert verdict("wasserstein", 0.1, 0.1) and not verdict("psi", 0.09, 0.1)
