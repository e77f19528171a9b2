"""`mm predict --engine spark`: MLflow's spark_udf on a real local[2] session scores a Parquet
folder or a table exactly as the pandas engine does, carries the id columns, appends to the
prediction log on request, and names the file and the column of a Parquet part of another
type."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from mm_platform.errors import DataError
from mm_platform.serving.predlog.reader import read_window
from tests.support import write_project

CHURN = {
    "name": "churn",
    "task": "binary",
    "dataset": {"source": "file", "path": "churn.csv", "target": "churn"},
    "features": {"categorical": ["plan"], "drop": ["customer_id"]},
    "candidates": [{"estimator": "logistic", "params": {"C": [1.0]}}],
    "selection": {"metric": "roc_auc"},
    "split": {"cv_folds": 3},
    "serving": {"prediction_log": "log"},
    "spark": {"master": "local[2]"},
}


def churn_table(n: int, seed: int) -> pd.DataFrame:
    """Customers with missing ages and plans; churn ("Yes"/"No") depends on all three."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    plan = rng.choice(["basic", "pro", "max"], n)
    usage = rng.gamma(2.0, 10.0, n)
    logit = 0.04 * (50 - age) + np.select([plan == "basic", plan == "pro"], [1.0, 0.0], -1.0)
    churn = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-(logit - 0.05 * usage))), "Yes", "No")
    frame = pd.DataFrame(
        {"customer_id": np.arange(1000, 1000 + n) + seed * 100_000, "age": age, "plan": plan,
         "usage": usage, "churn": churn}
    )  # fmt: skip
    frame.loc[rng.uniform(size=n) < 0.1, "age"] = np.nan
    frame.loc[rng.uniform(size=n) < 0.1, "plan"] = None
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A churn project trained once for the module, in its own SQLite store; the working
    directory and MLFLOW_TRACKING_URI point at it while the module's tests run."""
    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project

    folder = tmp_path_factory.mktemp("spark-batch")
    churn_table(400, seed=0).to_csv(folder / "churn.csv", index=False)
    project = write_project(folder, CHURN)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.delenv("MM_PREDICTION_LOG", raising=False)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.chdir(folder)
        assert train_project(load_project(project)).version == "1"
        yield project


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    """300 customers (missing ages and plans, no target) as a folder of two Parquet parts."""
    frame = churn_table(300, seed=1).drop(columns=["churn"])
    folder = tmp_path / "batch"
    folder.mkdir()
    frame.iloc[:170].to_parquet(folder / "part-00000.parquet", index=False)
    frame.iloc[170:].to_parquet(folder / "part-00001.parquet", index=False)
    return folder


def run_mm(*args: str) -> Result:
    """`mm ARGS` in this process (the Spark session is the test session's)."""
    from mm_platform.cli.main import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("customer_id").reset_index(drop=True)


