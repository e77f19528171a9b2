"""Drift computed with Evidently's tests: verdicts on known cases, equality with raw
`DataDriftPreset`, the checks before Evidently sees the data, and the report."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from mm_platform.errors import DataError, ProjectConfigError
from mm_platform.monitoring.drift import (
    ColumnOptions,
    ColumnSpec,
    build_report,
    check_current,
    compute,
    metric_key,
)

SPECS = [
    ColumnSpec("a", "num"),
    ColumnSpec("b", "num"),
    ColumnSpec("steps", "num"),  # four distinct values: Evidently tests it as categorical-like
    ColumnSpec("colour", "cat"),
    ColumnSpec("size", "cat"),
]


def frames(n: int, *, shift: bool, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current data; with `shift`, columns a and colour move, b and size don't."""
    rng = np.random.default_rng(seed)

    def make(moved: bool) -> pd.DataFrame:
        colours = ["red", "green", "blue"]
        weights = [0.1, 0.2, 0.7] if moved else [0.5, 0.3, 0.2]
        return pd.DataFrame(
            {
                "a": rng.normal(1.5 if moved else 0.0, 1.0, n),
                "b": rng.normal(10.0, 2.0, n),
                "steps": rng.integers(0, 4, n).astype(float),
                "colour": rng.choice(colours, n, p=weights).astype(object),
                "size": rng.choice(["s", "m", "l", "xl"], n).astype(object),
            }
        )

    return make(False), make(shift)


def raw_evidently_scores(
    reference: pd.DataFrame, current: pd.DataFrame, per_column: dict[str, str] | None = None
) -> dict[str, float]:
    """Per-column drift scores of raw `Report([DataDriftPreset()])` (types inferred), with
    `per_column` methods named to Evidently where mm's default differs from its own."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    preset = DataDriftPreset(per_column_method=per_column or None)
    snapshot = Report([preset]).run(current, reference)
    scores = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = metric["value"]
    return scores


@pytest.mark.parametrize("n", [300, 5000])  # Evidently picks other tests at <= 1000 rows
def test_known_drift_is_flagged_and_stable_columns_are_not(n: int) -> None:
    # a fixed seed: each test has a false-positive rate of its threshold (p < 0.05)
    reference, current = frames(n, shift=True, seed=2)
    result = compute(reference, current, SPECS, for_report=False)
    drifted = {c.spec.name for c in result.columns if c.drifted}
    assert drifted == {"a", "colour"}
    assert result.n_drifted == 2 and result.drift_share == pytest.approx(2 / 5)
    assert not result.dataset_drift  # 0.4 < Evidently's default share of 0.5


@pytest.mark.parametrize("n", [300, 5000])
def test_no_drift_when_both_sides_come_from_one_distribution(n: int) -> None:
    reference, current = frames(n, shift=False, seed=2)
    result = compute(reference, current, SPECS, for_report=False)
    assert [c.spec.name for c in result.columns if c.drifted] == []
    assert not result.detected


@pytest.mark.parametrize("n,shift", [(300, True), (5000, True), (5000, False)])
def test_scores_equal_raw_evidently(n: int, shift: bool) -> None:
    reference, current = frames(n, shift=shift, seed=3)
    ours = compute(reference, current, SPECS, for_report=False)
    # the one default mm changes: the two-sample chi-square where Evidently's is
    # goodness-of-fit (<= 1000 reference values); Evidently computes it from its registry
    two_sample = {c.spec.name: c.method for c in ours.columns if c.method == "chisquare_2s"}
    assert bool(two_sample) == (n <= 1000)
    raw = raw_evidently_scores(reference, current, two_sample)
    assert set(raw) == {s.name for s in SPECS}
    for column in ours.columns:
        assert column.score == pytest.approx(raw[column.spec.name], abs=1e-9, rel=0)


def test_methods_expected_from_evidentlys_rule() -> None:
    reference, current = frames(5000, shift=False)
    methods = {c.spec.name: c.method for c in compute(reference, current, SPECS).columns}
    assert methods == {
        "a": "wasserstein",
        "b": "wasserstein",
        "steps": "jensenshannon",
        "colour": "jensenshannon",
        "size": "jensenshannon",
    }
    small = {c.spec.name: c.method for c in compute(*frames(300, shift=False), SPECS).columns}
    # Evidently's rule would give its goodness-of-fit "chisquare" to the last three
    assert small == {"a": "ks", "b": "ks", "steps": "chisquare_2s", "colour": "chisquare_2s",
                     "size": "chisquare_2s"}  # fmt: skip
    kept = compute(*frames(300, shift=False), SPECS, options={"colour": ColumnOptions("chisquare")})
    assert {c.spec.name: c.method for c in kept.columns}["colour"] == "chisquare"


def test_two_sample_chisquare_is_pearsons_test_of_homogeneity() -> None:
    from scipy.stats import chi2_contingency

    from mm_platform.monitoring.from_counts import chisquare_two_sample

    ref = {"a": 120, "b": 300, "c": 80}
    cur = {"a": 1300, "b": 2900, "c": 700, "d": 3}  # "d": a value the reference never had
    keys = sorted(set(ref) | set(cur))
    table = [[ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys]]
    expected = chi2_contingency(table, correction=False)[1]
    assert chisquare_two_sample(ref, cur) == pytest.approx(expected, rel=1e-12, abs=0)
    assert chisquare_two_sample({"a": 5}, {"a": 9}) == 1.0  # one value on both sides


def _churn_like(n: int, rng: np.random.Generator, *, shift: float = 0.0) -> pd.DataFrame:
    """A table like a new user's churn data: skewed categories and a few numbers."""
    regions = np.array(["north", "south", "east", "west", "centre"], dtype=object)
    services = np.array(["dsl", "fibre", "none"], dtype=object)
    region_p = np.array([0.35, 0.25, 0.2, 0.15, 0.05]) + shift * np.array([-1, 0, 0, 0, 1])
    return pd.DataFrame(
        {
            "region": rng.choice(regions, n, p=region_p / region_p.sum()),
            "internet_service": rng.choice(services, n, p=[0.4, 0.45, 0.15]),
            "contract": rng.choice(np.array(["month", "year"], dtype=object), n, p=[0.6, 0.4]),
            "tenure": rng.integers(0, 72, n).astype(float) + shift * 24,
            "charges": rng.gamma(4.0, 20.0, n),
            "tickets": rng.poisson(0.8, n).clip(0, 4).astype(float),  # five values
        }
    )


