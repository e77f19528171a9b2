"""Dataset sources: seeded generators, sklearn's bundled sets, user files, and bad data."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mm_platform.data.sources import load_dataset
from mm_platform.errors import DataError
from mm_platform.project.config import load_project
from tests.support import PROJECTS, SEED_LINEAR, write_project


def test_seed_linear_is_the_seed_example_and_reproducible() -> None:
    project = load_project(PROJECTS / "seed_linear.yaml")
    first, second = load_dataset(project), load_dataset(project)
    assert list(first.X.columns) == ["x"] and first.y.name == "y"
    pd.testing.assert_frame_equal(first.X, second.X)
    slope, intercept = np.polyfit(first.X["x"], first.y, 1)
    residual = first.y - (slope * first.X["x"] + intercept)
    assert slope == pytest.approx(3.0, abs=0.05)
    assert intercept == pytest.approx(2.0, abs=0.15)
    assert residual.std() == pytest.approx(0.5, abs=0.05)


def test_friedman_has_twenty_thousand_numbered_rows() -> None:
    data = load_dataset(load_project(PROJECTS / "friedman.yaml"))
    assert data.X.shape == (20_000, 10)
    assert list(data.X.columns) == [f"x{i}" for i in range(10)]
    assert data.y.name == "y"


@pytest.mark.parametrize(
    ("stem", "first_column"), [("diabetes", "age"), ("breast_cancer", "mean radius")]
)
def test_bundled_sets_keep_sklearn_names(stem: str, first_column: str) -> None:
    data = load_dataset(load_project(PROJECTS / f"{stem}.yaml"))
    assert data.X.columns[0] == first_column
    assert data.y.name == "target"


def _file_project(
    tmp_path: Path, frame: pd.DataFrame | None, suffix: str = ".csv", **extra
) -> Path:
    data_path = tmp_path / f"data{suffix}"
    if frame is not None:
        if suffix == ".csv":
            frame.to_csv(data_path, index=False)
        else:
            frame.to_parquet(data_path, index=False)
    project = copy.deepcopy(SEED_LINEAR)
    project["dataset"] = {"source": "file", "path": data_path.name, "target": "price"}
    project["features"] = {**project["features"], **extra}
    return write_project(tmp_path, project)


def _houses(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "rooms": rng.integers(1, 6, n),
            "area": rng.uniform(20, 200, n),
            "city": rng.choice(["Paris", "Lyon"], n),
            "price": rng.uniform(1e5, 1e6, n),
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_source_with_categorical_column(tmp_path: Path, suffix: str) -> None:
    path = _file_project(tmp_path, _houses(), suffix, categorical=["city"])
    data = load_dataset(load_project(path))
    assert list(data.X.columns) == ["rooms", "area", "city"]
    assert data.y.name == "price"
    assert data.X["rooms"].dtype == "float64"  # integer features become float in the signature


def test_missing_target_column_is_named(tmp_path: Path) -> None:
    path = _file_project(tmp_path, _houses().drop(columns=["price"]), categorical=["city"])
    with pytest.raises(
        DataError, match=r"data\.csv: target column 'price' is missing .*rooms, area"
    ):
        load_dataset(load_project(path))


def test_non_numeric_feature_names_column_and_fix(tmp_path: Path) -> None:
    path = _file_project(tmp_path, _houses())
    with pytest.raises(
        DataError,
        match=r"column 'city' is not numeric \(e\.g\. '(Paris|Lyon)'\); "
        r"list it under features\.categorical",
    ):
        load_dataset(load_project(path))


def test_empty_dataset(tmp_path: Path) -> None:
    path = _file_project(tmp_path, _houses(0), categorical=["city"])
    with pytest.raises(DataError, match=r"data\.csv: the dataset has no rows"):
        load_dataset(load_project(path))


def test_zero_byte_file(tmp_path: Path) -> None:
    path = _file_project(tmp_path, None)
    (tmp_path / "data.csv").write_text("")
    with pytest.raises(DataError, match=r"data\.csv: the file is empty"):
        load_dataset(load_project(path))


def test_missing_data_file(tmp_path: Path) -> None:
    path = _file_project(tmp_path, None)
    with pytest.raises(DataError, match=r"data\.csv: no such data file; fix dataset\.path"):
        load_dataset(load_project(path))


def test_categorical_column_must_exist(tmp_path: Path) -> None:
    path = _file_project(tmp_path, _houses(), categorical=["town"])
    with pytest.raises(
        DataError, match=r"column 'town' named in features\.categorical is not in the data"
    ):
        load_dataset(load_project(path))


def test_binary_task_with_three_classes(tmp_path: Path) -> None:
    frame = _houses(60).assign(price=np.tile([0, 1, 2], 20))
    path = _file_project(tmp_path, frame, categorical=["city"])
    project = load_project(path).model_copy(update={"task": "binary"})
    with pytest.raises(DataError, match=r"task is binary but target 'price' has 3 classes"):
        load_dataset(project)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq"])
def test_one_reader_takes_csv_and_parquet_by_suffix(tmp_path: Path, suffix: str) -> None:
    from mm_platform.data.tables import read_table

    frame = pd.DataFrame({"x": [1.0, 2.0], "city": ["a", "b"]})
    path = tmp_path / f"table{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    pd.testing.assert_frame_equal(read_table(path), frame)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"table\.parquet: no such file"),
        (b"", r"table\.parquet: cannot read it as parquet \(.*\); fix it"),
        (b"not parquet at all", r"table\.parquet: cannot read it as parquet \(.*\); fix it"),
    ],
)
def test_the_reader_names_the_file_and_the_fix(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    from mm_platform.data.tables import read_table

    path = tmp_path / "table.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_table(path, hint="fix it")


def test_the_path_check_names_the_path_the_problem_and_raises_the_given_error(
    tmp_path: Path,
) -> None:
    from mm_platform.data.tables import require_path
    from mm_platform.errors import ProjectConfigError

    (tmp_path / "file.txt").write_text("x")
    assert require_path(tmp_path / "file.txt", "no such file") == tmp_path / "file.txt"
    assert require_path(str(tmp_path), "no such folder", folder=True) == tmp_path
    with pytest.raises(DataError, match=r"file\.txt: no such folder; make it"):
        require_path(tmp_path / "file.txt", "no such folder; make it", folder=True)
    with pytest.raises(ProjectConfigError, match=r"nope: no such file"):
        require_path(tmp_path / "nope", "no such file", error=ProjectConfigError)
