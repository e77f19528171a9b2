"""Dead letters: records the log cannot store, kept as JSON lines with the reason.

`_dead_letter/model=<name>/<writer>.jsonl` under the log root, one line per refused
request: when, why, its request ids and its data as far as JSON can say it (values JSON
cannot hold are written as their repr). They are counted, never silently dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from mm_platform.serving.predlog.records import frame_for_humans

DEAD_LETTER = "_dead_letter"


def dead_letter_folder(root: str, model: str) -> Path:
    return Path(root) / DEAD_LETTER / f"model={model}"


def write_dead_letter(
    root: str, model: str, source: str, reason: str, data: object, request_ids: list[str]
) -> Path:
    """Append one refused record to `source`'s dead-letter file (made durable like the
    journal: written before the caller goes on); return the file. Raises OSError."""
    folder = dead_letter_folder(root, model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{source}.jsonl"
    line = json.dumps(
        {
            "time_ns": time.time_ns(),
            "reason": reason,
            "request_ids": list(request_ids),
            "data": frame_for_humans(data),
        },
        default=repr,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        rest = memoryview((line + "\n").encode())
        try:
            while rest:
                rest = rest[os.write(fd, rest) :]
        except OSError:
            with contextlib.suppress(OSError):  # no half line left behind
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    return path


def count_dead_letters(root: str, model: str) -> int:
    """How many records of `model` are in dead-letter files (local roots)."""
    folder = dead_letter_folder(root, model)
    if "://" in root or not folder.is_dir():
        return 0
    total = 0
    for path in folder.glob("*.jsonl"):
        with path.open("rb") as lines:
            total += sum(1 for _ in lines)
    return total