def test_a_small_reference_raises_alarms_at_the_tests_nominal_rate() -> None:
    """A 1,000-row holdout reference against twenty 5,000-row windows of the same
    distribution: Evidently's goodness-of-fit default flagged such windows' categories at
    p ~ 0.001; with two-sample tests the share of flagged column-windows is about the 5 %
    the threshold promises, and no window declares dataset drift. Real shifts still show."""
    rng = np.random.default_rng(11)
    reference = _churn_like(1000, rng)
    specs = [ColumnSpec(c, "cat" if reference[c].dtype == object else "num") for c in reference]
    flagged, tested = 0, 0
    for _ in range(20):
        result = compute(reference, _churn_like(5000, rng), specs, for_report=False)
        assert not result.dataset_drift
        flagged += result.n_drifted
        tested += len(result.features)
    assert flagged / tested <= 0.10, f"{flagged} of {tested} column-windows flagged"
    shifted = compute(reference, _churn_like(5000, rng, shift=0.1), specs, for_report=False)
    assert {"region", "tenure"} <= {c.spec.name for c in shifted.columns if c.drifted}


def test_configured_method_and_threshold_are_used_and_checked() -> None:
    reference, current = frames(2000, shift=True)
    options = {"a": ColumnOptions("psi", 5.0), "colour": ColumnOptions(threshold=0.9)}
    result = compute(reference, current, SPECS, options=options, for_report=False)
    by_name = {c.spec.name: c for c in result.columns}
    assert by_name["a"].method == "psi" and by_name["a"].threshold == 5.0
    assert not by_name["a"].drifted  # the score is far below the configured 5.0
    assert by_name["colour"].method == "jensenshannon" and by_name["colour"].threshold == 0.9
    with pytest.raises(ProjectConfigError, match=r"monitoring.columns.colour.method: 'ks'"):
        compute(reference, current, SPECS, options={"colour": ColumnOptions("ks")})


def test_missing_column_and_wrong_dtype_are_clear_errors() -> None:
    _, current = frames(200, shift=False)
    with pytest.raises(DataError, match=r"window.csv: missing column\(s\) \['b'\]"):
        check_current(current.drop(columns=["b"]), SPECS, source="window.csv")
    current["a"] = current["a"].astype(str)
    with pytest.raises(DataError, match=r"column\(s\) a \(object\) should be numeric"):
        check_current(current, SPECS, source="window.csv")


def test_all_nan_column_is_a_quality_failure_and_not_tested() -> None:
    reference, current = frames(500, shift=False)
    current["b"] = np.nan
    current.loc[:9, "size"] = "xxl"  # a category the reference never had
    current.loc[:4, "a"] = 99.0  # out of the reference's range
    result = compute(reference, current, SPECS, for_report=False)
    assert "b" not in {c.spec.name for c in result.columns}
    failures = {q.column: q.failure for q in result.quality_failures}
    assert failures == {"b": "all values missing"}
    assert result.detected
    quality = {q.column: q for q in result.quality}
    assert quality["size"].unseen_categories == 10 and quality["size"].unseen_examples == ["xxl"]
    assert quality["a"].out_of_range == 5
    metrics = result.metrics()
    assert metrics["missing_share.b"] == 1.0 and metrics["n_quality_failures"] == 1.0


