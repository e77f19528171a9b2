"""Monitored serving against plain `mlflow models serve`, and the log across a restart.

Targets (issue 4):
- p50 latency of the monitored model <= 1.10x the same registered version served without
  logging, for 1-row and 1000-row requests (requests alternate between the two servers);
- 10,000 requests across a graceful restart: 0 records missing from the prediction log.

Run: python bench/serving.py [--requests 800]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800, help="1-row requests per server")
    parser.add_argument("--restart-requests", type=int, default=10_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="mm-bench-serve-"))
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"

    import requests

    from mm_platform.config import load_project
    from mm_platform.devtools import free_port
    from mm_platform.serving.predlog import read_dataset
    from mm_platform.tracking.serving import (
        build_monitored_model,
        start_server,
        stop_process_group,
    )
    from mm_platform.training import train_project

    project = load_project(REPO / "projects" / "seed_linear.yaml")
    version = train_project(project).version
    log_root = str(tmp / "prediction_log")
    monitored_dir = build_monitored_model(project.name, version, log_root, tmp / "monitored")
    quiet = subprocess.DEVNULL
    ports = {"plain": free_port(), "monitored": free_port()}
    servers = {
        "plain": start_server(f"models:/{project.name}/{version}", host="127.0.0.1",
                              port=ports["plain"], output=quiet),
        "monitored": start_server(monitored_dir, host="127.0.0.1", port=ports["monitored"],
                                  output=quiet),
    }  # fmt: skip
    rng = np.random.default_rng(0)
    bodies = {
        rows: {
            "dataframe_split": {"columns": ["x"], "data": rng.uniform(0, 10, (rows, 1)).tolist()}
        }
        for rows in (1, 1000)
    }
    sessions = {name: requests.Session() for name in servers}
    print(
        f"seed_linear v{version}; servers: mlflow models serve --env-manager local, 1 worker each"
    )
    ok = True
    try:
        for rows, n in ((1, args.requests), (1000, max(args.requests // 4, 50))):
            times: dict[str, list[float]] = {"plain": [], "monitored": []}
            for i in range(n + 20):
                for name in ("plain", "monitored") if i % 2 else ("monitored", "plain"):
                    url = f"http://127.0.0.1:{ports[name]}/invocations"
                    start = time.perf_counter()
                    answer = sessions[name].post(url, json=bodies[rows], timeout=30)
                    elapsed = time.perf_counter() - start
                    answer.raise_for_status()
                    if i >= 20:  # warm-up excluded
                        times[name].append(elapsed * 1000)
            p50 = {k: statistics.median(v) for k, v in times.items()}
            ratio = p50["monitored"] / p50["plain"]
            ok &= ratio <= 1.10
            print(f"{rows:>5}-row requests x{n}: p50 plain {p50['plain']:.2f} ms, monitored "
                  f"{p50['monitored']:.2f} ms, ratio {ratio:.3f} "
                  f"(target <= 1.10: {'PASS' if ratio <= 1.10 else 'FAIL'})")  # fmt: skip
    finally:
        for server in servers.values():
            stop_process_group(server)

    # durability: N single-row requests, half before and half after a graceful restart
    before = {
        r["request_id"]
        for r in read_dataset(log_root, "predictions", project.name).to_dict("records")
    }
    sent: list[str] = []
    half = args.restart_requests // 2
    started = time.perf_counter()
    for _ in ("before the restart", "after it"):
        port = free_port()
        server = start_server(monitored_dir, host="127.0.0.1", port=port, output=quiet)
        session = requests.Session()
        url = f"http://127.0.0.1:{port}/invocations"
        try:
            for i in range(half):
                body = {"dataframe_split": {"columns": ["x"], "data": [[float(i % 10)]]}}
                answer = session.post(url, json=body, timeout=30)
                answer.raise_for_status()
                sent.append(answer.json()["predictions"]["request_id"][0])
        finally:
            stop_process_group(server)  # SIGTERM: graceful shutdown
    logged = read_dataset(log_root, "predictions", project.name)
    logged_ids = set(logged["request_id"]) - before
    missing = len(set(sent) - logged_ids)
    ok &= missing == 0 and len(sent) == args.restart_requests
    seconds = time.perf_counter() - started
    verdict = "PASS" if missing == 0 else "FAIL"
    print(
        f"{len(sent)} requests across a graceful restart in {seconds:.0f} s: "
        f"{len(logged_ids)} logged, {missing} missing (target 0: {verdict})"
    )
    print(f"all targets: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
