"""Every benchmark script offers --quick, the mode CI runs (.ci/run runs each one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = sorted((Path(__file__).resolve().parents[2] / "bench").glob("*.py"))


def test_there_are_benches_to_check() -> None:
    assert len(BENCHES) >= 7, [p.name for p in BENCHES]


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.name)
def test_bench_script_offers_quick_mode(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout
