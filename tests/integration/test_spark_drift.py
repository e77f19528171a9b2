"""The Spark drift engine gives the pandas engine's tests, scores, verdicts and quality
counts on the same rows (real PySpark on local[2], real Evidently)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mm_platform.errors import ProjectConfigError
from mm_platform.monitoring.drift import build_report, compute
from mm_platform.monitoring.results import ColumnOptions, ColumnSpec
from mm_platform.monitoring.spark_drift import compute_spark

SPECS = [
    ColumnSpec("gamma", "num"),
    ColumnSpec("uniform", "num"),
    ColumnSpec("few", "num"),
    ColumnSpec("two", "num"),
    ColumnSpec("many_ints", "num"),
    ColumnSpec("plan", "cat"),
    ColumnSpec("flag", "cat"),
    ColumnSpec("prediction", "num", "prediction"),
    ColumnSpec("target", "num", "target"),
]
METHODS = {
    "gamma": ColumnOptions("psi"),
    "uniform": ColumnOptions("jensenshannon", 0.05),
    "many_ints": ColumnOptions("kl_div"),
    "few": ColumnOptions("ks"),
    "plan": ColumnOptions("chisquare"),
    "flag": ColumnOptions("hellinger"),
}


def _frame(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "gamma": rng.gamma(2.0 + shift, 1.0, n),
            "uniform": rng.uniform(0, 1 + shift, n),
            "few": rng.integers(0, 4, n).astype(float),
            "two": rng.choice([1.0, 2.0], n),
            "many_ints": rng.integers(0, 60, n),
            "plan": rng.choice(["basic", "plus", "pro", "max" if shift else "basic"], n),
            "flag": rng.choice(["yes", "no"], n),
            "prediction": rng.normal(shift, 1, n),
            "target": rng.normal(0, 1, n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "gamma"] = np.nan
    frame.loc[rng.random(n) < 0.02, "uniform"] = np.inf
    frame.loc[rng.random(n) < 0.05, "plan"] = None
    frame.loc[rng.random(n) < 0.5, "target"] = np.nan  # half the rows unlabelled
    return frame


def _same(pandas_result, spark_result) -> None:
    assert [c.spec for c in spark_result.columns] == [c.spec for c in pandas_result.columns]
    for ours, theirs in zip(spark_result.columns, pandas_result.columns, strict=True):
        assert (ours.method, ours.threshold, ours.drifted) == (
            theirs.method,
            theirs.threshold,
            theirs.drifted,
        ), ours.spec.name
        assert ours.score == pytest.approx(theirs.score, rel=1e-9, abs=1e-12), ours.spec.name
    for ours, theirs in zip(spark_result.quality, pandas_result.quality, strict=True):
        assert (ours.missing, ours.unseen_categories, ours.out_of_range, ours.failure) == (
            theirs.missing,
            theirs.unseen_categories,
            theirs.out_of_range,
            theirs.failure,
        ), ours.column
        assert sorted(ours.unseen_examples) == sorted(theirs.unseen_examples)
    assert (spark_result.n_reference, spark_result.n_current) == (
        pandas_result.n_reference,
        pandas_result.n_current,
    )
    assert spark_result.metrics() == pytest.approx(pandas_result.metrics(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "options"),
    [
        (800, 3000, {}),  # a small reference: KS, z and the two-sample chi-square
        (5000, 12_000, {}),  # a large one: Wasserstein and Jensen–Shannon
        (5000, 8000, METHODS),  # configured tests, Sturges histograms, Hellinger
    ],
    ids=["small-reference", "large-reference", "configured"],
)
def test_scores_equal_the_pandas_engine(spark, n_ref: int, n_cur: int, options: dict) -> None:
    reference, current = _frame(n_ref, 0.0, 1), _frame(n_cur, 0.3, 2)
    expected = compute(reference, current, SPECS, options=options)
    # tiny buckets: the sorted pass carries its counts across many buckets and partitions
    got = compute_spark(
        spark.createDataFrame(reference),
        spark.createDataFrame(current),
        SPECS,
        options=options,
        rows_per_bucket=997,
    )
    _same(expected, got)
    assert {c.method for c in got.columns} >= (
        {"ks", "chisquare_2s", "z"} if n_ref <= 1000 else {"wasserstein", "jensenshannon"}
    )
    assert got.detected and "prediction" in [c.spec.name for c in got.columns if c.drifted]


def test_quality_failures_and_the_report(spark) -> None:
    reference, current = _frame(1500, 0.0, 3), _frame(1500, 0.0, 4)
    current["gamma"] = np.nan  # every value missing: a quality failure, not a test
    current.loc[:10, "uniform"] = 99.0  # out of the reference's range
    current.loc[:4, "plan"] = "enterprise"  # a category the reference never had
    expected = compute(reference, current, SPECS)
    got = compute_spark(spark.createDataFrame(reference), spark.createDataFrame(current), SPECS)
    _same(expected, got)
    assert [q.failure for q in got.quality if q.column == "gamma"] == ["all values missing"]
    snapshot = build_report(got)
    html = snapshot.get_html_str(as_iframe=False)
    assert "uniform" in html and "plan" in html


def test_a_test_spark_cannot_compute_is_named(spark) -> None:
    frame = spark.createDataFrame(_frame(300, 0.0, 5))
    with pytest.raises(ProjectConfigError, match=r"monitoring.columns.gamma.method: 'anderson'"):
        compute_spark(frame, frame, SPECS, options={"gamma": ColumnOptions("anderson")})
