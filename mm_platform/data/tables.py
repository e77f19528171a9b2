"""Reading a user's table (CSV, Parquet or a Parquet folder) and checking that a path the
user named exists; writing a frame as CSV or Parquet.

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
    """'parquet' for a .parquet/.pq file or a folder (of Parquet parts), else 'csv'."""
    return "parquet" if path.suffix.lower() in PARQUET_SUFFIXES or path.is_dir() else "csv"


def read_table(path: Path, file_format: str | None = None, *, hint: str = "") -> pd.DataFrame:
    """A CSV or Parquet file, or a folder of Parquet parts (Spark's, hive partitions; hidden
    and `_` files skipped), as a frame (`file_format`, else by suffix), with errors that
    name the file; `hint` is added to the "cannot read it" error (what to fix)."""
    path = Path(path)
    if path.is_dir():
        if not any(_parts(path)):
            raise DataError(f"{path}: the folder holds no Parquet files; give a CSV or Parquet "
                            "file, or a folder of .parquet parts")  # fmt: skip
    else:
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


def _parts(folder: Path) -> list[Path]:
    """The visible Parquet files under `folder` (partition folders included)."""
    return [
        p for p in folder.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    ]  # fmt: skip


def writes_parquet(path: Path) -> bool:
    """Whether an output path means Parquet: a .parquet/.pq name or an existing folder."""
    return path.suffix.lower() in PARQUET_SUFFIXES or path.is_dir()


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` as Parquet (see `writes_parquet`; into an existing folder as
    `part-00000.parquet`) or else CSV; return the file written. OSError passes through."""
    if path.is_dir():
        path = path / "part-00000.parquet"
    if writes_parquet(path):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
