"""Property tests (hypothesis): every bad project file gets one clear line, never a
traceback; every bad request to the served model gets a 4xx, never a 500."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mm_platform.errors import ProjectConfigError
from mm_platform.project.config import load_project
from tests.support import SEED_LINEAR

FULL = {
    **copy.deepcopy(SEED_LINEAR),
    "features": {"polynomial_degree": 2, "impute": "median", "categorical": []},
    "compression": {"prune": {"sparsities": [0.5]}, "quantize": {"bits": [8]}},
    "finetune": {"lam": 0.1, "epochs": 5},
    "promotion": {"min_improvement": 0.0, "max_regression": 0.02},
    "monitoring": {
        "window": "1h",
        "schedule": "0 * * * *",
        "min_rows": 20,
        "columns": {"x": {"method": "psi", "threshold": 0.2}},
        "retrain": {"flagged_windows": 1, "of_last": 2},
    },
}


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path (and list index) in a nested structure."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


PATHS = _paths(FULL)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1e400", "nan", "linear", "rmse", "*/5 * * * *", "1d"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)


@st.composite
def mutated_projects(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(FULL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced this path
    return data


def _check_loads_or_one_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "project.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_project(path)
        except ProjectConfigError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message
            assert "\n" not in message and "Traceback" not in message, message
            assert len(message) < 1000, message


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(mutated_projects())
def test_mutated_project_files_load_or_get_one_clear_line(data: Any) -> None:
    _check_loads_or_one_line(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=200))
def test_arbitrary_text_as_a_project_file_gets_one_clear_line(text: str) -> None:
    _check_loads_or_one_line(text)


# --- the served model's input schema --------------------------------------------------------


served_folder: list[str] = []  # where the module's server logs


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """seed_linear's champion behind `mlflow models serve`, monitored, for the whole module."""
    import os

    from mm_platform.serving.launcher import build_monitored_model, start_server
    from mm_platform.tracking.server import stop_process_group
    from tests.support import free_port, write_project

    folder = tmp_path_factory.mktemp("served")
    served_folder[:] = [str(folder)]
    previous = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI",)}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        from mm_platform.training.search import train_project

        project = load_project(write_project(folder, SEED_LINEAR))
        version = train_project(project).version
        model_dir = build_monitored_model(
            project.name, str(version), str(folder / "log"), folder / "model"
        )
        port = free_port()
        server = start_server(model_dir, host="127.0.0.1", port=port)
        try:
            yield f"http://127.0.0.1:{port}/invocations"
        finally:
            stop_process_group(server)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**200),  # beyond int64 (and float32)
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["12", "1e5", " 3 ", "nan", "inf", "", "true"]),  # numbers as text
    st.lists(st.integers(), max_size=2),  # JSON arrays and objects where a value belongs
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
ACKNOWLEDGED: list[str] = []  # request ids the fuzzed server answered
columns = st.lists(st.sampled_from(["x", "y", "z", "", "X"]), min_size=0, max_size=3)


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["split", "records", "instances", "inputs", "junk"]))
    names = draw(columns)
    rows = draw(st.lists(st.lists(cells, min_size=len(names), max_size=len(names)), max_size=4))
    if shape == "split":
        return {"dataframe_split": {"columns": names, "data": rows}}
    if shape == "records":
        return {"dataframe_records": [dict(zip(names, row, strict=True)) for row in rows]}
    if shape == "instances":
        return {"instances": rows}
    if shape == "inputs":
        return {"inputs": draw(st.one_of(cells, st.lists(cells, max_size=3)))}
    return draw(st.dictionaries(st.text(max_size=8), cells, max_size=3))


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies())
def test_any_request_gets_an_answer_or_a_4xx_never_a_500(served: str, body: Any) -> None:
    import requests

    answer = requests.post(served, json=body, timeout=30)
    event(f"HTTP {answer.status_code}")
    assert answer.status_code < 500, (body, answer.status_code, answer.text[:300])
    if answer.status_code == 200:
        result = answer.json()["predictions"]
        assert len(result["prediction"]) == len(result["request_id"])
        assert all(isinstance(p, float) for p in result["prediction"])
        ACKNOWLEDGED.extend(result["request_id"])


def test_every_request_the_fuzzed_server_answered_is_in_the_log_once(served: str) -> None:
    """Whatever the values of the requests before, none poisoned the log for the others."""
    import time

    import requests

    from mm_platform.serving.predlog.reader import read_window

    answer = requests.post(
        served, json={"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}, timeout=30
    )
    assert answer.status_code == 200
    ACKNOWLEDGED.extend(answer.json()["predictions"]["request_id"])
    time.sleep(1.0)  # a few flush intervals
    logged = read_window(str(Path(served_folder[0]) / "log"), "predictions", "tiny")
    assert set(ACKNOWLEDGED) <= set(logged["request_id"])
    assert not logged["request_id"].duplicated().any()
    assert logged["x"].dtype == "float64"


# --- the prediction log's journal -----------------------------------------------------------


def _journal_record(name: str) -> bytes:
    import pandas as pd
    import pyarrow as pa

    from mm_platform.serving.predlog.journal import encode_record

    stamp = pa.array([pd.Timestamp.now(tz="UTC").value], pa.timestamp("ns", tz="UTC"))
    return bytes(encode_record(pa.table({"request_id": [name], "timestamp": stamp, "x": [1.0]})))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    before=st.binary(max_size=300),
    after=st.binary(max_size=300),
    marker=st.sampled_from([b"", b"MMJ2", b"MMJ2\xff\xff\xff\xff", b"MMJ2\x04\x00\x00\x00"]),
)
def test_random_bytes_in_the_journal_never_raise_nor_lose_intact_records(
    before: bytes, after: bytes, marker: bytes
) -> None:
    from mm_platform.serving.predlog.journal import recover
    from mm_platform.serving.predlog.reader import read_window

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "_journal" / "model=m"
        folder.mkdir(parents=True)
        (folder / "wgoodx00000000-00000001.j2.v1.journal").write_bytes(_journal_record("good-0"))
        junk = marker + before + _journal_record("inside-0") + after
        (folder / "wjunkx00000000-00000001.j2.v1.journal").write_bytes(junk)
        (folder / "wjunkx00000000-00000002.j2.v1.journal").write_bytes(marker + before)
        recover(tmp, "m")
        logged = set(read_window(tmp, "predictions", "m")["request_id"])
        assert {"good-0", "inside-0"} <= logged
        assert list(folder.glob("*.journal")) == []
