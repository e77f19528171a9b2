"""The drift job on the Spark engine against the pandas engine, on the same prediction-log
window, file, folder and reference: same verdicts, scores and run, with `mm.engine`; the
Spark reader of the log (days, compaction, promoted types); not-enough-data and bad types.

One tiny regression project (a numeric column with missing values, a small-integer column,
a string category with missing values) is trained once for the module; every test reads
its own runs back by id. Spark is the session `spark` fixture (local[2])."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mm_platform.errors import DataError
from mm_platform.project.config import Project, load_project
from tests.support import write_project

PROJECT = {
    "name": "homes",
    "task": "regression",
    "dataset": {"source": "file", "path": "homes.csv", "target": "price"},
    "features": {"categorical": ["plan"]},
    "candidates": [{"estimator": "ridge", "params": {"alpha": [1.0]}}],
    "selection": {"metric": "rmse"},
    "split": {"cv_folds": 3},
    "serving": {"prediction_log": "log"},
    "monitoring": {"min_rows": 20, "window": "1h"},
}
SCORE_TOLERANCE = 1e-9


def homes(n: int, seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    """`area` (float, 10% missing, shifted by `shift`), `rooms` (1..5), `plan` (text, 10%
    missing) and the price they make."""
    rng = np.random.default_rng(seed)
    area = rng.gamma(4.0, 20.0, n) + shift
    rooms = rng.integers(1, 6, n)
    plan = rng.choice(["flat", "house", "loft"], n, p=[0.5, 0.3, 0.2]).astype(object)
    price = 2.0 * area + 15.0 * rooms + np.where(plan == "house", 40.0, 0.0) + rng.normal(0, 5, n)
    frame = pd.DataFrame({"area": area, "rooms": rooms, "plan": plan, "price": price})
    frame.loc[rng.uniform(size=n) < 0.1, "area"] = np.nan
    frame.loc[rng.uniform(size=n) < 0.1, "plan"] = None
    return frame


@dataclass
class Trained:
    project: Project
    folder: Path
    start: datetime
    end: datetime
    scored: pd.DataFrame  # the logged window's rows as `mm predict` wrote them


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """The project trained once, with a window of logged traffic (area shifted) of which
    half the rows are labelled."""
    import mlflow

    from mm_platform import tracking
    from mm_platform.serving.batch import ingest_labels, predict_file
    from mm_platform.serving.predlog.writer import log_root
    from mm_platform.training.search import train_project

    folder = tmp_path_factory.mktemp("spark-drift")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        patch.delenv("MM_PREDICTION_LOG", raising=False)
        patch.chdir(folder)
        homes(600, 0).to_csv(folder / "homes.csv", index=False)
        project = load_project(write_project(folder, PROJECT))
        train_project(project)
        start = datetime.now(timezone.utc) - timedelta(minutes=1)
        traffic = homes(400, 1, shift=25.0)
        traffic.drop(columns=["price"]).to_csv(folder / "traffic.csv", index=False)
        uri = f"models:/{project.name}/1"
        result = predict_file(
            project, folder / "traffic.csv", version="1", model=tracking.load_pyfunc(uri),
            schema=tracking.input_schema(uri), log_root=log_root("log"),
        )  # fmt: skip
        scored = pd.read_csv(result.output)
        labels = scored[["request_id"]].assign(label=traffic["price"]).iloc[::2]
        labels.to_csv(folder / "labels.csv", index=False)
        ingest_labels(project, folder / "labels.csv", log_root=log_root("log"))
        end = datetime.now(timezone.utc) + timedelta(seconds=1)
        yield Trained(project, folder, start, end, scored)
        while mlflow.active_run() is not None:
            mlflow.end_run("FAILED")


def run(trained: Trained, engine: str, **kwargs):
    from mm_platform.monitoring.job import run_drift

    if "current_path" not in kwargs:
        kwargs.setdefault("start", trained.start)
        kwargs.setdefault("end", trained.end)
    return run_drift(trained.project, engine=engine, retrain=False, **kwargs)


def recorded(outcome) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    from mlflow import MlflowClient

    data = MlflowClient().get_run(outcome.run_id).data
    return data.metrics, data.params, data.tags


def assert_same_drift(pandas_outcome, spark_outcome) -> None:
    """Same verdict, drifted columns, metric keys, and every metric within 1e-9."""
    assert spark_outcome.status == pandas_outcome.status
    assert spark_outcome.drifted_columns == pandas_outcome.drifted_columns
    on_pandas, pandas_params, pandas_tags = recorded(pandas_outcome)
    on_spark, spark_params, spark_tags = recorded(spark_outcome)
    assert set(on_spark) == set(on_pandas)
    for key, value in on_pandas.items():
        assert on_spark[key] == pytest.approx(value, abs=SCORE_TOLERANCE, rel=0), key
    assert (pandas_tags["mm.engine"], spark_tags["mm.engine"]) == ("pandas", "spark")
    assert spark_params["spark.master"].startswith("local") and "spark.master" not in pandas_params
    assert spark_params["sample_rows"] == "none"
    methods = {k: v for k, v in pandas_params.items() if k.startswith(("method.", "threshold."))}
    assert {k: spark_params[k] for k in methods} == methods


def test_a_logged_window_gets_the_same_drift_run_on_spark_as_on_pandas(
    trained: Trained, spark: object
) -> None:
    on_pandas = run(trained, "pandas")
    on_spark = run(trained, "spark")
    assert on_pandas.n_current == on_spark.n_current == 400
    assert on_pandas.status == "drift" and "area" in on_pandas.drifted_columns
    metrics, _, _ = recorded(on_pandas)
    assert metrics["n_labelled_rows"] == 200 and "target_drift_score" in metrics
    assert {"current_rmse", "reference_rmse", "performance_drop"} <= set(metrics)
    assert {"estimated_current_rmse", "estimation_error_rmse"} <= set(metrics)  # DLE
    # the scores (and estimates): equal once compute_spark gives the pandas engine's
    assert_same_drift(on_pandas, on_spark)


def test_a_parquet_folder_as_current_is_read_by_spark(trained: Trained, spark: object) -> None:
    folder = trained.folder / "current-parts"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    rows = trained.scored.drop(columns=["request_id"])
    for i, part in enumerate(np.array_split(rows, 3)):
        part.to_parquet(folder / f"part-{i}.parquet", index=False)
    on_pandas = run(trained, "pandas", current_path=folder)
    on_spark = run(trained, "spark", current_path=str(folder))
    assert on_spark.n_current == on_pandas.n_current == 400
    _, _, tags = recorded(on_spark)
    assert tags["mm.source"] == str(folder)
    assert_same_drift(on_pandas, on_spark)


def test_a_reference_file_without_predictions_is_scored_on_both_engines(
    trained: Trained, spark: object
) -> None:
    reference = trained.folder / "reference.parquet"
    homes(500, 7).to_parquet(reference, index=False)  # no prediction: the version scores it
    on_pandas = run(trained, "pandas", reference=str(reference))
    on_spark = run(trained, "spark", reference=str(reference))
    metrics, _, _ = recorded(on_spark)
    assert metrics["n_reference_rows"] == 500
    assert_same_drift(on_pandas, on_spark)


def test_a_reference_without_the_target_has_no_target_drift_and_says_so(
    trained: Trained, spark: object
) -> None:
    reference = trained.folder / "features-only.parquet"
    homes(300, 8).drop(columns=["price"]).to_parquet(reference, index=False)
    outcomes = [run(trained, engine, reference=str(reference)) for engine in ("pandas", "spark")]
    for outcome in outcomes:
        metrics, _, tags = recorded(outcome)
        assert "target_drift_score" not in metrics and "reference_rmse" not in metrics
        assert metrics["n_labelled_rows"] == 200 and "current_rmse" in metrics
        assert "the reference has no target column 'price'" in tags["mm.message"]
    assert_same_drift(*outcomes)


def test_an_empty_window_on_spark_is_not_enough_data(trained: Trained, spark: object) -> None:
    long_ago = datetime(2020, 1, 1, tzinfo=timezone.utc)
    empty = run(trained, "spark", start=long_ago, end=long_ago + timedelta(days=1))
    assert (empty.status, empty.exit_code, empty.n_current) == ("not_enough_data", 6, 0)
    metrics, _, tags = recorded(empty)
    assert tags["mm.engine"] == "spark" and "drift_share" not in metrics
    few_rows = trained.folder / "few.parquet"
    trained.scored.drop(columns=["request_id"]).head(10).to_parquet(few_rows, index=False)
    few = run(trained, "spark", current_path=str(few_rows))  # fewer than min_rows (20)
    assert (few.status, few.n_current) == ("not_enough_data", 10)


def test_a_text_column_where_numbers_are_expected_is_named_on_spark(
    trained: Trained, spark: object
) -> None:
    folder = trained.folder / "text-area"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    rows = trained.scored.drop(columns=["request_id"]).assign(area="big")
    rows.to_parquet(folder / "part-0.parquet", index=False)
    with pytest.raises(DataError, match=r"text-area: column\(s\) area \(string\) should be"):
        run(trained, "spark", current_path=str(folder))


def test_a_log_part_typing_a_column_as_text_names_the_file_and_column(
    tmp_path: Path, spark: object
) -> None:
    from mm_platform.serving.predlog.spark_reader import read_log
    from mm_platform.serving.predlog.store import write_table

    root = str(tmp_path / "log")
    day = "2026-01-01"
    write_table(root, "predictions", "m", _log_rows([1.0, 2.0], day), day=day)
    odd = write_table(root, "predictions", "m", _log_rows(["a", "b"], day), day=day)
    with pytest.raises(DataError, match=rf"{odd}: column 'x' is string in this Parquet part"):
        read_log(spark, root, "predictions", "m")


def test_the_spark_reader_reads_a_window_as_the_pandas_reader_does(
    tmp_path: Path, spark: object
) -> None:
    """Ints in one file and floats in another are promoted; days outside the window are
    not read; a day caught mid-compaction (merged file and its sources) counts once."""
    from mm_platform.serving.predlog.maintenance import compact
    from mm_platform.serving.predlog.reader import read_window
    from mm_platform.serving.predlog.spark_reader import read_log
    from mm_platform.serving.predlog.store import write_table

    root = str(tmp_path / "log")
    for day, values in (("2026-01-01", [1, 2, 3]), ("2026-01-02", [4.5, 5.5]),
                        ("2026-01-02", [9.5]), ("2026-01-02", [6, 7]),
                        ("2026-01-03", [8.0])):  # fmt: skip
        write_table(root, "predictions", "m", _log_rows(values, day), day=day)
    folder = tmp_path / "log/predictions/model=m/date=2026-01-02"
    sources = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}
    assert compact(root, "m").partitions == 1  # the two files of floats merged
    for name, content in sources.items():  # as if the sources were not yet deleted
        (folder / name).write_bytes(content)
    start = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    end = datetime(2026, 1, 3, tzinfo=timezone.utc)
    expected = read_window(root, "predictions", "m", start, end)
    frame = read_log(spark, root, "predictions", "m", start, end)
    assert frame is not None and dict(frame.dtypes)["x"] == "double"
    got = frame.toPandas().sort_values("x").reset_index(drop=True)
    assert got["x"].tolist() == sorted(expected["x"]) == [3.0, 4.5, 5.5, 6.0, 7.0, 9.5]
    assert read_log(spark, root, "predictions", "m", end + timedelta(days=5)) is None


def _log_rows(values: list, day: str) -> pa.Table:
    """Log records of one column `x`, stamped `day` 00:00 + i hours."""
    base = pd.Timestamp(day, tz="UTC").value
    stamps = [base + i * 3_600 * 10**9 * 8 for i in range(len(values))]
    return pa.table({
        "request_id": [f"{day}-{v}" for v in values],
        "timestamp": pa.array(stamps, pa.int64()).view(pa.timestamp("ns", tz="UTC")),
        "model_name": ["m"] * len(values), "model_version": ["1"] * len(values),
        "x": values,
    })  # fmt: skip


def test_mm_drift_takes_the_engine_and_reference_from_the_project_file_or_the_flags(
    trained: Trained, spark
) -> None:
    """`monitoring.engine: spark` and `monitoring.reference: <table>` in the project file;
    `--engine pandas` wins over the file, and a table needs the Spark engine."""
    from click.testing import CliRunner
    from mlflow import MlflowClient

    from mm_platform.cli.main import main

    spark.createDataFrame(homes(500, 9)).createOrReplaceTempView("homes_reference")
    config = {**PROJECT, "monitoring": {**PROJECT["monitoring"], "engine": "spark",
                                        "reference": "homes_reference"}}  # fmt: skip
    project_file = write_project(trained.folder, config, name="on-spark.yaml")
    current = trained.folder / "current.parquet"
    trained.scored.drop(columns=["request_id"]).to_parquet(current, index=False)
    runner = CliRunner()
    result = runner.invoke(main, ["drift", str(project_file), "--current", str(current)])
    assert result.exit_code == 5, result.output  # area drifted
    run_id = result.output.split("run: ")[1].split()[0]
    tags, metrics = (lambda d: (d.tags, d.metrics))(MlflowClient().get_run(run_id).data)
    assert tags["mm.engine"] == "spark" and metrics["n_reference_rows"] == 500
    refused = runner.invoke(
        main, ["drift", str(project_file), "--current", str(current), "--engine", "pandas"]
    )
    assert refused.exit_code == 2
    assert "homes_reference: no such file or folder; a table as the reference needs the " \
        "Spark engine" in refused.output  # fmt: skip


def test_performance_on_spark_takes_a_bounded_sample_of_the_labelled_rows(
    trained: Trained, spark: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mm_platform.monitoring import spark_job

    monkeypatch.setattr(spark_job, "PERFORMANCE_ROWS", 50)
    outcome = run(trained, "spark")
    metrics, params, tags = recorded(outcome)
    assert metrics["n_labelled_rows"] == 200  # counted by Spark, all of them
    assert 20 <= int(params["performance_rows"]) <= 50 and "current_rmse" in metrics
    assert f"performance on a sample of {params['performance_rows']} of 200" in tags["mm.message"]


def test_the_latest_label_of_a_request_is_joined_as_on_pandas(tmp_path: Path, spark) -> None:
    """Labels of one request ingested twice (an int label, then a float one): the later
    wins, labels of other requests are not joined, unlabelled rows get null."""
    from mm_platform.serving.batch import join_labels as join_on_pandas
    from mm_platform.serving.predlog.reader import read_window
    from mm_platform.serving.predlog.spark_reader import logged_with_labels
    from mm_platform.serving.predlog.store import write_partition, write_table

    root, day = str(tmp_path / "log"), "2026-01-01"
    write_table(root, "predictions", "m", _log_rows([1.0, 2.0, 3.0], day), day=day)
    for stamp, ids, values in ((1, ["2026-01-01-1.0", "2026-01-01-2.0"], [10, 20]),
                               (2, ["2026-01-01-1.0", "elsewhere"], [11.5, 99.0])):  # fmt: skip
        when = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=stamp)
        labels = pd.DataFrame({"request_id": ids, "label": values, "labelled_at": when})
        write_partition(root, "labels", "m", labels)
    joined = logged_with_labels(spark, root, "m", "y")
    assert joined is not None
    got = joined.toPandas().set_index("request_id")["y"]
    expected = join_on_pandas(
        read_window(root, "predictions", "m"), read_window(root, "labels", "m"), "y"
    ).set_index("request_id")["y"]
    assert got["2026-01-01-1.0"] == 11.5 and got["2026-01-01-2.0"] == 20.0
    assert pd.isna(got["2026-01-01-3.0"]) and "elsewhere" not in got.index
    assert got.sort_index().astype(float).equals(expected.sort_index().astype(float))
