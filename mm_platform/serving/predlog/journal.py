"""The write-ahead journal of the prediction log: data, never code.

Every acknowledged request is in the journal before its answer leaves: one record appended
to the writer's current segment file (the kernel keeps it if the process dies, SIGKILL
included). A record is

    b"MMJ2" | payload length (uint32 LE) | CRC32 of length and payload | payload

where the payload is the request's Arrow table as an Arrow IPC stream. Reading one decodes
Arrow buffers and nothing else: no pickle, no code. The CRC finds a damaged record, and the
marker lets a reader find the next intact one after it.

Segments are named `<writer>-<seq>.j2.v<model version>.journal`. A flush starts a new
segment, writes the old ones' requests as Parquet files tagged `<writer>-<seq>` (the
newest segment flushed), then deletes those segments. A segment whose writer is dead (its
flock is free) is recovered by `recover`, which a new writer runs on start and the
commands that read the log (drift, labels) run before reading (reading alone never does): its
requests not already in a file of that writer tagged with its number or a later one are
written, then it is deleted. A segment of another format (such as the pickled `j1`) is
never decoded: it is renamed `.corrupt` with one warning; damaged records of a `j2`
segment, and records that are not a request (whose first fields are not `request_id:
string` and `timestamp: timestamp[ns, tz=UTC]`), are kept, byte for byte, in
`<segment>.corrupt`. A segment whose recovery fails for any other reason than an I/O error
is renamed `.corrupt` too, and the others are still recovered. Local log roots only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import LocalFileSystem

from mm_platform.serving.predlog.deadletter import write_dead_letter
from mm_platform.serving.predlog.records import TIMESTAMP
from mm_platform.serving.predlog.store import is_damage, model_folder, set_aside, write_requests

log = logging.getLogger(__name__)

JOURNAL = "_journal"
FORMAT = "j2"  # in every segment's name: another format is never read as this one
MARKER = b"MMJ2"
_HEADER = struct.Struct("<4sII")  # marker, payload length, crc32(length + payload)
_SEGMENT_NAME = re.compile(
    r"^(?P<writer>[\w]+)-(?P<seq>\d+)\.(?P<fmt>\w+)\.v(?P<version>.+)\.journal$"
)
_IPC_OPTIONS = pa.ipc.IpcWriteOptions()  # given, so writing one reads no environment
_OWN_NAMES = ["request_id", "timestamp"]  # the first fields of every request record
_OWN_TYPES = [pa.string(), TIMESTAMP]
_TAGGED_FILE = re.compile(r"^part-\d+-(?P<writer>\w+)-(?P<seq>\d+)\.parquet$")


def encode_record(table: pa.Table) -> Record:
    """One journal record holding `table`: its header and its payload (not copied)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as stream:
        stream.write_table(table)
    payload = sink.getvalue()
    size = payload.size
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<I", size)))
    return Record(_HEADER.pack(MARKER, size, crc), payload)


class Record(NamedTuple):
    header: bytes
    payload: Any  # bytes or a pyarrow Buffer

    @property
    def nbytes(self) -> int:
        return len(self.header) + memoryview(self.payload).nbytes

    def __bytes__(self) -> bytes:
        return self.header + memoryview(self.payload).tobytes()


def decode_records(data: bytes) -> tuple[list[pa.Table], bytes]:
    """The intact records of a segment's bytes, and the bytes of the damaged ones."""
    tables, damaged, offset = [], bytearray(), 0
    while offset < len(data):
        table, end = _record_at(data, offset)
        if table is None:  # damaged here: skip to the next marker that starts an intact record
            following = data.find(MARKER, offset + 1)
            end = len(data) if following < 0 else following
            damaged += data[offset:end]
        elif table.num_rows:
            tables.append(table)
        offset = end
    return tables, bytes(damaged)


