"""The functions the Spark drift engine ships to executors (`mapInArrow`) need numpy and
pyarrow only: they unpickle and run in a Python where mm_platform cannot be imported, and
give what numpy gives on the same values."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("pyspark")

from pyspark import cloudpickle

from mm_platform.monitoring import spark_sort, spark_summaries

RUN_WITHOUT_US = textwrap.dedent(
    """
    import pickle, sys
    sys.modules["mm_platform"] = None  # any import of ours fails
    import pyarrow as pa
    function, batches = pickle.loads(sys.stdin.buffer.read())
    out = [b.to_pydict() for b in function(iter(batches))]
    sys.stdout.buffer.write(pickle.dumps(out))
    """
)


def _run_elsewhere(function, batches) -> list[dict]:
    payload = cloudpickle.dumps((function, batches))
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_US], input=payload, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return cloudpickle.loads(done.stdout)


def _batches(values: np.ndarray, size: int = 7):
    import pyarrow as pa

    return [
        pa.RecordBatch.from_arrays([pa.array(values[i : i + size], from_pandas=False)], ["_0"])
        for i in range(0, len(values), size)
    ]


def test_histograms_are_numpys_without_our_package() -> None:
    values = np.array([0.0, 0.5, 1.0, 1.0, np.nan, np.inf, 2.0, 9.5, 10.0, -1.0] * 3)
    edges = np.linspace(0.0, 10.0, 6)
    out = _run_elsewhere(spark_summaries._histogrammer([0], [edges]), _batches(values))
    counts = np.zeros(5, dtype="int64")
    for part in out:
        for i, n in zip(part["i"], part["n"], strict=True):
            counts[i] += n
    assert counts.tolist() == np.histogram(values[np.isfinite(values)], bins=edges)[0].tolist()


def test_bucket_counts_and_exploded_rows_without_our_package() -> None:
    values = np.array([3.0, 1.0, np.nan, 2.0, 2.0, 9.0, -np.inf, 5.0])
    columns = [spark_sort.SortedColumn("_0", 6, 0, 1.0, 9.0)]
    bucket_of = spark_sort.bucketer(columns, 4)
    counted = _run_elsewhere(spark_sort._counter(1, 4, bucket_of), _batches(values, 3))
    assert sum(sum(part["n"]) for part in counted) == 6
    rows = _run_elsewhere(spark_sort._exploder(1, 0, bucket_of), _batches(values, 3))
    assert sorted(v for part in rows for v in part["v"]) == [1.0, 2.0, 2.0, 3.0, 5.0, 9.0]
    assert max(b for part in rows for b in part["b"]) == 3


def test_profiles_without_our_package() -> None:
    import pickle

    import pyarrow as pa

    values = np.array([1.0, np.nan, np.inf, 4.0, 2.0, 2.0, -3.0, np.nan, 8.0])
    words = pa.array(["a", None, "b", "a", "a", None, "c", "b", "a"])
    batches = [
        pa.RecordBatch.from_arrays([pa.array(values[i : i + 4]), words[i : i + 4]], ["_0", "_1"])
        for i in range(0, len(values), 4)
    ]
    profiler = spark_summaries._profiler([True, False], [True, False], True, [(0.0, 5.0)] * 2)
    (out,) = _run_elsewhere(profiler, batches)
    number = spark_summaries._merge([pickle.loads(out["p"][0])["columns"][0]])
    word = spark_summaries._merge([pickle.loads(out["p"][0])["columns"][1]])
    clean = values[np.isfinite(values)]
    assert (number["missing"], number["n"], number["outside"]) == (2, 6, 3)  # inf, -3, 8
    assert (number["low"], number["high"]) == (clean.min(), clean.max())
    assert np.sqrt(number["m2"] / number["n"]) == pytest.approx(np.std(clean), rel=1e-12)
    assert number["counts"] == {-3.0: 1, 1.0: 1, 2.0: 2, 4.0: 1, 8.0: 1}
    assert (word["missing"], word["n"], word["counts"]) == (2, 7, {"a": 4, "b": 2, "c": 1})
