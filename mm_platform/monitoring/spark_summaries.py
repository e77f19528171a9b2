"""The exact summaries the Spark drift engine computes from rows, each in one Spark job.

Each function scans a DataFrame once and brings to the driver a few numbers per column,
per distinct value of a column with few values, or per histogram bin, never the rows.
Values are cleaned as Evidently cleans them before a test: missing values and infinities
do not count (`spark_sort.finite`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mm_platform.monitoring.results import ColumnSpec
from mm_platform.monitoring.spark_sort import as_doubles, finite

_INTEGRAL = ("byte", "short", "int", "long", "bigint", "tinyint", "smallint")
_NUMERIC = (*_INTEGRAL, "float", "double", "decimal")


@dataclass(frozen=True)
class Profile:
    """One column of one side: rows, missing values, cleaned values and their range."""

    rows: int
    missing: int
    clean: int
    low: float
    high: float
    std: float  # population standard deviation of the cleaned values (reference only)
    approx_distinct: int  # HyperLogLog estimate, to know a column has many values


def _type_of(frame: Any, name: str) -> str:
    return str(frame.schema[name].dataType.simpleString())


def _numeric(frame: Any, name: str) -> bool:
    return _type_of(frame, name).startswith(_NUMERIC)


def _as_double(name: str) -> Any:
    from pyspark.sql import functions as F

    return F.col(f"`{name}`").cast("double")


def profiles(
    frame: Any, specs: list[ColumnSpec], *, with_std: bool
) -> tuple[dict[str, Profile], int]:
    """Each spec column's profile, and the number of rows."""
    from pyspark.sql import functions as F

    exprs = [F.count(F.lit(1)).alias("__rows")]
    for i, spec in enumerate(specs):
        if spec.kind == "num" or _numeric(frame, spec.name):
            value = _as_double(spec.name)
            clean = F.when(finite(value), value)
            missing = value.isNull() | F.isnan(value)
        else:
            value = F.col(f"`{spec.name}`")
            clean = F.when(value.isNotNull(), F.lit(0.0))
            missing = value.isNull()
        exprs += [
            F.sum(F.when(missing, 1).otherwise(0)).alias(f"m{i}"),
            F.count(clean).alias(f"n{i}"),
            F.min(clean).alias(f"lo{i}"),
            F.max(clean).alias(f"hi{i}"),
            (F.stddev_pop(clean) if with_std else F.lit(0.0)).alias(f"sd{i}"),
            (F.approx_count_distinct(clean) if spec.kind == "num" else F.lit(0)).alias(f"d{i}"),
        ]
    row = frame.agg(*exprs).collect()[0]
    rows = int(row["__rows"])
    out = {}
    for i, spec in enumerate(specs):
        out[spec.name] = Profile(
            rows=rows,
            missing=int(row[f"m{i}"] or 0),
            clean=int(row[f"n{i}"] or 0),
            low=float(row[f"lo{i}"]) if row[f"lo{i}"] is not None else np.nan,
            high=float(row[f"hi{i}"]) if row[f"hi{i}"] is not None else np.nan,
            std=float(row[f"sd{i}"] or 0.0),
            approx_distinct=int(row[f"d{i}"] or 0),
        )
    return out, rows


def value_counts(frame: Any, names: list[str]) -> dict[str, dict[Any, int]]:
    """Each column's cleaned values and how often each occurs."""
    from pyspark.sql import functions as F

    parts = []
    for i, name in enumerate(names):
        if _numeric(frame, name):
            value = _as_double(name)
            part = F.struct(F.lit(i).alias("c"), F.lit(None).cast("string").alias("s"),
                            value.alias("d"))  # fmt: skip
            parts.append(F.when(finite(value), part))
        else:
            value = F.col(f"`{name}`").cast("string")
            part = F.struct(F.lit(i).alias("c"), value.alias("s"),
                            F.lit(None).cast("double").alias("d"))  # fmt: skip
            parts.append(F.when(value.isNotNull(), part))
    exploded = frame.select(F.explode(F.array(*parts)).alias("e")).where(F.col("e").isNotNull())
    rows = exploded.select("e.*").groupBy("c", "s", "d").count().collect()
    integral = {i for i, n in enumerate(names) if _type_of(frame, n).startswith(_INTEGRAL)}
    out: dict[str, dict[Any, int]] = {name: {} for name in names}
    for row in rows:
        c = int(row["c"])
        key: Any = row["s"]
        if key is None:
            key = int(row["d"]) if c in integral else float(row["d"])
        out[names[c]][key] = int(row["count"])
    return out


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


def out_of_range(frame: Any, bounds: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Per column, the present values (infinities too) outside the reference's range."""
    from pyspark.sql import functions as F

    if not bounds:
        return {}
    exprs = []
    for i, (name, (low, high)) in enumerate(bounds.items()):
        value = _as_double(name)
        outside = value.isNotNull() & ~F.isnan(value) & ((value < low) | (value > high))
        exprs.append(F.sum(F.when(outside, 1).otherwise(0)).alias(f"o{i}"))
    row = frame.agg(*exprs).collect()[0]
    return {name: int(row[f"o{i}"] or 0) for i, name in enumerate(bounds)}
