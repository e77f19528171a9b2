"""The prediction log's storage: window reads against log size, compaction, append cost.

Targets (issue 11):
- reading the same 1-day window takes at most 1.2x as long (and as much memory) from a
  log of 365 days as from a log of 1 day (24 files of 100 rows a day: 8,760 files for
  365 days, the issue's case);
- compaction turns a day's many small files into one; a real day at 5 flushes a second is
  432,000 files, too many to make here, so a scaled day is measured: one hour of 5
  flushes a second (18,000 files of 10 rows);
- `append` stays far under the served request's ~9 ms: < 0.3 ms for a 1-row request,
  < 1 ms for 1,000 rows x 10 columns.

Each window read runs in its own fresh process, so its peak resident memory (VmHWM)
is its own; "extra MB" is the peak above the same process after its imports.

Run: python bench/predlog.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

N_FEATURES = 10
DAY_NS = 86_400 * 10**9


def make_table(rows: int, start_ns: int, span_ns: int, seed: int):
    """A flush's worth of rows with META columns, 10 features and a prediction."""
    import numpy as np
    import pyarrow as pa

    from mm_platform.serving.predlog.records import TIMESTAMP

    rng = np.random.default_rng(seed)
    stamps = np.sort(start_ns + rng.integers(0, span_ns, rows))
    columns = {
        "request_id": pa.array([f"{seed:x}-{i}" for i in range(rows)]),
        "timestamp": pa.array(stamps, TIMESTAMP),
        "model_name": pa.array(["bench"] * rows),
        "model_version": pa.array(["1"] * rows),
    }
    for j in range(N_FEATURES):
        columns[f"f{j}"] = pa.array(rng.normal(size=rows))
    columns["prediction"] = pa.array(rng.normal(size=rows))
    return pa.table(columns)


