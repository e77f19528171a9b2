"""`mm log status` and `mm log compact` on a real prediction log, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mm_platform.serving.predlog.writer import PredictionLogWriter
from tests.support import SEED_LINEAR, mm, write_project


def good(x: float, rows: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"x": [x] * rows, "site": ["a"] * rows, "prediction": [2 * x] * rows})


def test_mm_log_status_and_compact(tmp_path: Path) -> None:
    project = write_project(tmp_path, SEED_LINEAR)
    root = tmp_path / "prediction_log"
    for i in range(3):
        writer = PredictionLogWriter(str(root), "tiny", "1", flush_seconds=3600)
        writer.append(good(float(i), rows=2))
        writer.close()
    status = mm("log", "status", str(project), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "predictions: 6 rows in 3 files over 1 days" in status.stdout
    assert "dead letters: 0" in status.stdout
    result = mm("log", "compact", str(project), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tiny: 3 files -> 1 (1 days compacted, 6 rows rewritten)" in result.stdout
    assert (
        "predictions: 6 rows in 1 files" in mm("log", "status", str(project), cwd=tmp_path).stdout
    )
    bad = mm("log", "compact", str(project), "--before", "yesterday", cwd=tmp_path)
    assert bad.returncode == 2 and "'yesterday' is not a date" in bad.stderr
