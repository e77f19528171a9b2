"""`mm train --engine spark`: the CV fits run as Spark tasks (joblib's Spark backend on the
shared local[2] session) and log the same runs, scores and winner as the local search."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mm_platform.cli.main import main
from tests.support import SEED_LINEAR, free_port, mm, write_project

# a seeded forest (random_state from the project's seed) and a trial that fails at fit time
# (500 neighbours among ~107 rows per training fold), next to the ridge grid
REGRESSION = {
    **copy.deepcopy(SEED_LINEAR),
    "name": "spark-reg",
    "candidates": [
        {"estimator": "ridge", "params": {"alpha": [0.1, 1.0]}},
        {"estimator": "random_forest", "params": {"n_estimators": [15], "max_depth": [3, 6]}},
        {"estimator": "knn", "params": {"n_neighbors": [500]}},
    ],
}

CLASSIFICATION = {
    "name": "spark-churn",
    "task": "binary",
    "seed": 7,
    "dataset": {"source": "file", "path": "churn.csv", "target": "churn"},
    "features": {"categorical": ["plan"]},
    "candidates": [
        {"estimator": "logistic", "params": {"C": [0.05, 1.0]}},
        {
            "estimator": "decision_tree",
            "params": {"max_depth": [2, 8]},
            "search": {"kind": "random", "n_iter": 2},
        },
    ],
    "selection": {"metric": "f1"},
    "split": {"cv_folds": 3},
}


def _write_churn(path: Path, n: int = 300, seed: int = 3) -> None:
    """Churn with a string category and missing values in a numeric and the string column."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    plan = rng.choice(["basic", "plus", "pro"], size=n)
    lift = pd.Series(plan).map({"basic": -0.5, "plus": 0.0, "pro": 0.8}).to_numpy()
    churn = np.where(x1 + 0.5 * x2 + lift + rng.normal(scale=0.7, size=n) > 0, "Yes", "No")
    frame = pd.DataFrame({"x1": x1, "x2": x2, "plan": plan, "churn": churn})
    frame.loc[rng.choice(n, 25, replace=False), "x1"] = np.nan
    frame.loc[rng.choice(n, 20, replace=False), "plan"] = None
    frame.to_csv(path, index=False)


def _train(path: Path, engine: str) -> None:
    """`mm train PATH --engine ENGINE` in this process, so Spark is the shared session."""
    outcome = CliRunner().invoke(main, ["train", str(path), "--engine", engine])
    assert outcome.exit_code == 0, outcome.output + repr(outcome.exception)


def _search(client, experiment_id: str, engine: str) -> tuple[object, dict]:
    """The parent run trained with `engine` and its children keyed by their parameters."""
    (parent,) = client.search_runs(
        [experiment_id], f"tags.`mm.engine` = '{engine}' and tags.`mm.run_type` = 'train'"
    )
    children = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    keyed = {}
    for child in children:
        key = (child.data.tags["mm.candidate"], tuple(sorted(child.data.params.items())))
        assert key not in keyed
        keyed[key] = child
    return parent, keyed


def _cv_metrics(run) -> dict[str, float]:
    # every CV score; the fit time is a clock reading, not a result
    return {k: v for k, v in run.data.metrics.items() if k.startswith("cv_") and "seconds" not in k}


@pytest.mark.parametrize("data", [REGRESSION, CLASSIFICATION], ids=["regression", "churn"])
def test_a_spark_search_logs_the_same_trials_and_winner_as_the_local_one(
    spark: object, store: str, tmp_path: Path, data: dict
) -> None:
    from mlflow import MlflowClient

    _write_churn(tmp_path / "churn.csv")
    path = write_project(tmp_path, data)
    _train(path, "pandas")
    _train(path, "spark")

    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(data["name"]).experiment_id
    local, local_trials = _search(client, experiment_id, "pandas")
    on_spark, spark_trials = _search(client, experiment_id, "spark")

    assert set(spark_trials) == set(local_trials) and len(local_trials) >= 4
    for key, trial in local_trials.items():
        twin = spark_trials[key]
        assert twin.info.status == trial.info.status, key
        assert twin.data.tags.get("mm.error") == trial.data.tags.get("mm.error"), key
        expected = _cv_metrics(trial)
        assert set(_cv_metrics(twin)) == set(expected), key
        for name, value in expected.items():
            assert _cv_metrics(twin)[name] == pytest.approx(value, abs=1e-12, rel=0), (key, name)
    primary = f"cv_{data['selection']['metric']}_mean"
    finished = [t for t in local_trials.values() if t.info.status == "FINISHED"]
    assert len({round(t.data.metrics[primary], 9) for t in finished}) > 1  # a real choice

    def winner(parent, trials) -> tuple:
        best_id = parent.data.tags["mm.best_child_run_id"]
        best = {k for k, run in trials.items() if run.info.run_id == best_id}
        best_params = {k: v for k, v in parent.data.params.items() if k.startswith("best.")}
        return parent.data.tags["mm.candidate"], best_params, best

    assert winner(on_spark, spark_trials) == winner(local, local_trials)
    assert on_spark.data.metrics["n_failed_trials"] == local.data.metrics["n_failed_trials"]
    if data is REGRESSION:
        assert on_spark.data.metrics["n_failed_trials"] == 1  # the knn trial, and only it
    assert on_spark.data.params["spark.master"] == "local[2]"  # the master it ran on
    assert local.data.tags["mm.engine"] == "pandas"


def test_an_unreachable_master_is_one_line_exit_2_and_no_run(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    master = f"spark://127.0.0.1:{free_port()}"
    path = write_project(tmp_path, SEED_LINEAR)
    result = mm(
        "train", str(path), "--engine", "spark", cwd=tmp_path, env={"MM_SPARK_MASTER": master}
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and master in errors[0] and "does not answer" in errors[0], (
        result.stderr[-3000:]
    )
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []


def _fails_on_the_executor() -> int:
    raise RuntimeError("not an estimator error: the task itself fails")


def test_a_spark_task_that_fails_stops_the_search_with_one_line(spark: object) -> None:
    from mm_platform.spark import SparkUnavailable
    from mm_platform.training.engines import run_on_spark

    assert run_on_spark([int, int], "local[2]") == [0, 0]
    with pytest.raises(SparkUnavailable, match=r"a Spark task of the search failed on local\[2\]"):
        run_on_spark([int, _fails_on_the_executor, int], "local[2]")
