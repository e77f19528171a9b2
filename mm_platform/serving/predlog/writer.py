"""The prediction log's writer: what the served model appends to.

Four rules (ARCHITECTURE.md): a record is what the model saw; acknowledged means durable,
or `append` raises `LogUnavailable` (the server answers 503); one bad record never blocks
another (it becomes a counted dead letter); reading runs no code, and damaged parts are
set aside loudly. The files are described in `store`, reading them in `reader`, the
journal (and the recovery of killed writers' journals) in `journal`, compaction in
`maintenance`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from typing import Any

import pandas as pd
import pyarrow as pa

from mm_platform.serving.predlog.deadletter import write_dead_letter
from mm_platform.serving.predlog.journal import (
    Record,
    Segment,
    encode_record,
    journal_folder,
    recover,
)
from mm_platform.serving.predlog.maintenance import compact
from mm_platform.serving.predlog.records import (
    META,
    RecordError,
    record_table,
    request_ids,
)
from mm_platform.serving.predlog.store import (
    log_root,
    write_partition,
    write_requests,
    write_table,
)

__all__ = [
    "META",
    "LogUnavailable",
    "PredictionLogWriter",
    "compact",
    "log_root",
    "recover",
    "write_partition",
]

log = logging.getLogger(__name__)

_HEAL_MARGIN = 64 * 2**10  # bytes free beyond twice the refused record, to call it healed


class LogUnavailable(Exception):
    """The prediction log cannot make a record durable now; the request was not logged."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"prediction log not durable: {reason}; the request was not logged")
        self.reason = reason


