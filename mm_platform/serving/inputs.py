"""What a model is given: a request's columns conformed to the model's signature.

Every path that scores or logs rows (HTTP, `mm predict` on CSV or Parquet, fine-tuning
data, drift files) goes through `conform`, so the prediction log holds exactly what the
model saw, in the signature's types, and a missing value means one thing everywhere: JSON
`null`, an empty CSV cell, a Parquet null and NaN all become NaN, as training saw them.
Columns the project drops before training (ids such as `customer_id`) and the target are
accepted: ids are carried beside the features (as strings) into the log and the outputs,
the target is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

_FLOATS: dict[str, Any] = {"double": "float64", "float": "float32"}
_INTEGERS: dict[str, np.iinfo[Any]] = {"long": np.iinfo(np.int64), "integer": np.iinfo(np.int32)}
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class InputError(ValueError):
    """Rows that do not fit the model's signature; the message names the column and value."""


@dataclass(frozen=True)
class InputSpec:
    """The model's input columns with their MLflow types, and the columns passed by it."""

    features: tuple[tuple[str, str], ...]  # (column, MLflow type) in the signature's order
    ids: tuple[str, ...] = ()  # carried into the log and outputs, never given to the model
    ignored: tuple[str, ...] = ()  # accepted and dropped (the target)

    @property
    def columns(self) -> list[str]:
        """The model's input columns, in order."""
        return [name for name, _ in self.features]

    @classmethod
    def build(
        cls, schema: Sequence[tuple[str, str]], ids: Sequence[str] = (),
        ignored: Sequence[str] = (),
    ) -> InputSpec:  # fmt: skip
        """A spec from a signature's (column, type) pairs; ids and ignored columns that the
        model itself takes are the model's."""
        taken = {name for name, _ in schema}
        return cls(
            tuple((str(n), str(t)) for n, t in schema),
            tuple(c for c in dict.fromkeys(ids) if c not in taken),
            tuple(c for c in dict.fromkeys(ignored) if c not in taken and c not in ids),
        )


