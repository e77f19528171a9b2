"""mm's drift computation against raw Evidently `Report([DataDriftPreset()])`.

Targets (issue 5), 20 numeric and 5 categorical columns, reference and current of equal
size, no sampling, at 1M rows:
- wall time >= 10x less than the peer's;
- peak memory <= 0.5x the peer's;
- every column's drift score equal to the peer's within 1e-9.

Each side runs in its own fresh process on the same seeded data, so each process's peak
resident memory (VmHWM) is its own. "mm" times what `mm drift` does with the data:
the checks, every column's drift and quality summary, and the Evidently HTML report and
snapshot. The peer times `Report([DataDriftPreset()]).run(current, reference)` alone (its
HTML is not rendered). Neither side's time includes importing Evidently or making the data.

Run: python bench/drift.py [--rows 10000 100000 1000000] [--quick]  (--quick: 5,000 rows)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

N_NUMERIC, N_CATEGORICAL = 20, 5


def make_frames(rows: int):
    """Seeded reference and current frames; a third of the columns drift a little."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)

    def frame(shifted: bool) -> pd.DataFrame:
        data = {}
        for i in range(N_NUMERIC):
            shift = 0.3 * (i % 3 == 0) if shifted else 0.0
            if i % 2:
                data[f"num_{i}"] = rng.normal(shift, 1.0, rows)
            else:
                data[f"num_{i}"] = rng.gamma(2.0 + shift, 1.5, rows)
        for j in range(N_CATEGORICAL):
            # one str object per level, as pyarrow's to_pandas gives when reading Parquet
            levels = np.array([f"level_{k}" for k in range(3 + 10 * j)], dtype=object)
            weights = np.linspace(1.0, 2.0 + (0.2 * shifted * (j % 2)), len(levels))
            data[f"cat_{j}"] = rng.choice(levels, rows, p=weights / weights.sum())
        return pd.DataFrame(data)

    return frame(False), frame(True)


def peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries a
    parent's peak into a child across fork and exec, so a fresh process would report at
    least the peak of the process that started it."""
    status = Path("/proc/self/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])


def run_side(side: str, rows: int, out: str) -> None:
    """One measurement in this (fresh) process; writes seconds, memory and scores to `out`."""
    os.environ["DO_NOT_TRACK"] = "1"
    import warnings

    warnings.simplefilter("ignore")
    reference, current = make_frames(rows)
    if side == "mm":
        from mm_platform.monitoring.drift import ColumnSpec, build_report, check_current, compute

        specs = [ColumnSpec(c, "num" if c.startswith("num") else "cat") for c in reference]
        base = peak_rss_kb()
        start = time.perf_counter()
        check_current(current, specs, source="bench")
        result = compute(reference, current, specs)
        snapshot = build_report(result, name="bench")
        html_bytes = len(snapshot.get_html_str(as_iframe=False))
        snapshot.dumps()
        seconds = time.perf_counter() - start
        scores = {c.spec.name: c.score for c in result.columns}
        extra = {"html_bytes": html_bytes}
    else:
        from evidently import Report
        from evidently.presets import DataDriftPreset

        base = peak_rss_kb()
        start = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(current, reference)
        seconds = time.perf_counter() - start
        scores = {
            m["config"]["column"]: m["value"]
            for m in snapshot.dict()["metrics"]
            if m["config"]["type"].endswith(":ValueDrift")
        }
        extra = {}
    peak = peak_rss_kb()
    record = {"seconds": seconds, "peak_kb": peak, "base_kb": base, "scores": scores, **extra}
    Path(out).write_text(json.dumps(record))


def measure(side: str, rows: int, folder: Path) -> dict:
    out = folder / f"{side}-{rows}.json"
    subprocess.run(
        [sys.executable, __file__, "--side", side, "--rows", str(rows), "--out", str(out)],
        check=True,
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--side", choices=["mm", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a small run that checks it works")
    args = parser.parse_args()
    if args.quick:
        args.rows = [5_000]
    if args.side:
        run_side(args.side, args.rows[0], args.out)
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mm-bench-drift-"))
    print(f"{N_NUMERIC} numeric + {N_CATEGORICAL} categorical columns, reference and current "
          f"of equal size; {os.cpu_count()} cores")  # fmt: skip
    print("| rows | peer s | mm s | time ratio | peer peak MB | mm peak MB | memory ratio "
          "| max score diff | drifted (peer / mm) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for rows in args.rows:
        peer = measure("peer", rows, folder)
        ours = measure("mm", rows, folder)
        assert set(peer["scores"]) == set(ours["scores"]), "column sets differ"
        diff = max(abs(peer["scores"][c] - ours["scores"][c]) for c in peer["scores"])
        time_ratio = peer["seconds"] / ours["seconds"]
        memory_ratio = ours["peak_kb"] / peer["peak_kb"]
        print(
            f"| {rows:,} | {peer['seconds']:.1f} | {ours['seconds']:.2f} | {time_ratio:.1f}x "
            f"| {peer['peak_kb'] / 1024:.0f} | {ours['peak_kb'] / 1024:.0f} "
            f"| {memory_ratio:.2f}x | {diff:.1e} | "
            f"{sum(_drifted(peer, c) for c in peer['scores'])} / "
            f"{sum(_drifted(ours, c) for c in ours['scores'])} |"
        )
        if rows >= 1_000_000:
            verdicts.append(
                f"1M rows: time {time_ratio:.1f}x less (target >= 10x: "
                f"{'PASS' if time_ratio >= 10 else 'FAIL'}), memory {memory_ratio:.2f}x "
                f"(target <= 0.5x: {'PASS' if memory_ratio <= 0.5 else 'FAIL'}), "
                f"max score difference {diff:.1e} (target <= 1e-9: "
                f"{'PASS' if diff <= 1e-9 else 'FAIL'})"
            )
    print("\n".join(verdicts))


def _drifted(side: dict, column: str) -> int:
    # wasserstein and Jensen-Shannon (the tests chosen above 1000 rows): drift at >= 0.1
    return int(side["scores"][column] >= 0.1)


if __name__ == "__main__":
    main()
