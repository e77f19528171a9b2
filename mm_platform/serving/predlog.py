"""The prediction log and the labels: Parquet datasets partitioned by model and date.

Layout under the log root (a local folder or any pyarrow filesystem URI such as s3://...):

    predictions/model=<name>/date=<YYYY-MM-DD>/part-<time>-<uuid>.parquet
    labels/model=<name>/date=<YYYY-MM-DD>/part-<time>-<uuid>.parquet

Every file is written under a hidden name (".tmp-...", which readers skip) and then moved
into place, so a crash never leaves a half-written file visible.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pickle
import struct
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_ROOT = "prediction_log"
ENV_ROOT = "MM_PREDICTION_LOG"
META = ("request_id", "timestamp", "model_name", "model_version")


def log_root(configured: str | None = None) -> str:
    """The log root: MM_PREDICTION_LOG, else the project's setting, else ./prediction_log."""
    root = os.environ.get(ENV_ROOT) or configured or DEFAULT_ROOT
    if "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def _filesystem(root: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), root


def write_partition(root: str, kind: str, model: str, frame: Any, *, tag: str = "") -> str:
    """Write `frame` (a DataFrame or an Arrow table) as one new file of dataset `kind` for
    `model`, atomically; return its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, base = _filesystem(root)
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    folder = f"{base}/{kind}/model={model}/date={day}"
    fs.create_dir(folder, recursive=True)
    name = f"part-{time.time_ns()}-{tag or uuid.uuid4().hex[:8]}.parquet"
    tmp, final = f"{folder}/.tmp-{name}", f"{folder}/{name}"
    table = frame
    if isinstance(frame, pd.DataFrame):
        # one thread: this also runs at interpreter exit, when new threads cannot start
        table = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
    with fs.open_output_stream(tmp) as sink:
        pq.write_table(table, sink)
    fs.move(tmp, final)
    return final


def read_dataset(
    root: str, kind: str, model: str, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """All rows of dataset `kind` for `model` (with timestamps in [start, end) when given)."""
    import pyarrow.dataset as ds

    if kind == "predictions":
        recover(root, model)  # requests a killed server acknowledged are part of the log
    fs, base = _filesystem(root)
    folder = f"{base}/{kind}/model={model}"
    info = fs.get_file_info(folder)
    if info.type.name == "NotFound":
        return pd.DataFrame()
    dataset = ds.dataset(folder, filesystem=fs, format="parquet", partitioning="hive")
    # file by file, so that files whose column types differ (int vs float) still combine
    frames = [fragment.to_table().to_pandas() for fragment in dataset.get_fragments()]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.drop(columns=[c for c in ("date",) if c in frame.columns])
    if "timestamp" in frame.columns and (start is not None or end is not None):
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        keep = np.ones(len(frame), dtype=bool)
        if start is not None:
            keep &= stamps >= _utc(start)
        if end is not None:
            keep &= stamps < _utc(end)
        frame = frame[keep]
    return frame.reset_index(drop=True)


def _utc(moment: datetime) -> pd.Timestamp:
    """A timestamp in UTC; a naive one is taken to be UTC already."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


_SUFFIXES: list[str] = [f"-{i}" for i in range(1024)]


def _suffixes(n: int) -> list[str]:
    """ "-0" ... "-<n-1>", made once: the request path only concatenates."""
    global _SUFFIXES
    known = _SUFFIXES
    if len(known) < n:  # a new list, swapped in whole: safe across request threads
        known = [f"-{i}" for i in range(max(n, 2 * len(known)))]
        _SUFFIXES = known
    return known[:n]


# one request: features, predictions, a request id per row, UTC time in ns since the epoch
Record = tuple[pd.DataFrame, np.ndarray, list[str], int]


def build_table(records: list[Record], model_name: str, model_version: str) -> Any:
    """One Arrow table of the buffered requests.

    The writer thread shares the GIL with the requests being served, so the work is done
    column by column in Arrow and NumPy, never row by row in Python.
    """
    import pyarrow as pa

    sizes = [len(record[0]) for record in records]
    total = sum(sizes)
    features = pd.concat([record[0] for record in records], ignore_index=True)
    for column in features.columns:  # one type per column in every file: ints as floats
        if pd.api.types.is_integer_dtype(features[column]):
            features[column] = features[column].astype("float64")
    stamps = np.repeat(np.array([r[3] for r in records], dtype="int64"), sizes)
    constant = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(total, dtype="int32")), pa.array([model_name, model_version])
    )
    version_index = pa.array(np.ones(total, dtype="int32"))
    columns = {
        "request_id": pa.array([i for record in records for i in record[2]], pa.string()),
        "timestamp": pa.array(stamps, pa.timestamp("ns", tz="UTC")),
        "model_name": constant.cast(pa.string()),
        "model_version": pa.DictionaryArray.from_arrays(version_index, constant.dictionary).cast(
            pa.string()
        ),
    }
    table = pa.Table.from_pandas(features, preserve_index=False, nthreads=1)
    for position, (name, array) in enumerate(columns.items()):
        table = table.add_column(position, name, array)
    predictions = np.concatenate(
        [r[1].reshape(n, -1)[:, 0] for r, n in zip(records, sizes, strict=True)]
    )
    return table.append_column("prediction", pa.array(predictions))


