"""Tracking stores: PostgreSQL (through `mm server`) against the SQLite default.

Measures, on each store, with one writer and with four concurrent writer processes:
- logging throughput: runs per second (process start and imports excluded), each run
  one `log_batch` of 100 metrics and 20 params, the way mm logs (one batched call per run);
- `mm train` wall time of seed_linear (whole commands: start, imports, training, logging).

The PostgreSQL cluster is a throwaway one (Debian's `postgresql` package must be
installed); clients reach it through `mm server`, as the README sets it up. SQLite is
MLflow's default embedded store (a file, no server).

--quick (a check that the bench works) logs 5 runs with one writer, gives it less time to
import, and leaves out the `mm train` timings.

Run: python bench/stores.py [--runs 60] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WRITERS = 4


def log_runs(n: int, tag: str, start_at: float) -> None:
    """One writer: `n` runs, each one batched call of 100 metrics and 20 params, from the
    wall-clock time `start_at` on (concurrent writers start together, imports done);
    prints the time it finished."""
    import warnings

    warnings.simplefilter("ignore")
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient()
    name = "bench-logging"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else _create(client, name)
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(n):
        run = client.create_run(experiment_id, run_name=f"{tag}-{i}")
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(f"m{k}", float(k), now, 0) for k in range(100)],
            params=[Param(f"p{k}", str(k)) for k in range(20)],
        )
        client.set_terminated(run.info.run_id)
    print(time.time())


def _create(client, name: str) -> str:
    try:
        return client.create_experiment(name)
    except Exception:  # another writer created it first
        return client.get_experiment_by_name(name).experiment_id


def run_all(commands: list[list[str]], env: dict[str, str], cwd: Path) -> list[str]:
    """Start every command together; return their outputs once all have succeeded."""
    processes = [
        subprocess.Popen(c, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for c in commands
    ]  # fmt: skip
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise RuntimeError(err[-2000:])
        outputs.append(out)
    return outputs


def timed(commands: list[list[str]], env: dict[str, str], cwd: Path) -> float:
    """Seconds until every command (started together) has finished successfully."""
    start = time.perf_counter()
    run_all(commands, env, cwd)
    return time.perf_counter() - start


def logging_rate(
    writers: int, runs: int, env: dict[str, str], cwd: Path, import_wait: float = 15
) -> float:
    """Runs per second of `writers` concurrent writers, process start and imports excluded."""
    start_at = time.time() + import_wait  # every writer has imported MLflow by then
    commands = [
        [sys.executable, __file__, "--writer", str(runs), f"w{w}", str(start_at)]
        for w in range(writers)
    ]
    ends = [float(out.strip().splitlines()[-1]) for out in run_all(commands, env, cwd)]
    return writers * runs / (max(ends) - start_at)


def measure(uri: str, folder: Path, runs: int, quick: bool = False) -> dict[str, float]:
    """The table's measures on the store at `uri`; `quick` only those of --quick."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    if quick:
        # one writer: it also makes a fresh SQLite store's tables, which concurrent first
        # writers would race to migrate
        return {"log_seq": logging_rate(1, runs, env, folder, import_wait=8)}
    out = {
        "log_seq": logging_rate(1, runs, env, folder),
        "log_conc": logging_rate(WRITERS, runs, env, folder),
    }
    projects = []
    for i in range(WRITERS):
        text = (REPO / "projects" / "seed_linear.yaml").read_text()
        path = folder / f"bench_p{i}.yaml"
        path.write_text(text.replace("name: seed_linear", f"name: bench_p{i}"))
        projects.append(path)
    mm = [sys.executable, "-m", "mm_platform", "train"]
    out["train_seq"] = timed([[*mm, str(projects[0])]], env, folder)
    out["train_conc"] = timed([[*mm, str(p)] for p in projects], env, folder)
    return out


def start_server(store: str, folder: Path) -> tuple[subprocess.Popen, str]:
    from mm_platform.tracking.server import free_port

    port = free_port()
    env = {**os.environ, "MM_BACKEND_STORE_URI": store}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "server", "--port", str(port),
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    server.stdout.readline()  # printed once the server answers
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="runs per writer")
    parser.add_argument("--writer", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a small run that checks it works")
    args = parser.parse_args()
    if args.quick:
        args.runs = 5
    if args.writer:
        log_runs(int(args.writer[0]), args.writer[1], float(args.writer[2]))
        return
    import signal

    sys.path.insert(0, str(REPO))
    from tests.support.postgres import postgres_cluster

    results = {}
    with tempfile.TemporaryDirectory(prefix="mm-bench-stores-") as tmp:
        sqlite_dir = Path(tmp) / "sqlite"
        sqlite_dir.mkdir()
        results["SQLite (file)"] = measure(f"sqlite:///{sqlite_dir}/mlflow.db", sqlite_dir,
                                           args.runs, args.quick)  # fmt: skip
        pg_dir = Path(tmp) / "pg"
        pg_dir.mkdir()
        with postgres_cluster() as store:
            server, url = start_server(store, pg_dir)
            try:
                results["PostgreSQL (mm server)"] = measure(url, pg_dir, args.runs, args.quick)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(60)
    sqlite, pg = results["SQLite (file)"], results["PostgreSQL (mm server)"]
    print(f"{args.runs} runs per writer (one log_batch of 100 metrics + 20 params each); "
          f"mm train of a seed_linear-sized project; {os.cpu_count()} cores")  # fmt: skip
    print("| measure | SQLite | PostgreSQL via mm server | PostgreSQL / SQLite |")
    print("|---|---|---|---|")
    rows = [
        ("logging, 1 writer (runs/s)", "log_seq", "{:.1f}"),
        (f"logging, {WRITERS} writers (runs/s, all)", "log_conc", "{:.1f}"),
        ("mm train, 1 process (s)", "train_seq", "{:.1f}"),
        (f"mm train, {WRITERS} processes at once (s, all)", "train_conc", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        if key not in sqlite:  # left out by --quick
            continue
        print(f"| {label} | {fmt.format(sqlite[key])} | {fmt.format(pg[key])} | "
              f"{pg[key] / sqlite[key]:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