def test_an_unseen_category_is_drift_without_a_numpy_warning() -> None:
    reference, current = frames(500, shift=False)  # <= 1000 reference rows
    current.loc[:9, "size"] = "xxl"
    # Evidently's goodness-of-fit chi-square divides by the expected 0 of "xxl"
    gof = {"size": ColumnOptions("chisquare")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "divide by zero encountered in divide"
        result = compute(reference, current, SPECS, options=gof, for_report=False)
        default = compute(reference, current, SPECS, for_report=False)
    size = next(c for c in result.columns if c.spec.name == "size")
    assert size.method == "chisquare" and size.score == 0.0 and size.drifted
    size = next(c for c in default.columns if c.spec.name == "size")
    assert size.method == "chisquare_2s" and size.score < 0.01 and size.drifted


def test_flat_metric_keys_are_mlflow_valid() -> None:
    assert metric_key("price (€)/m²") == "price ___/m_"
    reference, current = frames(300, shift=True)
    specs = [*SPECS, ColumnSpec("a", "num", "prediction")]
    metrics = compute(reference, current, specs, for_report=False).metrics()
    assert {"drift_share", "n_drifted_columns", "drift_score.a", "drifted.colour",
            "prediction_drift_score", "prediction_drifted"} <= set(metrics)  # fmt: skip


def test_report_renders_html_and_reloads_from_its_snapshot() -> None:
    from evidently.core.report import Snapshot

    reference, current = frames(2000, shift=True)
    result = compute(reference, current, SPECS)
    snapshot = build_report(result, name="t")
    html = snapshot.get_html_str(as_iframe=False)
    assert "Drift in column 'colour'" in html and "Jensen-Shannon distance" in html
    reloaded = Snapshot.loads(snapshot.dumps())
    values = {
        m["config"]["column"]: m["value"]
        for m in reloaded.dict()["metrics"]
        if m["config"]["type"].endswith("MmColumnDrift")
    }
    assert values == {c.spec.name: c.score for c in result.columns}


def test_fast_wasserstein_is_bit_identical_to_evidentlys() -> None:
    from evidently.legacy.calculations.stattests import wasserstein_stat_test
    from evidently.legacy.core import ColumnType

    from mm_platform.monitoring.drift import wasserstein_norm

    rng = np.random.default_rng(5)
    cases = [
        (rng.gamma(2.0, 1.5, 20_000), rng.gamma(2.3, 1.5, 15_000)),
        (rng.integers(0, 40, 5000).astype(float), rng.integers(3, 45, 7000).astype(float)),
        (np.full(3000, 2.0), np.r_[np.full(1000, 2.0), np.full(1000, 3.0)]),  # ties, std 0
    ]
    for ref, cur in cases:
        ref, cur = pd.Series(ref), pd.Series(cur)
        expected = wasserstein_stat_test(ref, cur, ColumnType.Numerical, None).drift_score
        assert wasserstein_norm(ref, cur) == expected  # exactly, not approximately


def test_low_cardinality_integers_declared_categorical_match_raw_evidently() -> None:
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"rating": rng.integers(1, 10, 3000)})
    current = pd.DataFrame({"rating": rng.integers(2, 10, 500)})
    raw = raw_evidently_scores(reference, current)
    ours = compute(reference, current, [ColumnSpec("rating", "cat")], for_report=False)
    assert ours.columns[0].method == "jensenshannon"
    assert ours.columns[0].score == pytest.approx(raw["rating"], abs=1e-9, rel=0)


def test_tests_drawing_from_numpys_global_rng_give_the_same_scores_in_threads() -> None:
    reference, current = frames(400, shift=True, seed=4)
    specs = [ColumnSpec(c, "cat") for c in ("colour", "size", "steps")]
    options = {s.name: ColumnOptions("TVD") for s in specs}
    serial = compute(reference, current, specs, options=options, workers=1, for_report=False)
    for _ in range(3):
        parallel = compute(reference, current, specs, options=options, workers=3,
                           for_report=False)  # fmt: skip
        assert [c.score for c in parallel.columns] == [c.score for c in serial.columns]


def test_param_and_metric_keys_pass_mlflows_validation() -> None:
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    name = metric_key("price (€)/m²")
    _validate_metric_name(f"drift_score.{name}")
    _validate_param_name(f"method.{name}")
