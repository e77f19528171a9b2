"""`mm --help` wall time against `mlflow --help`, measured in the same run.

Target (issue 2): mm --help <= 0.25x mlflow --help.
Run: python bench/cli_startup.py [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall_times(command: list[str], repeats: int) -> list[float]:
    """Seconds per run of `command` (one untimed warm-up run first, for the file cache)."""
    subprocess.run(command, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a small run that checks it works")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    bin_dir = Path(sys.executable).parent
    mm = shutil.which("mm", path=str(bin_dir)) or "mm"
    mlflow = shutil.which("mlflow", path=str(bin_dir)) or "mlflow"
    ours = statistics.median(wall_times([mm, "--help"], args.repeats))
    peer = statistics.median(wall_times([mlflow, "--help"], args.repeats))
    ratio = ours / peer
    print(f"mm --help      median {ours * 1000:7.0f} ms  ({args.repeats} runs)")
    print(f"mlflow --help  median {peer * 1000:7.0f} ms  ({args.repeats} runs)")
    print(f"ratio mm/mlflow = {ratio:.3f}  (target <= 0.25: {'PASS' if ratio <= 0.25 else 'FAIL'})")


if __name__ == "__main__":
    main()
