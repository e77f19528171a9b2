"""Exact KS and Wasserstein on Spark: the two empirical CDFs at every pooled value.

scipy's `ks_2samp` and `wasserstein_distance` sort the pooled values of both samples and,
at each, take U and V, the shares of the reference and current values at or below it: KS
is the largest |U - V|, Wasserstein the sum of |U - V| times the gap to the next pooled
value. Here the pooled values of every tested column are sorted across the cluster and the
running counts are carried from bucket to bucket, in two passes over the data:

1. Each value goes to a bucket, a fixed monotone function of the value (equal slices of the
   column's range), so equal values share a bucket and bucket order is value order. One
   group-by counts each bucket's reference and current values and its smallest value.
2. The driver turns those counts (a few numbers per bucket, never rows) into each bucket's
   counts below it and the first value after it, and broadcasts that small table. The
   values are shuffled by bucket and sorted within it; a running count over each bucket
   (a window function, in the JVM: executors need no Python package of ours) gives U and
   V at every value and the gap to the next, and one aggregate adds the terms per column.

The terms are scipy's to the last bit; only the order of the final sum differs, so the
scores agree with the pandas engine to about 1e-15 relative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SortedColumn:
    """One column to sort: its name, the cleaned counts and range of both sides."""

    name: str
    n_ref: int
    n_cur: int
    low: float
    high: float


@dataclass
class CdfStats:
    """What the sorted pass gives for one column."""

    wasserstein: float  # scipy's wasserstein_distance (not yet divided by the std)
    ks_statistic: float  # scipy's ks_2samp statistic


def finite(column: Any) -> Any:
    """Spark: the value is present and finite (Evidently's cleaning before a test)."""
    from pyspark.sql import functions as F

    return column.isNotNull() & ~F.isnan(column) & (F.abs(column) != float("inf"))


def _long(frame: Any, columns: list[SortedColumn], side: int, buckets: int) -> Any:
    """(c, b, v, s) rows: column index, bucket, value and side of every finite value."""
    from pyspark.sql import functions as F

    parts = []
    for index, col in enumerate(columns):
        value = F.col(f"`{col.name}`").cast("double")
        width = (col.high - col.low) / buckets
        if width > 0 and np.isfinite(width):
            # clipped before the cast: Spark's ANSI mode refuses an int overflow
            raw = F.floor((value - F.lit(col.low)) / F.lit(width))
            clipped = F.least(F.lit(buckets - 1.0), F.greatest(F.lit(0.0), raw)).cast("int")
            bucket = F.when(finite(value), clipped).otherwise(F.lit(0))
        else:
            bucket = F.lit(0)
        parts.append(F.struct(F.lit(index).alias("c"), bucket.alias("b"), value.alias("v")))
    exploded = frame.select(F.explode(F.array(*parts)).alias("e")).select("e.*")
    return exploded.where(finite(F.col("v"))).withColumn("s", F.lit(side).cast("byte"))


def cdf_stats(
    reference: Any, current: Any, columns: list[SortedColumn], *, rows_per_bucket: int = 200_000
) -> dict[str, CdfStats]:
    """Wasserstein distance and KS statistic of each column, exactly, on Spark."""
    from pyspark.sql import functions as F

    if not columns:
        return {}
    most = max(c.n_ref + c.n_cur for c in columns)
    buckets = int(min(65_536, max(1, most // rows_per_bucket)))
    pooled = _long(reference, columns, 0, buckets).unionByName(_long(current, columns, 1, buckets))
    counted = (
        pooled.groupBy("c", "b")
        .agg(
            F.sum(1 - F.col("s")).alias("n_ref"),
            F.sum(F.col("s")).alias("n_cur"),
            F.min("v").alias("low"),
        )
        .collect()  # a few numbers per bucket
    )
    plan = reference.sparkSession.createDataFrame(_plan(counted, columns), _PLAN)
    rows = (
        _terms(pooled, plan)
        .groupBy("c")
        .agg(F.sum("term").alias("w"), F.max("diff").alias("dmax"), F.min("diff").alias("dmin"))
    )
    return _combine(rows.collect(), columns)


_PLAN = "c int, b int, ref_below long, cur_below long, next_low double, n_ref long, n_cur long"


def _plan(counted: list[Any], columns: list[SortedColumn]) -> list[tuple[Any, ...]]:
    """Per bucket: the values of each side in the buckets below it, the first value of
    the next bucket, and the column's totals."""
    by_column: dict[int, list[Any]] = {}
    for row in counted:
        by_column.setdefault(int(row["c"]), []).append(row)
    plan = []
    for c, rows in by_column.items():
        rows.sort(key=lambda r: int(r["b"]))
        below_ref = below_cur = 0
        for i, row in enumerate(rows):
            after = float(rows[i + 1]["low"]) if i + 1 < len(rows) else None
            total = (columns[c].n_ref, columns[c].n_cur)
            plan.append((c, int(row["b"]), below_ref, below_cur, after, *total))
            below_ref += int(row["n_ref"])
            below_cur += int(row["n_cur"])
    return plan


def _terms(pooled: Any, plan: Any) -> Any:
    """Every value with U - V at it and its Wasserstein term |U - V| times the gap to the
    next pooled value. A range frame counts all the values equal to this one, so tied
    values share the CDFs at the end of their run, and only the last of them has a gap.
    The bucket plan is joined after the window, so the shuffle and sort carry four
    narrow columns."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ordered = Window.partitionBy("c", "b").orderBy("v")
    upto = ordered.rangeBetween(Window.unboundedPreceding, Window.currentRow)
    running = pooled.select(
        "c",
        "b",
        "v",
        F.sum(1 - F.col("s")).over(upto).alias("ref_upto"),
        F.sum(F.col("s")).over(upto).alias("cur_upto"),
        F.lead("v").over(ordered).alias("after"),
    )
    rows = running.join(F.broadcast(plan), ["c", "b"])
    ref = (F.col("ref_below") + F.col("ref_upto")).cast("double")
    cur = (F.col("cur_below") + F.col("cur_upto")).cast("double")
    # scipy's cdf1 - cdf2: each count divided by its total in float64, then subtracted
    diff = ref / F.col("n_ref").cast("double") - cur / F.col("n_cur").cast("double")
    gap = F.coalesce(F.coalesce(F.col("after"), F.col("next_low")) - F.col("v"), F.lit(0.0))
    return rows.select("c", diff.alias("diff"), (F.abs(diff) * gap).alias("term"))


def _combine(rows: list[Any], columns: list[SortedColumn]) -> dict[str, CdfStats]:
    """Per column: the sum of its Wasserstein terms, and scipy's KS statistic (the larger
    of max(U - V) and max(V - U) clipped to [0, 1])."""
    out: dict[str, CdfStats] = {}
    found = {int(r["c"]): r for r in rows}
    for index, col in enumerate(columns):
        row = found[index]
        max_s = float(row["dmax"])
        min_s = float(np.clip(-float(row["dmin"]), 0, 1))
        out[col.name] = CdfStats(float(row["w"]), min_s if min_s > max_s else max_s)
    return out
