"""The Parquet files of the prediction log and the labels: writing, listing, setting aside.

Reading them is `reader`'s. Layout under the log root (a local folder or any pyarrow
filesystem URI such as s3://...), readable with plain pyarrow or pandas as a
hive-partitioned dataset:

    predictions/model=<name>/date=<YYYY-MM-DD>/part-<ns>-<tag>.parquet
    labels/model=<name>/date=<YYYY-MM-DD>/part-<ns>-<tag>.parquet

A prediction's `date` is the UTC day of its timestamp, so a window reads only the days it
overlaps (and the day after: older writers filed rows under the day they wrote them).
Every file is written under a hidden name (".tmp-...", skipped by readers and removed
when the write fails) and then renamed into place: a visible file is whole.

Compaction (see `maintenance`) merges a day's files into `part-<ns>-compacted-<hex>.parquet`,
whose Parquet metadata names its sources; until the sources are deleted, readers skip
those named by a compacted file they see. A file whose content cannot be read is moved
under `_corrupt/` with one warning, and every other file is still read; an I/O error of
the system (one with an errno) is raised instead, and moves nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mm_platform.clock import utc_now
from mm_platform.serving.predlog.records import schema_groups, with_model_columns

log = logging.getLogger(__name__)

DEFAULT_ROOT = "prediction_log"
ENV_ROOT = "MM_PREDICTION_LOG"
CORRUPT = "_corrupt"
SOURCES_KEY = b"mm.compacted_sources"
COMPACTED = "-compacted-"


def log_root(configured: str | None = None) -> str:
    """The log root: MM_PREDICTION_LOG, else the project's setting, else ./prediction_log."""
    root = os.environ.get(ENV_ROOT) or configured or DEFAULT_ROOT
    if "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of `root` and the root's path on it."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), root


def model_folder(base: str, kind: str, model: str) -> str:
    return f"{base}/{kind}/model={model}"


def today() -> str:
    return utc_now().strftime("%Y-%m-%d")


def write_table(
    root: str,
    kind: str,
    model: str,
    table: pa.Table,
    *,
    day: str,
    tag: str = "",
    stamp: int | None = None,
) -> str:
    """Write `table` as one new file of partition `day`, atomically; return its path.

    On failure the hidden temporary file is removed, so a full disk leaves nothing behind.
    """
    fs, base = filesystem(root)
    folder = f"{model_folder(base, kind, model)}/date={day}"
    fs.create_dir(folder, recursive=True)
    name = f"part-{stamp or time.time_ns()}-{tag or uuid.uuid4().hex[:8]}.parquet"
    tmp, final = f"{folder}/.tmp-{name}", f"{folder}/{name}"
    try:
        with fs.open_output_stream(tmp) as sink:
            pq.write_table(table, sink)
        fs.move(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):  # never created, or the filesystem is gone
            fs.delete_file(tmp)
        raise
    return final


def write_partition(root: str, kind: str, model: str, frame: Any, *, tag: str = "") -> str:
    """Write `frame` (a DataFrame or an Arrow table) as a new file of dataset `kind` for
    `model`, atomically; return its path. Rows with a `timestamp` go to the partition of
    its UTC day (one file per day, the last one's path returned), others to today's."""
    table = frame
    if isinstance(frame, pd.DataFrame):
        # one thread: this also runs at interpreter exit, when new threads cannot start
        table = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
    index = table.schema.get_field_index("timestamp")
    if index < 0 or not pa.types.is_timestamp(table.schema.field(index).type):
        return write_table(root, kind, model, table, day=today(), tag=tag)
    return [write_table(root, kind, model, part, day=day, tag=tag) for day, part in days_of(table)][
        -1
    ]


WriteFile = Callable[..., str]  # write_table's signature: (root, kind, model, table, *, day, tag)


def write_requests(
    root: str,
    model: str,
    version: str,
    requests: list[pa.Table],
    *,
    tag: str,
    write: WriteFile = write_table,
) -> Iterator[tuple[pa.Table, Exception | None]]:
    """Write request records as predictions with `write`, one file per schema and day;
    yield each part with None once written, else with its error. An OSError comes with the
    part as it was (retry it later); when Parquet refuses a part of several requests, they
    are written one by one, so a refusal comes with one request alone and spoils no other."""
    for indices, group in schema_groups(requests):
        for day, part in days_of(with_model_columns(group, model, version)):
            try:
                write(root, "predictions", model, part, day=day, tag=tag)
            except OSError as exc:
                yield part, exc
            except (pa.ArrowException, ValueError) as exc:
                if len(indices) == 1:
                    yield part, exc
                else:
                    alone = [requests[i] for i in indices]
                    yield from _write_one_by_one(root, model, version, alone, day, tag, write)
            else:
                yield part, None


def _write_one_by_one(
    root: str,
    model: str,
    version: str,
    requests: list[pa.Table],
    day: str,
    tag: str,
    write: WriteFile,
) -> Iterator[tuple[pa.Table, Exception | None]]:
    """`write_requests` of each request's rows of `day` in a file of its own."""
    for request in requests:
        for request_day, part in days_of(with_model_columns(request, model, version)):
            if request_day != day:
                continue  # written (or not) with the other parts of its group
            try:
                write(root, "predictions", model, part, day=day, tag=tag)
            except (pa.ArrowException, OSError, ValueError) as exc:
                yield part, exc
            else:
                yield part, None