def _record_at(data: bytes, offset: int) -> tuple[pa.Table | None, int]:
    if offset + _HEADER.size > len(data):
        return None, len(data)
    marker, length, crc = _HEADER.unpack_from(data, offset)
    start, end = offset + _HEADER.size, offset + _HEADER.size + length
    if marker != MARKER or end > len(data):
        return None, end
    payload = data[start:end]
    if zlib.crc32(payload, zlib.crc32(struct.pack("<I", length))) != crc:
        return None, end
    if not payload:
        return pa.table({}), end  # a health probe: no request
    try:
        table = pa.ipc.open_stream(payload).read_all()
        table.validate(full=True)  # a crafted stream can pass the CRC: check every buffer
    except (pa.ArrowException, OSError):
        return None, end
    if any(isinstance(f.type, pa.ExtensionType) for f in table.schema):
        return None, end  # plain data only: an extension type could name code to run
    if table.schema.types[:2] != _OWN_TYPES or table.schema.names[:2] != _OWN_NAMES:
        return None, end  # not a request record: recovery relies on these two first
    return table, end


PROBE = Record(_HEADER.pack(MARKER, 0, zlib.crc32(b"", zlib.crc32(struct.pack("<I", 0)))), b"")


class Segment:
    """One open, locked journal file of a writer; see the module docstring."""

    def __init__(self, folder: Path, writer: str, seq: int, version: str) -> None:
        self.name = f"{writer}-{seq:08d}"
        self.path = folder / f"{self.name}.{FORMAT}.v{version}.journal"
        hidden = folder / f".tmp-{self.path.name}"
        self.fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # held while this writer lives
            os.rename(hidden, self.path)  # visible to recovery only once locked
        except OSError:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                hidden.unlink()
            raise
        self.records = 0
        self.size = 0

    def append(self, record: Record) -> None:
        """Write one record whole, or raise OSError leaving the file as it was."""
        total = record.nbytes
        try:
            written = os.writev(self.fd, (record.header, record.payload))
            if written < total:  # a short write is continued, not dropped
                rest = memoryview(bytes(record))[written:]
                while rest:
                    rest = rest[os.write(self.fd, rest) :]
        except OSError:
            self._cut_back()
            raise
        self.size += total
        if record is not PROBE:
            self.records += 1

    def reserve(self, nbytes: int) -> None:
        """Check that `nbytes` more fit: allocate them after the end, then give them back.
        Raises OSError when they do not. Where the filesystem cannot allocate ahead, a
        probe record is appended instead (a weaker check: it needs one block at most)."""
        try:
            os.posix_fallocate(self.fd, self.size, max(nbytes, 1))
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF):
                raise
            self.append(PROBE)
            return
        finally:
            self._cut_back()

    def _cut_back(self) -> None:
        """Remove a partial record (recovery would set its bytes aside if this fails)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.size)

    def close(self) -> None:
        """Close without deleting: the records stay for recovery. Once: a second close
        must not close whatever file has since been given the same descriptor number."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.close()


def journal_folder(root: str, model: str) -> Path | None:
    return None if "://" in root else Path(root) / JOURNAL / f"model={model}"


def open_segments(root: str, model: str) -> dict[str, int]:
    """writer -> the lowest segment number it still has in the journal."""
    folder = journal_folder(root, model)
    lowest: dict[str, int] = {}
    if folder is None or not folder.is_dir():
        return lowest
    for path in folder.glob("*.journal"):
        match = _SEGMENT_NAME.match(path.name)
        if match:
            writer, seq = match["writer"], int(match["seq"])
            lowest[writer] = min(seq, lowest.get(writer, seq))
    return lowest


def flush_tag(name: str) -> tuple[str, int] | None:
    """(writer, segment number) of a file written by a flush or a recovery, else None."""
    match = _TAGGED_FILE.match(name)
    return (match["writer"], int(match["seq"])) if match else None


