"""The prediction log and the labels: Parquet datasets partitioned by model and date.

Layout under the log root (a local folder or any pyarrow filesystem URI such as s3://...):

    predictions/model=<name>/date=<YYYY-MM-DD>/part-<time>-<uuid>.parquet
    labels/model=<name>/date=<YYYY-MM-DD>/part-<time>-<uuid>.parquet

Every file is written under a hidden name (".tmp-...", which readers skip) and then moved
into place, so a crash never leaves a half-written file visible.
"""

from __future__ import annotations

import atexit
import os
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


def write_partition(root: str, kind: str, model: str, frame: pd.DataFrame) -> str:
    """Write `frame` as one new file of dataset `kind` for `model`, atomically; return its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, base = _filesystem(root)
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    folder = f"{base}/{kind}/model={model}/date={day}"
    fs.create_dir(folder, recursive=True)
    name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    tmp, final = f"{folder}/.tmp-{name}", f"{folder}/{name}"
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
        # (features, predictions, first request id, UTC time) per request; frames are built
        # by the writer thread, so the request path only takes a reference
        self._buffer: list[tuple[pd.DataFrame, np.ndarray, str, pd.Timestamp]] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="mm-prediction-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def append(self, features: pd.DataFrame, predictions: Any) -> list[str]:
        """Record one request's rows; return a request id per row (`<uuid>-<row>`).

        The caller must not modify `features` afterwards (the scoring server builds a new
        frame per request).
        """
        n = len(features)
        base = uuid.uuid4().hex
        record = (features, np.asarray(predictions), base, pd.Timestamp.now(tz="UTC"))
        with self._lock:
            self._buffer.append(record)
            self._rows += n
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()
        return [f"{base}-{i}" for i in range(n)]

    def flush(self) -> int:
        """Write everything buffered now; return the rows written."""
        with self._lock:
            records, self._buffer, self._rows = self._buffer, [], 0
        if not records:
            return 0
        try:
            return self._write(records)
        except BaseException:
            with self._lock:  # keep them for the next attempt rather than lose them
                self._buffer[:0] = records
                self._rows += sum(len(r[0]) for r in records)
            raise

    def _write(self, records: list[tuple[pd.DataFrame, np.ndarray, str, pd.Timestamp]]) -> int:
        # one concatenation per flush, not per request: this thread shares the GIL with
        # the requests being served
        sizes = [len(features) for features, _, _, _ in records]
        frame = pd.concat([r[0] for r in records], ignore_index=True)
        for column in frame.columns:  # one type per column in every file: ints as floats
            if pd.api.types.is_integer_dtype(frame[column]):
                frame[column] = frame[column].astype("float64")
        meta = pd.DataFrame(
            {
                "request_id": [
                    f"{r[2]}-{i}" for r, n in zip(records, sizes, strict=True) for i in range(n)
                ],
                "timestamp": np.repeat(
                    np.array([r[3].value for r in records], dtype="datetime64[ns]"), sizes
                ),
                "model_name": self.model_name,
                "model_version": self.model_version,
            }
        )
        meta["timestamp"] = meta["timestamp"].dt.tz_localize("UTC")
        frame = pd.concat([meta, frame], axis=1)
        frame["prediction"] = np.concatenate(
            [r[1].reshape(n, -1)[:, 0] for r, n in zip(records, sizes, strict=True)]
        )
        write_partition(self.root, "predictions", self.model_name, frame)
        return len(frame)

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
        """Stop the thread and write what is left (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
