"""Logging a 1000-step learning curve: the platform's batched history vs one log_metric per step.

"Ours" is what `mm train` does with a curve: the run's history goes into a `RunSpec` and
the outage-proof writer (`tracking.durable.Attempt.write_run`) sends the whole run in one
`log_batch`. The peer is one `mlflow.log_metric` call per step in a fluent run. Both write
to the same store: a fresh SQLite store by default, or the server given with
--tracking-uri. Target (issue 2): batched >= 20x faster.
Run: python bench/metric_logging.py [--steps 1000] [--repeats 3] [--tracking-uri URI] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--quick", action="store_true", help="a small run that checks it works")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 200, 1
    tmp = tempfile.mkdtemp(prefix="mm-bench-")
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"

    import mlflow

    from mm_platform import tracking
    from mm_platform.tracking import durable

    experiment_id = tracking.experiment_id_for("bench-logging")
    curve = [1.0 / (step + 1) for step in range(args.steps)]
    batched, per_step = [], []
    for _ in range(args.repeats):
        attempt = durable.Attempt(uuid.uuid4().hex, experiment_id)
        now_ms = int(time.time() * 1000)
        spec = durable.RunSpec(
            part="bench",
            name="batched",
            tags={"mm.run_type": "bench"},
            start_ms=now_ms,
            end_ms=now_ms,
            history={"train_loss": curve},
        )
        start = time.perf_counter()
        attempt.write_run(spec)
        attempt.end_run(spec)
        batched.append(time.perf_counter() - start)
        with mlflow.start_run(experiment_id=experiment_id, run_name="per-step"):
            start = time.perf_counter()
            for step, value in enumerate(curve):
                mlflow.log_metric("train_loss", value, step=step)
            per_step.append(time.perf_counter() - start)
    ours, peer = statistics.median(batched), statistics.median(per_step)
    ratio = peer / ours
    print(f"store: {mlflow.get_tracking_uri()}  steps: {args.steps}  repeats: {args.repeats}")
    print(f"RunSpec history (batched) median {ours * 1000:8.1f} ms")
    print(f"log_metric per step       median {peer * 1000:8.1f} ms")
    if args.quick:  # fixed costs weigh more at 200 steps: the target is for the full run
        print(f"speed-up = {ratio:.1f}x  (quick run; the target >= 20x is for 1000 steps)")
    else:
        print(f"speed-up = {ratio:.1f}x  (target >= 20x: {'PASS' if ratio >= 20 else 'FAIL'})")


if __name__ == "__main__":
    main()
