"""Logging a 1000-step learning curve: the platform's batched history vs one log_metric per step.

Both write to the same store in the same run: a fresh SQLite store by default, or the
server given with --tracking-uri. Target (issue 2): batched >= 20x faster.
Run: python bench/metric_logging.py [--steps 1000] [--repeats 3] [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="mm-bench-")
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"

    import mlflow

    from mm_platform import tracking

    curve = [1.0 / (step + 1) for step in range(args.steps)]
    batched, per_step = [], []
    for _ in range(args.repeats):
        with tracking.tracked_run("bench", "bench-logging", "batched"):
            start = time.perf_counter()
            tracking.log_history({"train_loss": curve})
            batched.append(time.perf_counter() - start)
        with tracking.tracked_run("bench", "bench-logging", "per-step"):
            start = time.perf_counter()
            for step, value in enumerate(curve):
                mlflow.log_metric("train_loss", value, step=step)
            per_step.append(time.perf_counter() - start)
    ours, peer = statistics.median(batched), statistics.median(per_step)
    ratio = peer / ours
    print(f"store: {mlflow.get_tracking_uri()}  steps: {args.steps}  repeats: {args.repeats}")
    print(f"log_history (batched)     median {ours * 1000:8.1f} ms")
    print(f"log_metric per step       median {peer * 1000:8.1f} ms")
    print(f"speed-up = {ratio:.1f}x  (target >= 20x: {'PASS' if ratio >= 20 else 'FAIL'})")


if __name__ == "__main__":
    main()