def build_log(root: str, days: int, files_per_day: int, rows: int, last_day_ns: int) -> None:
    """`days` days of log ending with the day starting at `last_day_ns`."""
    from mm_platform.serving.predlog.store import write_table

    seed = 0
    for d in range(days):
        start = last_day_ns - (days - 1 - d) * DAY_NS
        day = time.strftime("%Y-%m-%d", time.gmtime(start // 10**9))
        for f in range(files_per_day):
            seed += 1
            span = DAY_NS // files_per_day
            table = make_table(rows, start + f * span, span, seed)
            write_table(root, "predictions", "bench", table, day=day, tag=f"b{seed}")


def peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries a
    parent's peak into a child across fork and exec, so a fresh process would report at
    least the peak of the process that started it."""
    with open("/proc/self/status") as status_file:
        status = status_file.read()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])


def child_read(root: str, start_ns: int) -> None:
    """One window read in this fresh process; prints seconds, rows and memory as JSON."""
    import pandas as pd

    from mm_platform.serving.predlog.reader import read_window

    start = pd.Timestamp(start_ns, tz="UTC")
    base = peak_rss_kb()
    began = time.perf_counter()
    frame = read_window(root, "predictions", "bench", start=start, end=start + pd.Timedelta(days=1))
    seconds = time.perf_counter() - began
    peak = peak_rss_kb()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": len(frame),
                "peak_mb": peak / 1024,
                "extra_mb": (peak - base) / 1024,
            }
        )
    )


def read_once(root: str, start_ns: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child-read", root, str(start_ns)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_windows(sizes: list[int], files_per_day: int, rows: int, repeats: int) -> bool:
    """Every log is built first, then the reads take turns (1, 30, 365, 1, 30, ...), so
    that a change in the machine's load falls on every size alike."""
    last_day = (time.time_ns() // DAY_NS - 1) * DAY_NS  # yesterday, a whole day
    print(
        f"\n1-day window read, {files_per_day} files x {rows} rows a day "
        f"(fresh process per read; median and best of {repeats}, sizes taking turns)"
    )
    runs: dict[int, list[dict]] = {days: [] for days in sizes}
    with tempfile.TemporaryDirectory(prefix="mm-bench-log-") as tmp:
        roots = {days: f"{tmp}/{days}" for days in sizes}
        for days in sizes:
            build_log(roots[days], days, files_per_day, rows, last_day)
        for _ in range(repeats):
            for days in sizes:
                runs[days].append(read_once(roots[days], last_day))
    print(
        f"{'log days':>9} {'files':>7} {'rows read':>10} {'median s':>9} {'best s':>8} "
        f"{'peak MB':>8} {'extra MB':>9}"
    )
    summary = {}
    for days in sizes:
        seconds = [r["seconds"] for r in runs[days]]
        peak = statistics.median(r["peak_mb"] for r in runs[days])
        extra = statistics.median(r["extra_mb"] for r in runs[days])
        summary[days] = (statistics.median(seconds), peak)
        print(
            f"{days:>9} {days * files_per_day:>7} {runs[days][0]['rows']:>10,} "
            f"{statistics.median(seconds):>9.3f} {min(seconds):>8.3f} {peak:>8.0f} "
            f"{extra:>9.1f}"
        )
    (base_s, base_mb), ok = summary[sizes[0]], True
    for days in sizes[1:]:
        time_ratio, mem_ratio = summary[days][0] / base_s, summary[days][1] / base_mb
        ok &= time_ratio <= 1.2 and mem_ratio <= 1.2
        print(
            f"{days} days vs {sizes[0]}: time {time_ratio:.2f}x, peak memory {mem_ratio:.2f}x "
            "(target <= 1.2x)"
        )
    return ok


def bench_compaction(files: int, rows: int) -> bool:
    from mm_platform.serving.predlog.reader import read_window
    from mm_platform.serving.predlog.writer import compact

    print(
        f"\ncompaction of a scaled day: {files:,} files of {rows} rows "
        f"({files / 5 / 3600:.2f} h at 5 flushes/s; a real day would be 432,000 files)"
    )
    with tempfile.TemporaryDirectory(prefix="mm-bench-compact-") as tmp:
        today = time.time_ns() // DAY_NS * DAY_NS
        day = time.strftime("%Y-%m-%d", time.gmtime(today // 10**9))
        from mm_platform.serving.predlog.store import write_table

        began = time.perf_counter()
        for i in range(files):
            table = make_table(rows, today + i * 10**8, 10**8, i + 1)
            write_table(tmp, "predictions", "bench", table, day=day, tag=f"b{i}")
        made = time.perf_counter() - began
        began = time.perf_counter()
        before_rows = len(read_window(tmp, "predictions", "bench"))
        read_before = time.perf_counter() - began
        began = time.perf_counter()
        result = compact(tmp, "bench")
        seconds = time.perf_counter() - began
        began = time.perf_counter()
        after_rows = len(read_window(tmp, "predictions", "bench"))
        read_after = time.perf_counter() - began
    print(
        f"files {result.files_before:,} -> {result.files_after:,} in {seconds:.1f} s "
        f"({result.rows:,} rows; making them took {made:.1f} s)"
    )
    print(
        f"reading the day: {read_before:.2f} s before, {read_after:.2f} s after "
        f"({read_before / read_after:.0f}x faster); rows {before_rows:,} -> {after_rows:,}"
    )
    return result.files_after == 1 and before_rows == after_rows == files * rows


def bench_append(number: int) -> bool:
    import numpy as np
    import pandas as pd

    from mm_platform.serving.predlog.writer import PredictionLogWriter

    rng = np.random.default_rng(0)
    print(f"\nappend (journal on the local disk; median of 5 runs of {number} calls)")
    ok = True
    with tempfile.TemporaryDirectory(prefix="mm-bench-append-") as tmp:
        writer = PredictionLogWriter(tmp, "bench", "1")
        for rows, target_ms in ((1, 0.3), (1000, 1.0)):
            data = {f"f{j}": rng.normal(size=rows) for j in range(N_FEATURES - 1)}
            frame = pd.DataFrame(
                {**data, "site": ["a"] * rows, "prediction": rng.normal(size=rows)}
            )
            runs = timeit.repeat(lambda f=frame: writer.append(f), number=number, repeat=5)
            ms = statistics.median(runs) / number * 1000
            ok &= ms < target_ms
            print(
                f"{rows:>5} rows x {frame.shape[1]} columns: {ms:.3f} ms per append "
                f"(target < {target_ms} ms)"
            )
        writer.close()
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A small, fast run.")
    parser.add_argument(
        "--child-read", nargs=2, metavar=("ROOT", "START_NS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child_read:
        child_read(args.child_read[0], int(args.child_read[1]))
        return
    if args.quick:
        ok = bench_windows([1, 30], 24, 100, repeats=3)
        ok &= bench_compaction(900, 10)
        ok &= bench_append(200)
    else:
        ok = bench_windows([1, 30, 365], 24, 100, repeats=9)
        ok &= bench_compaction(18_000, 10)
        ok &= bench_append(1000)
    print(f"\nall targets: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