def conform(frame: pd.DataFrame, spec: InputSpec) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(the features in the signature's order and types, the id columns as string arrays).

    Raises InputError for a missing or unknown column, no rows, or a value that cannot be
    converted to its column's type.
    """
    columns = [str(c) for c in frame.columns]
    if not spec.features:  # a model without a signature takes what it is given
        spec = InputSpec.build(
            [(c, "") for c in columns if c not in spec.ids and c not in spec.ignored],
            spec.ids, spec.ignored,
        )  # fmt: skip
    if len(set(columns)) != len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise InputError(f"columns {repeated} appear more than once")
    known = set(spec.columns) | set(spec.ids) | set(spec.ignored)
    missing = [c for c in spec.columns if c not in columns]
    extra = [c for c in columns if c not in known]
    if missing or extra:
        raise InputError(_mismatch(spec, missing, extra))
    if len(frame) == 0:
        raise InputError("no rows to score")
    ids = {
        name: as_text(frame[name]).to_numpy() if name in columns else np.full(len(frame), None)
        for name in spec.ids
    }
    if columns == spec.columns and _already(frame, spec):
        # the common case (a JSON body of numbers): nothing to convert, nothing to copy
        return frame if isinstance(frame.index, pd.RangeIndex) else frame.reset_index(
            drop=True
        ), ids
    features = pd.DataFrame(
        {name: _convert(frame[name], kind, name).to_numpy() for name, kind in spec.features}
    )
    return features, ids


def _already(frame: pd.DataFrame, spec: InputSpec) -> bool:
    """Whether every column already has its signature's float type."""
    return all(
        kind in _FLOATS and dtype == _FLOATS[kind]
        for (_, kind), dtype in zip(spec.features, frame.dtypes, strict=True)
    )


def _mismatch(spec: InputSpec, missing: list[str], extra: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"not in the model {extra}")
    also = [*spec.ids, *spec.ignored]
    accepted = f" (also accepted: {also})" if also else ""
    return f"columns do not match the model's signature {spec.columns}{accepted}: " + "; ".join(
        parts
    )


def _convert(values: pd.Series, kind: str, name: str) -> pd.Series:
    """`values` in the pandas type of MLflow type `kind`; InputError names the first bad one."""
    values = values.reset_index(drop=True)
    if kind in _FLOATS:
        return _to_float(values, name).astype(_FLOATS[kind], copy=False)
    if kind in _INTEGERS:
        return _to_integer(values, name, _INTEGERS[kind])
    if kind == "boolean":
        return _to_bool(values, name)
    if kind == "string":
        return _to_string(values, name)
    if kind == "datetime":
        converted = pd.to_datetime(values, errors="coerce")
        _refuse(values, converted.isna() & values.notna(), name, "is not a date or time")
        return converted
    return values  # binary and the rest: as given


def _to_float(values: pd.Series, name: str) -> pd.Series:
    if values.dtype.kind == "f":
        return values
    if values.dtype.kind in "iub":
        return values.astype("float64")
    objects = values.to_numpy(dtype=object)
    # a value is missing when it is None or NaN; text and containers are never numbers
    kinds = np.fromiter((_number_kind(v) for v in objects), dtype=np.int8, count=len(objects))
    _refuse(values, kinds == 2, name, "is not a number; send a number, or null when missing")
    out = np.full(len(objects), np.nan)
    ok = kinds == 1
    out[ok] = [float(v) for v in objects[ok]]
    return pd.Series(out, name=values.name)


def _number_kind(value: object) -> int:
    """0: missing, 1: a number (bools included), 2: anything else (text, lists, ...)."""
    if value is None:
        return 0
    if isinstance(value, (int, float, np.integer, np.floating, bool, np.bool_)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            return 2
        return 0 if number != number else 1  # NaN is missing
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return 2
        return 1 if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else 2
    return 2


def _to_integer(values: pd.Series, name: str, limits: np.iinfo) -> pd.Series:
    if values.dtype.kind in "iu":
        numbers = values
    else:
        numbers = _to_float(values, name)
        _refuse(values, numbers.isna(), name, "is missing; this integer column needs a value")
        _refuse(values, numbers != np.floor(numbers), name, "is not a whole number")
    too_big = (numbers > limits.max) | (numbers < limits.min)
    _refuse(values, too_big, name, f"is out of range ({limits.min} to {limits.max})")
    if values.dtype.kind not in "iu":
        objects = values.to_numpy(dtype=object)  # exact ints beyond float precision stay exact
        exact = [int(v) if isinstance(v, (int, np.integer)) else int(f) for v, f in
                 zip(objects, numbers, strict=True)]  # fmt: skip
        return pd.Series(exact, dtype=limits.dtype, name=values.name)
    return values.astype(limits.dtype)


def _to_bool(values: pd.Series, name: str) -> pd.Series:
    if values.dtype.kind == "b":
        return values
    out, bad = [], []
    for value in values.to_numpy(dtype=object):
        text = str(value).strip().lower() if value is not None else ""
        flag = True if text in _TRUE else False if text in _FALSE else None
        bad.append(flag is None)
        out.append(bool(flag))
    _refuse(values, np.array(bad), name, "is not true or false")
    return pd.Series(out, dtype=bool, name=values.name)


def _to_string(values: pd.Series, name: str) -> pd.Series:
    objects = values.to_numpy(dtype=object)
    bad = np.fromiter(
        (isinstance(v, (list, dict, tuple, set, bytes)) for v in objects), dtype=bool,
        count=len(objects),
    )  # fmt: skip
    _refuse(values, bad, name, "is not text; send a string, or null when missing")
    return as_text(values)


def as_text(values: pd.Series) -> pd.Series:
    """Strings, with every kind of missing value as NaN (how pandas reads an empty cell)."""
    objects = values.reset_index(drop=True).to_numpy(dtype=object)
    out = np.array(
        [np.nan if _is_missing(v) else v if isinstance(v, str) else _text(v) for v in objects],
        dtype=object,
    )
    return pd.Series(out, dtype=object, name=values.name)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def _text(value: object) -> str:
    """A number as text the way a CSV reader would see it: 12, not 12.0."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _refuse(values: pd.Series, bad: object, name: str, why: str) -> None:
    mask = np.asarray(bad, dtype=bool)
    if not mask.any():
        return
    row = int(np.argmax(mask))
    shown = repr(values.iloc[row])
    if len(shown) > 60:
        shown = shown[:57] + "..."
    count = int(mask.sum())
    more = f" (and {count - 1} more rows)" if count > 1 else ""
    raise InputError(f"column '{name}': {shown} in row {row} {why}{more}")
