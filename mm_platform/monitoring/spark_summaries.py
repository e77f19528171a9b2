"""The exact summaries the Spark drift engine computes from rows, each in one Spark job.

Each function scans a DataFrame once, as Arrow batches through a function built here
(`mapInArrow`), and brings to the driver a few numbers per column, per distinct value of
a column with few values, or per histogram bin, never the rows. The functions are
closures that import only numpy and pyarrow (executors need no package of ours). Values
are cleaned as Evidently cleans them before a test: missing values and infinities do not
count.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mm_platform.monitoring.results import ColumnSpec
from mm_platform.monitoring.spark_sort import as_doubles

_INTEGRAL = ("byte", "short", "int", "long", "bigint", "tinyint", "smallint")
_NUMERIC = (*_INTEGRAL, "float", "double", "decimal")
FEW_VALUES = 2000  # value counts are kept for numeric columns with at most this many values


@dataclass(frozen=True)
class Profile:
    """One column of one side: rows, missing values, cleaned values and their range; its
    value counts when it is categorical or has few values; values outside given bounds."""

    rows: int
    missing: int
    clean: int
    low: float
    high: float
    std: float  # population standard deviation of the cleaned values (reference only)
    counts: dict[Any, int] | None  # cleaned value -> count; None: more than FEW_VALUES
    outside: int = 0  # present values (infinities too) outside the bounds given


def _type_of(frame: Any, name: str) -> str:
    return str(frame.schema[name].dataType.simpleString())


def _numeric(frame: Any, name: str) -> bool:
    return _type_of(frame, name).startswith(_NUMERIC)


def profiles(
    frame: Any,
    specs: list[ColumnSpec],
    *,
    with_std: bool,
    bounds: dict[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, Profile], int]:
    """Each spec column's profile, and the number of rows, in one scan."""
    from pyspark.sql import functions as F

    bounds = bounds or {}
    numeric = [spec.kind == "num" or _numeric(frame, spec.name) for spec in specs]
    capped = [spec.kind == "num" for spec in specs]  # categories are always counted
    selected = [
        F.col(f"`{spec.name}`").cast("double" if numeric[i] else "string").alias(f"_{i}")
        for i, spec in enumerate(specs)
    ]
    limits = [bounds.get(spec.name, (np.nan, np.nan)) for spec in specs]
    parts = [
        pickle.loads(row["p"])
        for row in frame.select(*selected)
        .mapInArrow(_profiler(numeric, capped, with_std, limits), "p binary")
        .collect()  # one small record per partition
    ]
    rows = sum(part["rows"] for part in parts)
    out = {}
    for i, spec in enumerate(specs):
        merged = _merge([part["columns"][i] for part in parts])
        counts = merged["counts"]
        if counts is not None and _type_of(frame, spec.name).startswith(_INTEGRAL):
            counts = {int(k): n for k, n in counts.items()}
        n, low, high = merged["n"], merged["low"], merged["high"]
        out[spec.name] = Profile(
            rows=rows,
            missing=merged["missing"],
            clean=n,
            low=low if n and numeric[i] else (0.0 if n else np.nan),
            high=high if n and numeric[i] else (0.0 if n else np.nan),
            std=float(np.sqrt(merged["m2"] / n)) if n and with_std and numeric[i] else 0.0,
            counts=counts,
            outside=merged["outside"],
        )
    return out, rows


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One column's partition summaries as one (Chan's update for the mean and the sum of
    squared deviations; value counts summed, dropped past FEW_VALUES for numbers)."""
    out: dict[str, Any] = {"missing": 0, "n": 0, "mean": 0.0, "m2": 0.0, "outside": 0,
                           "low": np.inf, "high": -np.inf, "counts": {}}  # fmt: skip
    for part in parts:
        for key in ("missing", "outside"):
            out[key] += part[key]
        if part["n"]:
            n, m = out["n"] + part["n"], part["mean"] - out["mean"]
            out["m2"] += part["m2"] + m * m * out["n"] * part["n"] / n
            out["mean"] += m * part["n"] / n
            out["n"] = n
            out["low"], out["high"] = min(out["low"], part["low"]), max(out["high"], part["high"])
        if out["counts"] is None or part["counts"] is None:
            out["counts"] = None
            continue
        for value, count in part["counts"].items():
            out["counts"][value] = out["counts"].get(value, 0) + count
        if part["capped"] and len(out["counts"]) > FEW_VALUES:
            out["counts"] = None
    return out


def _profiler(
    numeric: list[bool], capped: list[bool], with_std: bool, limits: list[tuple[float, float]]
) -> Any:
    """mapInArrow: per column, the partition's missing and finite counts, range, mean and
    sum of squared deviations, value counts, and values outside the limits."""
    few = FEW_VALUES

    def profile(batches: Iterator[Any]) -> Iterator[Any]:
        import pickle

        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        columns: list[dict[str, Any]] = [{"missing": 0, "n": 0, "mean": 0.0, "m2": 0.0,
                    "low": np.inf, "high": -np.inf, "outside": 0, "counts": {},
                    "capped": capped[i]}
                   for i in range(len(numeric))]  # fmt: skip
        rows = 0
        for batch in batches:
            rows += batch.num_rows
            for i, col in enumerate(columns):
                array = batch.column(i)
                if not numeric[i]:
                    col["missing"] += array.null_count
                    col["n"] += len(array) - array.null_count
                    for pair in pc.value_counts(array.drop_null()).to_pylist():
                        key = pair["values"]
                        col["counts"][key] = col["counts"].get(key, 0) + pair["counts"]
                    continue
                values = array.to_numpy(zero_copy_only=False)
                missing = np.isnan(values)
                col["missing"] += int(missing.sum())
                low, high = limits[i]
                present = values[~missing]
                col["outside"] += int(((present < low) | (present > high)).sum())
                clean = present[np.isfinite(present)]
                if not len(clean):
                    continue
                n = col["n"] + len(clean)
                mean = float(clean.mean())
                if with_std:
                    m2, m = float(((clean - mean) ** 2).sum()), mean - col["mean"]
                    col["m2"] += m2 + m * m * col["n"] * len(clean) / n
                col["mean"] += (mean - col["mean"]) * len(clean) / n
                col["n"] = n
                col["low"] = min(col["low"], float(clean.min()))
                col["high"] = max(col["high"], float(clean.max()))
                if col["counts"] is not None:
                    keys, counts = np.unique(clean, return_counts=True)
                    for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
                        col["counts"][key] = col["counts"].get(key, 0) + count
                    if col["capped"] and len(col["counts"]) > few:
                        col["counts"] = None
        yield pa.RecordBatch.from_arrays(
            [pa.array([pickle.dumps({"rows": rows, "columns": columns})], pa.binary())],
            names=["p"],
        )

    return profile


def histograms(
    frame: Any, edges: dict[tuple[str, str], np.ndarray]
) -> dict[tuple[str, str], np.ndarray]:
    """Counts of cleaned values per bin, as `np.histogram(values, bins=edges)` counts them
    (bin i holds edges[i] <= x < edges[i+1], the last bin also its right edge): numpy's own
    function on each Arrow batch (`mapInArrow`), so the bin of every value is numpy's, and
    the partial counts add up on the driver."""
    keys = list(edges)
    names = sorted({key[0] for key in keys})
    rows = (
        as_doubles(frame, names)
        .mapInArrow(
            _histogrammer([names.index(k[0]) for k in keys], [edges[k] for k in keys]),
            "k int, i int, n long",
        )
        .collect()  # bins per partition
    )
    out = {key: np.zeros(len(edges[key]) - 1, dtype="int64") for key in keys}
    for row in rows:
        out[keys[int(row["k"])]][int(row["i"])] += int(row["n"])
    return out


def _histogrammer(columns: list[int], edges: list[np.ndarray]) -> Any:
    """mapInArrow: each histogram's counts over the partition (self-contained: executors
    need numpy and pyarrow, not this package)."""

    def count(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pyarrow as pa

        totals = [np.zeros(len(e) - 1, dtype="int64") for e in edges]
        for batch in batches:
            clean: dict[int, Any] = {}
            for k, (i, e) in enumerate(zip(columns, edges, strict=True)):
                if i not in clean:
                    values = batch.column(i).to_numpy(zero_copy_only=False)
                    clean[i] = values[np.isfinite(values)]
                totals[k] += np.histogram(clean[i], bins=e)[0]
        which = [np.full(len(t), j, dtype="int32") for j, t in enumerate(totals)]
        bins = [np.arange(len(t), dtype="int32") for t in totals]
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.concatenate(which)), pa.array(np.concatenate(bins)),
             pa.array(np.concatenate(totals))],
            names=["k", "i", "n"],
        )  # fmt: skip

    return count
