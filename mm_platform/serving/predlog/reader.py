"""Reading the prediction log: the rows of one model in a time window, and nothing else.

Reading never writes to the log, except to move a damaged file under `_corrupt/` (see
`store`). In particular it does not recover the journals of killed writers: a caller that
wants their acknowledged requests in what it reads calls `journal.recover` first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mm_platform.serving.predlog.records import TIMESTAMP
from mm_platform.serving.predlog.store import (
    data_files,
    filesystem,
    is_compacted,
    is_damage,
    model_folder,
    partitions,
    set_aside,
    utc,
    visible_files,
)

_RETRIES = 20  # re-reads of a day whose files changed under the reader (compaction)


def read_window(
    root: str,
    kind: str,
    model: str,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Rows of dataset `kind` for `model` with timestamps in [start, end) when given; only
    `columns` when given (in that order; null where a file lacks one).

    Only the days overlapping the window are listed, and the time filter is applied in
    the Parquet scan. This writes nothing, except moving a damaged file under `_corrupt/`;
    the journals of killed writers are not read: `journal.recover(root, model)` first puts
    their acknowledged requests in the log.
    """
    fs, base = filesystem(root)
    tables: list[pa.Table] = []
    # the day after the window too: writers before the partition-by-timestamp change put a
    # file under the day it was written (recovery under the day of recovery), so rows
    # stamped late on the last day may be there; the scan's time filter drops the others
    listed_end = None if end is None else utc(end) + pd.Timedelta(days=1)
    for _day, folder in partitions(fs, model_folder(base, kind, model), start, listed_end):
        tables += read_partition(fs, base, folder, start, end, columns)
    if not tables:
        return pd.DataFrame(columns=columns)
    frame = _to_pandas(tables)
    if columns is not None:
        return frame.reindex(columns=columns).reset_index(drop=True)
    frame = frame.drop(columns=[c for c in ("date",) if c in frame.columns])
    return frame.reset_index(drop=True)


def read_partition(
    fs: pafs.FileSystem,
    base: str,
    folder: str,
    start: datetime | None,
    end: datetime | None,
    columns: list[str] | None = None,
) -> list[pa.Table]:
    """The rows of one day, each exactly once even while it is being compacted."""
    for _ in range(_RETRIES):
        try:
            names, compacted = visible_files(fs, base, folder)
            tables = [read_file(fs, base, f"{folder}/{n}", start, end, columns) for n in names]
        except FileNotFoundError:
            continue  # compacted (or set aside) while read: read the day again
        if compacted >= {n for n in data_files(fs, folder) if is_compacted(n)}:
            return [t for t in tables if t is not None]
        # a compacted file appeared while the day was listed: the listing may have missed it
        # and also its deleted sources; read the day again
    raise OSError(f"{folder}: the files kept changing while being read; try again")


def read_file(
    fs: pafs.FileSystem,
    base: str,
    path: str,
    start: datetime | None,
    end: datetime | None,
    columns: list[str] | None = None,
) -> pa.Table | None:
    """One file's rows in [start, end), of those of `columns` it has (all when None); None
    when it is damaged (it is moved aside).

    Row groups whose timestamp statistics lie outside the window are not read.
    """
    try:
        with fs.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            schema = parquet.schema_arrow
            time_filter = _time_filter(schema, start, end)
            wanted = None if columns is None else [n for n in schema.names if n in columns]
            if time_filter is None:
                return parquet.read(columns=wanted)
            if wanted is not None and "timestamp" not in wanted:
                wanted.append("timestamp")  # the filter's, dropped after it
            groups = row_groups_in(parquet, schema, start, end)
            table = parquet.read_row_groups(groups, columns=wanted)
        table = table.filter(time_filter)
        if columns is None or wanted is None:
            return table
        return table.select([n for n in wanted if n in columns])
    except (pa.ArrowException, OSError) as exc:
        if not is_damage(exc):
            raise
        set_aside(fs, base, path, f"{type(exc).__name__}: {exc}")
        return None


def row_groups_in(
    parquet: pq.ParquetFile, schema: pa.Schema, start: datetime | None, end: datetime | None
) -> list[int]:
    """The row groups that may hold timestamps in [start, end), from their statistics."""
    metadata = parquet.metadata
    every = list(range(metadata.num_row_groups))
    unit = schema.field("timestamp").type
    leaf = [metadata.schema.column(j).path for j in range(metadata.num_columns)]
    if not pa.types.is_timestamp(unit) or len(every) < 2 or "timestamp" not in leaf:
        return every
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit.unit]
    low = None if start is None else utc(start).value * per_second // 10**9
    high = None if end is None else utc(end).value * per_second // 10**9
    column = leaf.index("timestamp")
    kept = []
    for i in every:
        stats = metadata.row_group(i).column(column).statistics
        unknown = stats is None or not stats.has_min_max
        if unknown or (
            (low is None or stats.max_raw >= low) and (high is None or stats.min_raw < high)
        ):
            kept.append(i)
    return kept


def _time_filter(schema: pa.Schema, start: datetime | None, end: datetime | None) -> Any:
    index = schema.get_field_index("timestamp")
    if index < 0 or (start is None and end is None):
        return None
    kind = schema.field(index).type
    kind = kind if pa.types.is_timestamp(kind) else TIMESTAMP
    field, bounds = ds.field("timestamp"), []
    if start is not None:
        bounds.append(field >= pa.scalar(utc(start).value, pa.int64()).cast(kind))
    if end is not None:
        bounds.append(field < pa.scalar(utc(end).value, pa.int64()).cast(kind))
    return bounds[0] if len(bounds) == 1 else bounds[0] & bounds[1]


def _to_pandas(tables: list[pa.Table]) -> pd.DataFrame:
    """One frame of tables whose types may differ (ints in one file, floats in another)."""
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        frames = [t.to_pandas() for t in tables]
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    # pandas leaves empty frames and all-missing columns out when it picks a column's
    # dtype, and warns (FutureWarning) that it will stop: leave them out here, which keeps
    # today's answer without the warning; concat fills the gaps with NaN
    kept = [f.loc[:, f.notna().any()] for f in frames if len(f)]
    if not kept:
        return frames[0].reindex(columns=columns)
    return pd.concat(kept, ignore_index=True).reindex(columns=columns)