def recover(root: str, model: str) -> int:
    """Write the journalled requests of dead writers of `model` into the log; return rows.

    This writes: it is how acknowledged requests of a killed server join the log. A segment
    that is damaged or of another format is set aside with one warning; the others, and
    the intact records of a damaged one, are still recovered.
    """
    folder = journal_folder(root, model)
    if folder is None or not folder.is_dir():
        return 0
    written = 0
    for path in sorted(folder.glob("*.journal")):
        if path.name.startswith("."):
            continue
        try:
            written += _recover_segment(root, model, path)
        except OSError as exc:  # e.g. a read-only reader: a writer will recover it later
            log.warning("prediction log: cannot recover %s now: %s", path, exc)
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
        match = _SEGMENT_NAME.match(path.name)
        if match is None or match["fmt"] != FORMAT:
            found = match["fmt"] if match else "unknown"
            aside = path.with_name(path.name + ".corrupt")
            path.rename(aside)
            log.warning(
                "prediction log: journal segment %s has format %s, this mm reads %s; "
                "not read, renamed %s",
                path,
                found,
                FORMAT,
                aside.name,
            )
            return 0
        try:
            rows = _replay(root, model, path, match)
        except OSError:
            raise  # the system's, not the segment's: a later recovery retries it
        except Exception as exc:  # anything else about this segment must not block the rest
            _set_aside_segment(path, f"{type(exc).__name__}: {exc}")
            return 0
        path.unlink()
        return rows
    finally:
        os.close(fd)


def _set_aside_segment(path: Path, reason: str) -> None:
    aside = path.with_name(path.name + ".corrupt")
    path.rename(aside)
    log.warning(
        "prediction log: journal segment %s cannot be recovered (%s); renamed %s",
        path,
        reason,
        aside.name,
    )


def _replay(root: str, model: str, path: Path, match: re.Match[str]) -> int:
    """Write the segment's records not yet in the log; keep its damaged bytes aside."""
    tables, damaged = decode_records(path.read_bytes())
    writer, seq = match["writer"], int(match["seq"])
    done = _ids_flushed_since(root, model, writer, seq)
    if done:
        tables = [t for t in tables if t.column("request_id")[0].as_py() not in done]
    rows = 0
    name = f"{writer}-{seq:08d}"
    for part, exc in write_requests(root, model, match["version"], tables, tag=name):
        if isinstance(exc, OSError):
            raise exc  # the segment stays; a later recovery skips what is written already
        if exc is None:
            rows += part.num_rows
            continue
        ids = part.column("request_id").to_pylist()  # one request Parquet refuses
        write_dead_letter(root, model, f"recovered-{name}", str(exc), part, ids)
        log.warning(
            "prediction log: a recovered request of %s cannot be written (%s); "
            "kept as a dead letter",
            path.name,
            exc,
        )
    if damaged:
        aside = path.with_name(path.name + ".corrupt")
        aside.write_bytes(damaged)
        log.warning(
            "prediction log: journal segment %s has %d damaged bytes, set aside in %s; "
            "%d intact records recovered",
            path,
            len(damaged),
            aside.name,
            len(tables),
        )
    return rows


def _ids_flushed_since(root: str, model: str, writer: str, seq: int) -> set[str]:
    """Request ids in files that `writer` flushed with segment `seq` or a later one.

    Compaction leaves these files alone while any segment up to theirs is in the journal,
    so they are found by name. A damaged one is set aside and its ids are not counted: the
    segment still holds them, so they are written again, once.
    """
    base = str(Path(root))
    folder = Path(model_folder(base, "predictions", model))
    ids: set[str] = set()
    for path in folder.glob(f"date=*/part-*-{writer}-*.parquet"):
        tag = flush_tag(path.name)
        if tag is not None and tag[0] == writer and tag[1] >= seq:
            try:
                ids.update(pq.read_table(path, columns=["request_id"]).column(0).to_pylist())
            except (pa.ArrowException, OSError) as exc:
                if not is_damage(exc):
                    raise
                set_aside(LocalFileSystem(), base, str(path), f"{type(exc).__name__}: {exc}")
    return ids