# --- the write-ahead journal ------------------------------------------------------------------
#
# Every acknowledged request is in the journal before its answer leaves: a length-prefixed
# pickle appended to the writer's current segment file (the kernel keeps it if the process
# dies, SIGKILL included). A flush starts a new segment, writes the old one's requests as
# a Parquet file tagged with the segment's name, then deletes the segment. A segment whose
# writer is dead (its flock is free) is recovered by the next writer or reader of that
# model's log: its requests not already in a file tagged with its name are written, then it
# is deleted. Local log roots only; with a remote root (s3://...) there is no journal.

JOURNAL = "_journal"
_LENGTH = struct.Struct("<Q")
_FORMAT = "j1"  # in every segment's name: a later format is not read as this one


class _Segment:
    """One open, locked journal file, named `<writer>-<seq>.<format>.v<version>.journal`.

    A writer's segments are flushed in order, and a flush writes every older segment of
    that writer whose records are still buffered: so a log file tagged with segment `seq`
    proves that the writer's segments up to `seq` are all in the log.
    """

    def __init__(self, folder: Path, writer: str, seq: int, version: str) -> None:
        self.name = f"{writer}-{seq:08d}"
        self.path = folder / f"{self.name}.{_FORMAT}.v{version}.journal"
        hidden = folder / f".tmp-{self.path.name}"
        self.fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # held while this writer lives
        os.rename(hidden, self.path)  # visible to recovery only once locked
        self.records = 0

    def append(self, payload: bytes) -> None:
        data = memoryview(_LENGTH.pack(len(payload)) + payload)
        while data:  # a short write is continued, not dropped
            written = os.write(self.fd, data)
            data = data[written:]
        self.records += 1

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _journal_folder(root: str, model: str) -> Path | None:
    return None if "://" in root else Path(root) / JOURNAL / f"model={model}"


def _read_segment(path: Path) -> list[Record]:
    """The complete records of a segment; a record cut short by a crash is ignored (its
    request was never answered). The journal is written and read by mm alone, in a folder
    of the log root: only the serving account should be able to write there."""
    data = path.read_bytes()
    records, offset = [], 0
    while offset + _LENGTH.size <= len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        start, end = offset + _LENGTH.size, offset + _LENGTH.size + length
        if end > len(data):
            break
        records.append(pickle.loads(data[start:end]))
        offset = end
    return records


def _flushed_up_to(root: str, model: str, writer: str) -> int:
    """The highest segment number of `writer` that a log file is tagged with (-1: none)."""
    folder = Path(root) / "predictions" / f"model={model}"
    best = -1
    for path in folder.glob(f"date=*/part-*-{writer}-*.parquet"):
        with contextlib.suppress(ValueError):
            best = max(best, int(path.stem.rsplit("-", 1)[1]))
    return best


def recover(root: str, model: str) -> int:
    """Write the journalled requests of dead writers of `model` into the log; return rows.

    A segment that cannot be read (corrupt, or another format) is renamed `.corrupt` and
    reported on stderr; the others are still recovered.
    """
    folder = _journal_folder(root, model)
    if folder is None or not folder.is_dir():
        return 0
    written = 0
    for path in sorted(folder.glob("*.journal")):
        try:
            written += _recover_segment(root, model, path)
        except OSError as exc:  # e.g. a read-only reader: a writer will recover it later
            print(f"mm prediction log: cannot recover {path.name} now: {exc}", file=sys.stderr)
    return written