def days_of(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """`table` split by the UTC day of its timestamps (almost always one day)."""
    days = table.column("timestamp").to_numpy().astype("datetime64[D]")
    if len(days) == 0 or days.min() == days.max():
        return [(str(days.min()) if len(days) else today(), table)]
    return [(str(day), table.filter(pa.array(days == day))) for day in sorted(set(days))]


# --- listing ----------------------------------------------------------------------------------


def partitions(
    fs: pafs.FileSystem, folder: str, start: datetime | None = None, end: datetime | None = None
) -> list[tuple[str, str]]:
    """(day, path) of the `date=` folders under `folder` overlapping [start, end), by day."""
    first = _utc_day(start) if start is not None else None
    last = _utc_day(end, exclusive=True) if end is not None else None
    found = []
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        name = info.base_name
        if info.type != pafs.FileType.Directory or not name.startswith("date="):
            continue
        try:
            day = date.fromisoformat(name.removeprefix("date="))
        except ValueError:
            continue  # not ours
        if (first is None or day >= first) and (last is None or day <= last):
            found.append((name.removeprefix("date="), info.path))
    return sorted(found)


def _utc_day(moment: datetime, *, exclusive: bool = False) -> date:
    """The UTC day of `moment`; with `exclusive`, the last day before it (an end bound)."""
    stamp = utc(moment)
    return (stamp - pd.Timedelta(1, "ns") if exclusive else stamp).date()


def utc(moment: datetime) -> pd.Timestamp:
    """A timestamp in UTC; a naive one is taken to be UTC already."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def data_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    """Names of the visible Parquet files of one partition (no hidden or temporary ones)."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(
        i.base_name
        for i in infos
        if i.type == pafs.FileType.File
        and i.base_name.endswith(".parquet")
        and not i.base_name.startswith((".", "_"))
    )


def is_compacted(name: str) -> bool:
    return COMPACTED in name


def encode_sources(names: Iterable[str]) -> bytes:
    return base64.b64encode(zlib.compress(json.dumps(sorted(names)).encode()))


def sources_of(fs: pafs.FileSystem, path: str) -> set[str]:
    """The files a compacted file was made from (and theirs, transitively)."""
    with fs.open_input_file(path) as source:
        metadata = pq.read_schema(source).metadata or {}
    if SOURCES_KEY not in metadata:
        return set()
    try:
        return set(json.loads(zlib.decompress(base64.b64decode(metadata[SOURCES_KEY]))))
    except (ValueError, zlib.error) as exc:
        raise pa.ArrowInvalid(f"{path}: its list of compacted sources is unreadable") from exc


def compacted_sources(
    fs: pafs.FileSystem, base: str, folder: str, names: Iterable[str]
) -> dict[str, set[str]]:
    """The sources of each readable compacted file among `names`. A damaged one is set
    aside, so the sources it listed that still exist are read again as they are."""
    found = {}
    for name in filter(is_compacted, names):
        path = f"{folder}/{name}"
        try:
            found[name] = sources_of(fs, path)
        except (pa.ArrowException, OSError) as exc:
            if not is_damage(exc):
                raise
            set_aside(fs, base, path, f"{type(exc).__name__}: {exc}")
    return found


def visible_files(fs: pafs.FileSystem, base: str, folder: str) -> tuple[list[str], set[str]]:
    """The partition's files to read (sources covered by a compacted file left out, and
    damaged compacted files set aside), and the compacted files read."""
    names = data_files(fs, folder)
    sources = compacted_sources(fs, base, folder, names)
    covered = set().union(*sources.values())
    readable = [n for n in names if n in sources or not is_compacted(n)]
    return [n for n in readable if n not in covered], set(sources)


# --- damage ---------------------------------------------------------------------------------


def is_damage(exc: BaseException) -> bool:
    """Whether reading a file failed because of its content (set it aside), not because of
    the system (EMFILE, EIO, ESTALE, a timeout: those carry an errno; the file is fine)."""
    if isinstance(exc, OSError):
        return exc.errno is None  # Arrow's own I/O errors, e.g. thrift deserialisation
    return isinstance(exc, pa.ArrowException)


def set_aside(fs: pafs.FileSystem, base: str, path: str, reason: str) -> None:
    """Move a damaged log file under `<root>/_corrupt/`, keeping its relative path."""
    relative = path[len(base) :].lstrip("/")
    target = f"{base}/{CORRUPT}/{relative}"
    try:
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        fs.move(path, target)
    except FileNotFoundError:
        raise
    except OSError as exc:
        log.warning(
            "prediction log: %s is damaged (%s) and cannot be moved aside (%s); skipped",
            path,
            reason,
            exc,
        )
        return
    log.warning("prediction log: %s is damaged (%s); moved to %s", path, reason, target)
