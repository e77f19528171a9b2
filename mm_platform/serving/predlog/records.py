"""Prediction-log records as Arrow tables: one per request, built when it is appended.

A request whose data cannot become Arrow (a string in a numeric column, an int beyond
int64, an arbitrary object) is refused here, alone: it never reaches a buffer that other
requests share. Records of different column types are written in groups of one schema,
so two valid records never fail each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

META = ("request_id", "timestamp", "model_name", "model_version")
TIMESTAMP = pa.timestamp("ns", tz="UTC")
_STRING = pa.string()


class RecordError(ValueError):
    """A request's data cannot be represented as an Arrow record."""


_SUFFIXES: list[str] = [f"-{i}" for i in range(1024)]
_ID_LENGTH = 32  # a uuid4 in hex
_OFFSETS = np.concatenate([[0], np.cumsum([_ID_LENGTH + len(s) for s in _SUFFIXES])])


def request_ids(base: str, n: int) -> tuple[list[str], pa.Array]:
    """`<base>-0` ... `<base>-<n-1>` as a list and as Arrow strings, from parts made once:
    the request path only concatenates."""
    global _SUFFIXES, _OFFSETS
    suffixes, offsets = _SUFFIXES, _OFFSETS
    if len(suffixes) < n:  # new lists, swapped in whole: safe across request threads
        suffixes = [f"-{i}" for i in range(max(n, 2 * len(suffixes)))]
        offsets = np.concatenate([[0], np.cumsum([_ID_LENGTH + len(s) for s in suffixes])])
        _SUFFIXES, _OFFSETS = suffixes, offsets
    ids = [base + suffix for suffix in suffixes[:n]]
    if len(base) != _ID_LENGTH or offsets[n] >= 2**31:
        return ids, pa.array(ids, _STRING)
    data = pa.py_buffer("".join(ids).encode())
    return ids, pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets[: n + 1].astype(np.int32)), data
    )


def record_table(frame: pd.DataFrame, ids: pa.Array, stamp: int) -> pa.Table:
    """The request as Arrow: request_id, timestamp (UTC ns), then `frame`'s columns."""
    n = len(frame)
    stamps = pa.array(np.full(n, stamp, dtype="int64")).view(TIMESTAMP)
    arrays = [ids, stamps]
    names = ["request_id", "timestamp"]
    for name, values in zip(frame.columns, _column_arrays(frame), strict=True):
        if name in META:
            raise RecordError(f"column {name!r} is one of the log's own columns {list(META)}")
        # floats as they are (NaN stays NaN, zero-copy); objects and times map None/NaT to null
        pandas_nulls = not isinstance(values, np.ndarray) or values.dtype.kind in "OMmSU"
        try:
            arrays.append(pa.array(values, from_pandas=pandas_nulls))
        except Exception as exc:  # any value Arrow cannot hold: the data's fault, not ours
            raise RecordError(f"column {name!r}: {type(exc).__name__}: {exc}") from exc
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names)


def _column_arrays(frame: pd.DataFrame) -> Iterator[Any]:
    """Each column's NumPy or pandas extension array. Through pandas' own column iterator
    when it has one: `items()` makes a Series per column, ~20 us each on a fresh frame,
    which is most of a 1-row request's logging cost."""
    arrays = getattr(frame, "_iter_column_arrays", None)
    if arrays is not None:
        return arrays()
    return (s.to_numpy() if isinstance(s.dtype, np.dtype) else s.array for _, s in frame.items())


def schema_groups(tables: list[pa.Table]) -> list[tuple[list[int], pa.Table]]:
    """The tables concatenated into as few tables as their types allow, with the indices of
    the tables in each: one table when the schemas unify (ints and floats become floats,
    a missing column becomes nulls), else one per distinct schema."""
    by_schema: dict[pa.Schema, list[int]] = {}
    for index, table in enumerate(tables):
        by_schema.setdefault(table.schema, []).append(index)
    groups = [(idx, pa.concat_tables([tables[i] for i in idx])) for idx in by_schema.values()]
    if len(groups) > 1:
        try:
            merged = pa.concat_tables([g[1] for g in groups], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return groups  # e.g. a string and a float column of one name: kept apart
        return [([i for idx, _ in groups for i in idx], merged)]
    return groups


def with_model_columns(table: pa.Table, model_name: str, model_version: str) -> pa.Table:
    """`table` with the constant model_name and model_version columns after the timestamp."""
    n = table.num_rows
    table = table.add_column(2, "model_name", pa.repeat(pa.scalar(model_name, _STRING), n))
    return table.add_column(3, "model_version", pa.repeat(pa.scalar(model_version, _STRING), n))


def frame_for_humans(table_or_frame: object) -> dict[str, list[object]]:
    """Column -> values, as far as they can be represented (for dead letters)."""
    if isinstance(table_or_frame, pa.Table):
        return table_or_frame.to_pydict()
    if isinstance(table_or_frame, pd.DataFrame):
        return {str(k): list(v) for k, v in table_or_frame.to_dict(orient="list").items()}
    return {"value": [table_or_frame]}