def _recover_segment(root: str, model: str, path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0  # its writer just flushed it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # a live writer (or another recovery) holds it
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            return 0  # deleted (and maybe replaced) since it was opened
        name, fmt, version = path.name.removesuffix(".journal").rsplit(".", 2)
        writer, seq = name.rsplit("-", 1)
        try:
            if fmt != _FORMAT:
                raise ValueError(f"format {fmt}, this mm reads {_FORMAT}")
            records = [r for r in _read_segment(path) if len(r[0])]
            done = _flushed_up_to(root, model, writer) >= int(seq)
            rows = 0
            if records and not done:
                table = build_table(records, model, version.removeprefix("v"))
                write_partition(root, "predictions", model, table, tag=name)
                rows = table.num_rows
        except Exception as exc:  # corrupt or foreign: set aside, keep the log readable
            path.rename(path.with_suffix(".corrupt"))
            print(f"mm prediction log: {path.name} cannot be read ({exc}); renamed "
                  f"{path.with_suffix('.corrupt').name}", file=sys.stderr)  # fmt: skip
            return 0
        path.unlink()
        return rows
    finally:
        os.close(fd)


class LogUnavailable(Exception):  # interim: replaced by the predlog branch
    """The record could not be made durable; it was not logged."""


class PredictionLogWriter:
    """Buffers prediction records and writes them in the background.

    `append` returns at once; a thread writes a file every `flush_seconds` (or sooner when
    `max_rows` are waiting). `close` (also run at interpreter exit, which a graceful
    SIGTERM of the scoring server reaches) writes whatever is still buffered.
    """

    def __init__(
        self,
        root: str,
        model_name: str,
        model_version: str,
        *,
        flush_seconds: float = 0.2,
        max_rows: int = 50_000,
    ) -> None:
        self.root = root
        self.model_name = model_name
        self.model_version = str(model_version)
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self._closed = False
        self.last_error: str | None = None
        self._start()
        atexit.register(self.close)
        # a forked child (a server forking workers after loading the model) gets its own
        # buffer, journal and thread; the parent's stay the parent's
        os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        # the writer thread builds the files, so the request path only takes references
        self._buffer: list[Record] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._writer = f"w{os.getpid()}x{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._segment: _Segment | None = None
        self._unwritten: list[_Segment] = []  # segments whose records a failed flush kept
        folder = _journal_folder(self.root, self.model_name)
        if folder is not None and not self._closed:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                recover(self.root, self.model_name)
                self._segment = self._new_segment(folder)
            except OSError as exc:  # serve anyway; records are buffered and retried
                self._journal_off(exc)
        self._thread = threading.Thread(target=self._run, name="mm-prediction-log", daemon=True)
        self._thread.start()

    def _new_segment(self, folder: Path) -> _Segment:
        self._seq += 1
        return _Segment(folder, self._writer, self._seq, self.model_version)

    @property
    def healthy(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"healthy": True, "reason": None, "dead_letters": 0, "buffered_rows": self._rows}

    def append(self, frame: pd.DataFrame) -> list[str]:
        features, predictions = frame.drop(columns=["prediction"]), frame["prediction"]
        return self._append(features, predictions)

    def _append(self, features: pd.DataFrame, predictions: Any) -> list[str]:
        """Record one request's rows; return a request id per row (`<uuid>-<row>`).

        The caller must not modify `features` afterwards (the scoring server builds a new
        frame per request).
        """
        n = len(features)
        base = uuid.uuid4().hex
        ids = [base + suffix for suffix in _suffixes(n)]
        record = (features, np.asarray(predictions), ids, time.time_ns())
        payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._segment is not None:
                try:
                    self._segment.append(payload)  # on disk (page cache) before the answer
                except OSError as exc:  # e.g. a full disk: keep serving, without a journal
                    self._unwritten.append(self._segment)
                    self._segment = None
                    self._journal_off(exc)
            self._buffer.append(record)
            self._rows += n
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()
        return ids.copy()  # the buffer keeps its own: callers may extend what they get

    def _journal_off(self, exc: OSError) -> None:
        self.last_error = f"journal: {exc}"
        print(
            f"mm prediction log: no write-ahead journal ({exc}); a crash would lose the "
            "requests of the last flush interval",
            file=sys.stderr,
        )

    def flush(self) -> int:
        """Write everything buffered now; return the rows written."""
        with self._lock:
            records, self._buffer, self._rows = self._buffer, [], 0
            if not records:
                return 0
            done = [*self._unwritten]
            if self._segment is not None:
                done.append(self._segment)
                try:
                    self._segment = self._new_segment(self._segment.path.parent)
                except OSError as exc:
                    self._segment = None
                    self._journal_off(exc)
            self._unwritten = []
        try:
            written = self._write(records, done[-1].name if done else "")
        except BaseException:
            with self._lock:  # keep them for the next attempt rather than lose them
                self._buffer[:0] = records
                self._rows += sum(len(r[0]) for r in records)
                self._unwritten[:0] = done
            raise
        for segment in done:
            segment.remove()
        return written

    def _write(self, records: list[Record], segment: str) -> int:
        table = build_table(records, self.model_name, self.model_version)
        write_partition(self.root, "predictions", self.model_name, table, tag=segment)
        return table.num_rows

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep serving; the records stay buffered for a retry
                self.last_error = f"{type(exc).__name__}: {exc}"
                print(f"mm prediction log: write failed, will retry: {exc}", file=sys.stderr)

    def close(self) -> None:
        """Stop the thread and write what is left (idempotent). What cannot be written now
        stays in the journal, for the next reader or writer of the log to recover."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception as exc:
            print(f"mm prediction log: final write failed ({exc}); the records stay in the "
                  "journal and are recovered by the next reader", file=sys.stderr)  # fmt: skip
            return
        with self._lock:
            segment = self._segment
            if segment is not None and segment.records == 0:  # nothing since the last flush
                self._segment = None
                segment.remove()
