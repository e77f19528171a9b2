"""Keeping the prediction log small and knowing its state: compaction and inventory.

`compact` merges each day's small files into one, without ever losing or doubling a
record for a concurrent reader: the compacted file names its sources in its Parquet
metadata and is renamed into place before the sources are deleted, and readers skip
sources named by a compacted file they see. Files that arrive while it runs are left for
the next run, and so are files of a flush whose journal segments are still there (the
journal's recovery finds those by name). One compaction per model at a time (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mm_platform.faults import pause_point
from mm_platform.serving.predlog import store as logstore
from mm_platform.serving.predlog.deadletter import count_dead_letters
from mm_platform.serving.predlog.journal import flush_tag, open_segments
from mm_platform.serving.predlog.records import schema_groups

log = logging.getLogger(__name__)

ROW_GROUP = 65_536


@dataclass
class CompactResult:
    """What `compact` did: days touched, files before and after, rows rewritten."""

    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    left_for_later: int = 0  # files of flushes whose journal segments are still open


def compact(
    root: str, model: str, kind: str = "predictions", before: date | str | None = None
) -> CompactResult:
    """Merge the small files of each day of `kind` for `model` (days before `before` only,
    when given) into one file per day, atomically."""
    fs, base = logstore.filesystem(root)
    end = None if before is None else datetime.fromisoformat(str(before))
    result = CompactResult()
    with _compaction_lock(root, model):
        folder = logstore.model_folder(base, kind, model)
        for _day, path in logstore.partitions(fs, folder, None, end):
            _compact_day(fs, base, path, lambda: _open_segments(root, model, kind), result)
    return result


def _open_segments(root: str, model: str, kind: str) -> dict[str, int]:
    return open_segments(root, model) if kind == "predictions" else {}


def _compact_day(
    fs, base: str, folder: str, pending_now: Callable[[], dict[str, int]], result: CompactResult
) -> None:
    listed = logstore.data_files(fs, folder)
    # the journal is read after the day's files are: a listed file whose flush has not yet
    # deleted its segment is then seen pending. Read before, a writer starting in between
    # could write a file, die, and have it merged; recovery, finding no file of that tag,
    # would write its rows again
    pending = pending_now()
    sources = logstore.compacted_sources(fs, base, folder, listed)  # damaged ones set aside
    listed = [n for n in listed if n in sources or not logstore.is_compacted(n)]
    covered = set().union(*sources.values())
    names = [n for n in listed if n not in covered]
    for name in covered.intersection(
        listed
    ):  # sources a compacted file already holds (a run stopped early)
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(f"{folder}/{name}")
    ready = [n for n in names if not _flush_pending(n, pending)]
    result.left_for_later += len(names) - len(ready)
    result.files_before += len(names)
    result.files_after += len(names) - len(ready)
    if len(ready) < 2:
        result.files_after += len(ready)
        return
    result.partitions += 1
    schemas = _schemas(fs, base, folder, ready)
    keys = list(schemas)
    empty = [pa.table({f.name: pa.array([], f.type) for f in schemas[k]}) for k in keys]
    for indices, merged in schema_groups(empty):
        group = sorted(keys[i] for i in indices)
        if len(group) == 1:  # alone in its schema: nothing to merge it with
            result.files_after += 1
            continue
        result.rows += _merge(fs, base, folder, group, merged.schema)
        result.files_after += 1
        pause_point("compaction:merged")  # the merged file is visible, its sources too
        for name in group:
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(f"{folder}/{name}")


def _read_source(fs, base: str, path: str) -> pa.Table | None:
    """A source's rows, or None when it is damaged (it is set aside)."""
    try:
        with fs.open_input_file(path) as source:
            return pq.read_table(source).replace_schema_metadata(None)
    except (pa.ArrowException, OSError) as exc:
        if not logstore.is_damage(exc):
            raise
        logstore.set_aside(fs, base, path, f"{type(exc).__name__}: {exc}")
        return None


def _flush_pending(name: str, pending: dict[str, int]) -> bool:
    tag = flush_tag(name)
    return tag is not None and tag[0] in pending and pending[tag[0]] <= tag[1]