class PredictionLogWriter:
    """Journals each request before `append` returns and writes Parquet in the background.

    A thread writes a file every `flush_seconds` (or sooner when `max_rows` are waiting).
    At most `max_buffered_bytes` wait in memory; beyond that, or when the journal cannot
    be written, `append` raises `LogUnavailable` and `healthy` is False until the writer
    recovers by itself. `close` (also run at interpreter exit) writes what is left.
    """

    def __init__(
        self,
        root: str,
        model_name: str,
        model_version: str,
        *,
        flush_seconds: float = 0.2,
        max_rows: int = 50_000,
        max_buffered_bytes: int = 256 * 2**20,
    ) -> None:
        self.root = root
        self.model_name = model_name
        self.model_version = str(model_version)
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self.max_buffered_bytes = max_buffered_bytes
        self._closed = False
        self._start()
        atexit.register(self.close)
        # a forked child (a server forking workers after loading the model) gets its own
        # buffer, journal and thread; the parent's stay the parent's
        os.register_at_fork(after_in_child=self._restart_in_child)

    def _start(self) -> None:
        self._buffer: list[pa.Table] = []  # one table per request, not yet in Parquet
        self._rows = self._bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._writer = f"w{os.getpid()}x{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._segment: Segment | None = None
        self._unwritten: list[Segment] = []  # older segments whose records are buffered
        self._journal_error: str | None = None
        self._journal_needs = 0  # bytes of the largest record the failing journal refused
        self._write_error: str | None = None
        self._dead_letters = 0
        self._dead_logged = 0.0
        self._backlog_full = False
        self._folder = journal_folder(self.root, self.model_name)
        if self._folder is not None and not self._closed:
            try:
                self._folder.mkdir(parents=True, exist_ok=True)
                recover(self.root, self.model_name)
            except OSError as exc:
                log.warning("prediction log: cannot recover old journals now: %s", exc)
            self._open_segment()
        self._thread = threading.Thread(target=self._run, name="mm-prediction-log", daemon=True)
        self._thread.start()

    def _restart_in_child(self) -> None:
        for segment in [self._segment, *self._unwritten]:
            if segment is not None:  # the child's copies only: the parent keeps its locks
                segment.close()
        self._start()

    def _open_segment(self) -> None:
        """Start a new journal segment; on failure the writer refuses records until the
        flush thread manages to open one."""
        assert self._folder is not None
        try:
            self._seq += 1
            self._folder.mkdir(parents=True, exist_ok=True)
            self._segment = Segment(self._folder, self._writer, self._seq, self.model_version)
        except OSError as exc:
            self._segment = None
            self._journal_failed(f"cannot open a journal segment in {self._folder}: {exc}")
        # an empty file is no proof that records fit again: _heal_journal decides that

    # --- the request path -------------------------------------------------------------------

    def append(self, frame: pd.DataFrame) -> list[str]:
        """Record one request (every column to log, `prediction` included); return a request
        id per row (`<uuid>-<row>`). Raises LogUnavailable when it cannot be made durable.

        The caller must not modify `frame` afterwards.
        """
        n = len(frame)
        ids, id_array = request_ids(uuid.uuid4().hex, n)
        try:
            table = record_table(frame, id_array, time.time_ns())
        except RecordError as exc:
            self._dead_letter(str(exc), frame, ids)
            return ids.copy()
        record = encode_record(table) if self._folder is not None else None
        size = record.nbytes if record else table.get_total_buffer_size()  # about its memory
        with self._lock:
            self._admit(size)
            if record is not None:
                self._journal(record)
            self._buffer.append(table)
            self._rows += n
            self._bytes += size
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()
        return ids.copy()  # the buffer keeps its own: callers may extend what they get

    def _admit(self, size: int) -> None:
        """Raise LogUnavailable when a record of `size` bytes cannot be taken now (lock held)."""
        if self._folder is not None and self._segment is None:
            raise LogUnavailable(self._journal_error or "the writer is closed")
        if self._bytes and self._bytes + size > self.max_buffered_bytes:
            self._backlog_full = True  # until a flush succeeds
            raise LogUnavailable(self._backlog())

    def _backlog(self) -> str:
        return (
            f"{self._rows} rows ({self._bytes / 2**20:.0f} MB) are waiting to be written "
            f"to Parquet, the limit; last write error: {self._write_error}"
        )

    def _journal(self, record: Record) -> None:
        """Append to the current segment, or raise LogUnavailable leaving nothing of it."""
        assert self._segment is not None
        try:
            self._segment.append(record)
        except OSError as exc:
            reason = f"journal write to {self._segment.path} failed: {exc}"
            self._journal_failed(reason, record.nbytes)
            raise LogUnavailable(self._journal_error or str(exc)) from exc
        if self._journal_error is not None:
            self._journal_ok()

    def _journal_failed(self, reason: str, needed: int = 0) -> None:
        """Refuse records until the journal has room for `needed` bytes again (lock held)."""
        if self._journal_error is None:
            log.warning("prediction log: %s; refusing requests (503) until it works again", reason)
        self._journal_error = reason
        self._journal_needs = max(self._journal_needs, needed)

    def _journal_ok(self) -> None:
        if self._journal_error is not None:
            log.warning("prediction log: the journal works again; accepting requests")
        self._journal_error = None
        self._journal_needs = 0

    def _dead_letter(self, reason: str, data: Any, ids: list[str]) -> None:
        try:
            path = write_dead_letter(self.root, self.model_name, self._writer, reason, data, ids)
        except OSError as exc:
            raise LogUnavailable(f"cannot write a dead letter ({exc}) for: {reason}") from exc
        with self._lock:
            self._dead_letters += 1
            count, quiet = self._dead_letters, time.monotonic() - self._dead_logged < 10
            self._dead_logged = self._dead_logged if quiet else time.monotonic()
        if not quiet:
            log.warning(
                "prediction log: a record cannot be stored (%s); kept in %s "
                "(%d dead letters so far)",
                reason,
                path,
                count,
            )

    # --- state ------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether `append` can accept records now."""
        return self.status()["healthy"]

    def status(self) -> dict[str, Any]:
        """healthy, reason (why not), dead_letters, buffered_rows, buffered_bytes, write_error."""
        with self._lock:
            reason = None
            if self._folder is not None and self._segment is None:
                reason = self._journal_error or "the writer is closed"
            elif self._journal_error is not None:
                reason = self._journal_error
            elif self._backlog_full:
                reason = self._backlog()
            return {
                "healthy": reason is None,
                "reason": reason,
                "dead_letters": self._dead_letters,
                "buffered_rows": self._rows,
                "buffered_bytes": self._bytes,
                "write_error": self._write_error,
            }

    # --- the flush thread -------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything buffered now; return the rows written. Raises OSError when some
        could not be written: those stay buffered (and journalled) for the next attempt."""
        with self._lock:
            records, self._buffer, self._rows, self._bytes = self._buffer, [], 0, 0
            if not records:
                return 0
            done, self._unwritten = self._unwritten, []
            current = self._segment
            if not done and current is not None and current.records:
                done = [current]  # the usual case: rotate, so this segment can go once written
                self._open_segment()
            # else a retry: no new segment per attempt; the current one may hold some of the
            # records, so the files are tagged with it (recovery skips ids found in them)
            newest = current if current is not None and current not in done else None
            newest = newest or (done[-1] if done else None)
        written, kept, error = self._write(records, newest.name if newest else "")
        if error is not None:
            with self._lock:  # keep them for the next attempt rather than lose them
                self._buffer[:0] = kept
                self._rows += sum(t.num_rows for t in kept)
                self._bytes += sum(t.get_total_buffer_size() for t in kept)
                self._unwritten[:0] = done
            raise error
        self._backlog_full = False
        for segment in done:
            segment.remove()
        return written

    def _write(
        self, records: list[pa.Table], tag: str
    ) -> tuple[int, list[pa.Table], OSError | None]:
        """Write the records, one file per schema (and day); dead-letter what Parquet
        refuses. Returns rows written, the records to retry, and the error to retry for."""
        written, kept, error = 0, [], None
        # write_table as this module names it: the crash tests replace it with a failing one
        parts = write_requests(
            self.root, self.model_name, self.model_version, records, tag=tag, write=write_table
        )
        for part, exc in parts:
            if exc is None:
                written += part.num_rows
                continue
            if not isinstance(exc, OSError):  # Parquet refuses this one request: dead letter
                ids = part.column("request_id").to_pylist()
                try:
                    self._dead_letter(f"cannot write Parquet: {exc}", part, ids)
                    continue
                except LogUnavailable as unavailable:
                    exc = OSError(str(unavailable))
            kept.append(part.drop_columns(["model_name", "model_version"]))
            error = exc
        return written, kept, error

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._heal_journal()
            try:
                self.flush()
            except Exception as exc:  # keep serving; the records stay buffered for a retry
                if self._write_error is None:
                    log.warning(
                        "prediction log: writing Parquet failed, retrying every %gs: %s",
                        self.flush_seconds,
                        exc,
                    )
                self._write_error = f"{type(exc).__name__}: {exc}"
                continue
            if self._write_error is not None:
                log.warning("prediction log: writing Parquet works again")
                self._write_error = None

    def _heal_journal(self) -> None:
        """Reopen a failed journal and check it has room again for the record it refused,
        so the writer recovers without traffic (and says healthy only when it has)."""
        with self._lock:
            if self._folder is None or self._closed or self._journal_error is None:
                return
            if self._segment is None:
                self._open_segment()
            if self._segment is not None and self._has_room(self._journal_needs):
                self._journal_ok()

    def _has_room(self, nbytes: int) -> bool:
        """Whether a record of `nbytes` fits in the journal now, with a margin: a file's
        last block takes a small probe on a full disk, so free space is asked for, and
        then allocated for real (and given back)."""
        assert self._folder is not None and self._segment is not None
        try:
            disk = os.statvfs(self._folder)
            if disk.f_bavail * disk.f_frsize < 2 * nbytes + _HEAL_MARGIN:
                return False
            self._segment.reserve(nbytes)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Stop the thread and write what is left (idempotent). What cannot be written now
        stays in the journal, for the next writer or reading command to recover."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception as exc:
            self._release_journal(f"final write failed ({exc})")
            return
        with self._lock:
            segment, self._segment = self._segment, None
        if segment is not None and segment.records == 0:  # nothing since the last flush
            segment.remove()
        elif segment is not None:
            self._release_journal("records arrived during close")
            segment.close()

    def _release_journal(self, why: str) -> None:
        with self._lock:
            segments = [*self._unwritten, *([self._segment] if self._segment else [])]
            rows, self._unwritten, self._segment = self._rows, [], None
        for segment in segments:
            segment.close()  # unlocked, not deleted: recovery writes them
        where = (
            f"stay in the journal {self._folder} and are recovered by the next writer of this "
            "log or command that reads it"
            if self._folder
            else "are lost (a remote log has no journal)"
        )
        log.warning("prediction log: %s; %d buffered rows %s", why, rows, where)