def test_spark_predictions_equal_the_pandas_engine_row_by_row(
    trained: Path, batch: Path, tmp_path: Path, spark: object
) -> None:
    pandas_out = tmp_path / "pandas.parquet"
    result = run_mm("predict", str(trained), str(batch), "--output", str(pandas_out), "--no-log")
    assert result.exit_code == 0, result.output
    spark_out = tmp_path / "spark-out"
    result = run_mm("predict", str(trained), str(batch), "--engine", "spark",
                    "--output", str(spark_out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"scored 300 rows with churn version 1 on spark; predictions and request ids in " \
           f"{spark_out}; not logged" in result.output  # fmt: skip
    expected, got = by_id(pd.read_parquet(pandas_out)), by_id(pd.read_parquet(spark_out))
    assert list(got.columns) == list(expected.columns) == [
        "request_id", "customer_id", "age", "plan", "usage", "prediction", "proba_No",
        "proba_Yes",
    ]  # fmt: skip
    assert list(got["customer_id"]) == [str(i) for i in range(101000, 101300)]
    assert got["age"].isna().sum() > 10 and got["plan"].isna().sum() > 10  # missing values
    pd.testing.assert_frame_equal(
        got.drop(columns="request_id"), expected.drop(columns="request_id"), rtol=1e-12
    )
    assert set(got["prediction"]) == {"No", "Yes"}
    assert (
        got["request_id"].is_unique and got["request_id"].str.fullmatch(r"[0-9a-f]{32}-\d+").all()
    )


def test_spark_batch_logs_every_row_as_the_pandas_engine_does(
    trained: Path, batch: Path, tmp_path: Path, spark: object
) -> None:
    from mm_platform.project.config import load_project
    from mm_platform.serving.spark_batch import predict_spark

    project = load_project(trained)
    pandas_log, spark_log = tmp_path / "pandas-log", tmp_path / "spark-log"
    os.environ["MM_PREDICTION_LOG"] = str(pandas_log)
    try:
        assert run_mm("predict", str(trained), str(batch)).exit_code == 0  # logs by default
    finally:
        del os.environ["MM_PREDICTION_LOG"]
    done = predict_spark(
        project, str(batch), version="1", output=tmp_path / "out", log=True,
        log_root=str(spark_log),
    )  # fmt: skip
    assert done.rows == 300 and done.log_files == 2  # one file per input partition
    logged = by_id(read_window(str(spark_log), "predictions", "churn"))
    served = by_id(read_window(str(pandas_log), "predictions", "churn"))
    scored = by_id(pd.read_parquet(tmp_path / "out"))
    assert list(logged["request_id"]) == list(scored["request_id"])
    assert list(logged.columns) == list(served.columns)
    assert dict(logged.dtypes) == dict(served.dtypes)
    assert set(logged["model_version"]) == {"1"} and set(logged["model_name"]) == {"churn"}
    same = ["customer_id", "age", "plan", "usage", "prediction", "proba_No", "proba_Yes"]
    pd.testing.assert_frame_equal(logged[same], served[same], rtol=1e-12)
    # a missing number is logged as NaN (what conform makes of it), not as a Parquet null
    for root in (spark_log, pandas_log):
        ages = pq.read_table(root / "predictions", columns=["age"]).column("age")
        assert ages.null_count == 0 and pc.sum(pc.is_nan(ages)).as_py() > 10
    files = list((spark_log / "predictions" / "model=churn").rglob("*"))
    assert not [f for f in files if f.name.startswith(".tmp-")]
    assert all(f.parent.name.startswith("date=") for f in files if f.is_file())


def test_a_table_name_is_scored_and_missing_ids_come_out_empty(
    trained: Path, tmp_path: Path, spark: object
) -> None:
    from mm_platform.project.config import load_project
    from mm_platform.serving.spark_batch import predict_spark

    frame = churn_table(50, seed=2).drop(columns=["churn", "customer_id"])
    spark.createDataFrame(frame).createOrReplaceTempView("churn_batch")  # type: ignore[attr-defined]
    done = predict_spark(load_project(trained), "churn_batch", version="1", output=tmp_path / "out")
    scored = pd.read_parquet(tmp_path / "out")
    assert done.rows == 50 and done.log_root is None
    assert scored["customer_id"].isna().all()
    assert np.allclose(scored["proba_No"] + scored["proba_Yes"], 1.0)


def test_a_parquet_part_of_another_type_names_the_file_and_the_column(
    trained: Path, batch: Path, tmp_path: Path, spark: object
) -> None:
    from mm_platform.project.config import load_project
    from mm_platform.serving.spark_batch import predict_spark

    bad = pd.read_parquet(batch / "part-00001.parquet")
    bad["usage"] = bad["usage"].round(1).astype(str)  # numbers written as text in one part
    bad.to_parquet(batch / "part-00001.parquet", index=False)
    wanted = (
        r"part-00001\.parquet: column 'usage' is BINARY in this Parquet part where the other "
        r"parts of .*batch have double"
    )
    with pytest.raises(DataError, match=wanted) as caught:
        predict_spark(load_project(trained), str(batch), version="1", output=tmp_path / "out")
    assert "\n" not in str(caught.value) and caught.value.__cause__ is not None


def test_a_text_column_where_the_model_wants_numbers_is_named(
    trained: Path, tmp_path: Path, spark: object
) -> None:
    from mm_platform.project.config import load_project
    from mm_platform.serving.spark_batch import predict_spark

    frame = churn_table(20, seed=3).drop(columns=["churn"]).astype({"age": str})
    frame.to_parquet(tmp_path / "text.parquet", index=False)
    with pytest.raises(DataError, match=r"text\.parquet: column 'age' is string where the "
                       r"model wants double; write 'age' as double"):  # fmt: skip
        predict_spark(
            load_project(trained), str(tmp_path / "text.parquet"), version="1",
            output=tmp_path / "out",
        )  # fmt: skip


def test_unknown_and_missing_columns_are_refused_before_scoring(
    trained: Path, tmp_path: Path, spark: object
) -> None:
    from mm_platform.project.config import load_project
    from mm_platform.serving.spark_batch import predict_spark

    frame = churn_table(20, seed=3).drop(columns=["churn", "usage"]).assign(extra=1.0)
    frame.to_csv(tmp_path / "cols.csv", index=False)
    wanted = r"cols\.csv: columns do not match .*missing \['usage'\]; not in the model \['extra'\]"
    with pytest.raises(DataError, match=wanted):
        predict_spark(
            load_project(trained), str(tmp_path / "cols.csv"), version="1",
            output=tmp_path / "out",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark", "--output", "out"],
         r"error: nowhere/batch: no such file or folder; give a Parquet file or folder, a CSV "
         r"file, or the name of a table\n"),
        (["--engine", "spark", "--output", "out", "--version", "1"],
         r"error: nowhere/batch: no such file or folder"),
        (["--output", "out.parquet"], r"error: nowhere/batch: no such file\n"),
    ],
)  # fmt: skip
def test_a_missing_input_is_one_line_and_exit_2(
    trained: Path, spark: object, args: list[str], message: str
) -> None:
    result = run_mm("predict", str(trained), "nowhere/batch", *args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert re.search(message, result.output), result.output


def test_a_missing_table_names_it(trained: Path, tmp_path: Path, spark: object) -> None:
    result = run_mm(
        "predict", str(trained), "no_such_table", "--engine", "spark", "--output", "out"
    )
    assert result.exit_code == 2
    assert "error: no_such_table: no such table in the Spark catalog" in result.output


def test_spark_needs_an_output(trained: Path) -> None:
    result = run_mm("predict", str(trained), "batch", "--engine", "spark")
    assert result.exit_code == 2 and "--engine spark needs --output" in result.output


def test_the_pandas_reader_takes_a_parquet_folder_and_refuses_an_empty_one(
    batch: Path, tmp_path: Path
) -> None:
    from mm_platform.data.tables import read_table

    (batch / "_SUCCESS").write_text("")
    (batch / ".part-00000.parquet.crc").write_bytes(b"\0")
    assert len(read_table(batch)) == 300
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: the folder holds no Parquet files"):
        read_table(tmp_path / "empty")


@pytest.mark.parametrize(
    "text",
    [
        "org.apache.spark.SparkException: [FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH] "
        "Encountered error while reading file file:///d/batch/part-7.parquet. Data type "
        "mismatches when reading Parquet column [usage]. Expected Spark type double, actual "
        "Parquet type BINARY. SQLSTATE: KD001\n\tat org.apache.spark...",
        "org.apache.spark.sql.execution.QueryExecutionException: Parquet column cannot be "
        "converted in file file:/d/batch/part-7.parquet. Column: [usage], Expected: double, "
        "Found: BINARY\n\tat org.apache...",
    ],
    ids=["spark4", "spark3"],
)
def test_spark_data_error_reads_both_spark_messages(text: str) -> None:
    from mm_platform.spark.frames import spark_data_error

    error = spark_data_error(RuntimeError(text), "/d/batch")
    assert str(error) == (
        "/d/batch/part-7.parquet: column 'usage' is BINARY in this Parquet part where the "
        "other parts of /d/batch have double; rewrite this part with 'usage' as double, or "
        "move it out of the folder"
    )


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (".", r"batch: the output would overwrite the input"),
        ("scored", r"scored: the output would overwrite the input"),
        ("part-00000.parquet", r"part-00000\.parquet: is a file; the Spark engine writes a folder"),
    ],
)
def test_an_output_that_would_overwrite_the_input_is_refused(
    trained: Path, batch: Path, where: str, message: str
) -> None:
    from mm_platform.project.config import load_project
    from mm_platform.serving.spark_batch import predict_spark

    with pytest.raises(DataError, match=message):
        predict_spark(load_project(trained), str(batch), version="1", output=batch / where)
    assert sorted(p.name for p in batch.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]


@pytest.mark.parametrize("log", [True, False], ids=["log", "no-log"])
def test_an_unwritable_output_says_whether_the_rows_were_logged(
    trained: Path, batch: Path, tmp_path: Path, log: bool
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    flag = "--log" if log else "--no-log"
    result = run_mm("predict", str(trained), str(batch), "--output", f"{blocker}/out.csv", flag)
    assert result.exit_code != 0
    if log:
        assert "the rows are logged, with request ids, in the prediction log" in result.output
    else:
        assert "nothing was logged (--no-log)" in result.output
        assert "rows are logged" not in result.output