def _schemas(fs, base: str, folder: str, names: list[str]) -> dict[str, pa.Schema]:
    """Each readable file's schema; damaged files are set aside."""
    schemas = {}
    for name in names:
        path = f"{folder}/{name}"
        try:
            with fs.open_input_file(path) as source:
                schemas[name] = pq.read_schema(source).remove_metadata()
        except (pa.ArrowException, OSError) as exc:
            if not logstore.is_damage(exc):
                raise
            logstore.set_aside(fs, base, path, f"{type(exc).__name__}: {exc}")
    return schemas


def _merge(fs, base: str, folder: str, sources: list[str], schema: pa.Schema) -> int:
    """Write `sources` as one compacted file (hidden, then renamed); return its rows."""
    covered = set(sources)
    for name in sources:
        if logstore.is_compacted(name):
            covered |= logstore.sources_of(fs, f"{folder}/{name}")
    first = sources[0].split("-")[1]  # sorts where its oldest source did
    name = f"part-{first}{logstore.COMPACTED}{uuid.uuid4().hex[:8]}.parquet"
    tmp, final = f"{folder}/.tmp-{name}", f"{folder}/{name}"
    schema = schema.with_metadata({logstore.SOURCES_KEY: logstore.encode_sources(covered)})
    rows = 0
    try:
        with fs.open_output_stream(tmp) as sink, pq.ParquetWriter(sink, schema) as out:
            for table in _batches(fs, base, folder, sources, schema):
                out.write_table(table, row_group_size=ROW_GROUP)
                rows += table.num_rows
        fs.move(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise
    return rows


def _batches(
    fs, base: str, folder: str, sources: list[str], schema: pa.Schema
) -> Iterator[pa.Table]:
    """The sources' rows in the compacted schema, in tables of about ROW_GROUP rows. A
    source whose data is damaged is set aside (its name in the compacted file's list of
    sources is then harmless: no file of that name is left to hide)."""
    waiting: list[pa.Table] = []
    size = 0
    plain = schema.remove_metadata()
    for name in sources:
        table = _read_source(fs, base, f"{folder}/{name}")
        if table is None:
            continue
        table = pa.concat_tables(
            [pa.table({f.name: pa.array([], f.type) for f in plain}), table],
            promote_options="permissive",
        ).select(plain.names)
        waiting.append(table.cast(plain))
        size += table.num_rows
        if size >= ROW_GROUP:
            yield (
                pa.concat_tables(waiting).combine_chunks().replace_schema_metadata(schema.metadata)
            )
            waiting, size = [], 0
    if waiting:
        yield pa.concat_tables(waiting).combine_chunks().replace_schema_metadata(schema.metadata)


@contextlib.contextmanager
def _compaction_lock(root: str, model: str) -> Iterator[None]:
    if "://" in root:
        yield  # no lock on a remote root: run one compaction at a time yourself
        return
    folder = Path(root) / "_locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"compact-model={model}.lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OSError(
                f"{root}: another compaction of {model} is running; run this one after it"
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass
class LogInventory:
    """Files and rows of a model's log, and what was set aside."""

    files: dict[str, int]
    rows: dict[str, int]
    days: dict[str, int]
    dead_letters: int
    corrupt_files: int
    journal_segments: int


def inventory(root: str, model: str) -> LogInventory:
    """Count what the log of `model` holds (reads only Parquet footers)."""
    fs, base = logstore.filesystem(root)
    files, rows, days = {}, {}, {}
    for kind in ("predictions", "labels"):
        files[kind] = rows[kind] = 0
        parts = logstore.partitions(fs, logstore.model_folder(base, kind, model))
        days[kind] = len(parts)
        for _day, folder in parts:
            names, _ = logstore.visible_files(fs, base, folder)
            files[kind] += len(names)
            for name in names:
                path = f"{folder}/{name}"
                with contextlib.suppress(pa.ArrowException, OSError), fs.open_input_file(path) as f:
                    rows[kind] += pq.read_metadata(f).num_rows
    corrupt = Path(base) / logstore.CORRUPT
    journal = Path(base) / "_journal" / f"model={model}"
    n_corrupt = sum(1 for p in corrupt.rglob("*") if p.is_file()) if corrupt.is_dir() else 0
    n_corrupt += len(list(journal.glob("*.corrupt"))) if journal.is_dir() else 0
    segments = len(list(journal.glob("*.journal"))) if journal.is_dir() else 0
    return LogInventory(files, rows, days, count_dead_letters(root, model), n_corrupt, segments)
