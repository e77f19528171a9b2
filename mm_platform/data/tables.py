"""Reading a user's table (CSV or Parquet) and checking that a path the user named exists.

One reader for every command that takes a file (`mm train` on a file dataset, `mm predict`,
`mm labels`, `mm finetune --data`, `mm drift --current`), so all of them accept the same
formats and name the file in their errors.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mm_platform.errors import DataError, MmError

PARQUET_SUFFIXES = (".parquet", ".pq")


def require_path(
    path: str | Path, problem: str, *, folder: bool = False, error: type[MmError] = DataError
) -> Path:
    """`path` as a Path if it is an existing file (a folder with `folder`); else raise
    `error` with "<path>: <problem>", the problem saying the fix."""
    found = Path(path)
    if not (found.is_dir() if folder else found.is_file()):
        raise error(f"{path}: {problem}")
    return found


def table_format(path: Path) -> str:
    """'parquet' for a .parquet/.pq file, else 'csv'."""
    return "parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "csv"


def read_table(path: Path, file_format: str | None = None, *, hint: str = "") -> pd.DataFrame:
    """A CSV or Parquet file (`file_format`, else by suffix) as a frame, with errors that
    name the file; `hint` is added to the "cannot read it" error (what to fix)."""
    require_path(path, "no such file")
    fmt = file_format or table_format(path)
    try:
        return pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"{path}: the file is empty; it needs a header and at least one row"
        ) from exc
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(
            f"{path}: cannot read it as {fmt} ({type(exc).__name__}: {exc})"
            + (f"; {hint}" if hint else "")
        ) from exc
