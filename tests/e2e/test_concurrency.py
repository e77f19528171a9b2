"""Four concurrent `mm train` processes and a drift schedule against one store, on the
SQLite default and on PostgreSQL (through `mm server`): every run recorded, none failed,
and each of the 18 catch-up windows holds traffic, so Evidently runs under that load and
every window gets the verdict its traffic was built for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support import SEED_LINEAR, write_project

PROJECTS = 4
WINDOWS = 18  # ten-minute windows in the three hours the schedule catches up on
ROWS = 30  # per window: above min_rows, so every window runs the real drift path


def _window_traffic(k: int) -> np.ndarray:
    """Window k's inputs: even windows like the training data (no drift), odd ones entirely
    outside its range (drift)."""
    return np.linspace(0.2, 9.8, ROWS) if k % 2 == 0 else np.linspace(12.0, 22.0, ROWS)


def _backdate(folder: Path, base: pd.Timestamp) -> None:
    """Move the rows `mm predict` logged into the windows the schedule will catch up on:
    block k (from 0) of ROWS rows gets timestamps in [base + 10k min, base + 10(k+1) min),
    the window the schedule's (k+1)-th fire time closes.
    The log is a hive-partitioned Parquet dataset (model=, date=), rewritten here with
    plain pyarrow; the files `mm predict` wrote are removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = sorted((folder / "log" / "predictions" / "model=p0").rglob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in written])
    frame = table.to_pandas().drop(columns=["model", "date"], errors="ignore")
    assert len(frame) == WINDOWS * ROWS
    calm, drifted = frame[frame["x"] <= 10].copy(), frame[frame["x"] > 10].copy()
    blocks = []
    for k in range(WINDOWS):
        pool = calm if k % 2 == 0 else drifted
        block = pool.iloc[(k // 2) * ROWS : (k // 2 + 1) * ROWS].copy()
        assert len(block) == ROWS
        start = base + pd.Timedelta(minutes=10 * k + 1)
        block["timestamp"] = [start + pd.Timedelta(seconds=j) for j in range(ROWS)]
        blocks.append(block)
    frame = pd.concat(blocks)
    for path in written:
        path.unlink()
    for day, part in frame.groupby(frame["timestamp"].dt.strftime("%Y-%m-%d")):
        target = folder / "log" / "predictions" / "model=p0" / f"date={day}"
        target.mkdir(parents=True, exist_ok=True)
        out = pa.Table.from_pandas(part, preserve_index=False)
        out = out.select(table.schema.names).cast(table.schema)
        pq.write_table(out, target / f"part-{pd.Timestamp.now().value}-backdated.parquet")


def _concurrent_work(
    folder: Path, env: dict[str, str]
) -> tuple[list[subprocess.CompletedProcess], pd.Timestamp]:
    """Train one project first (for the drift job to have a model), log traffic into each
    of the windows the drift schedule will catch up on, then start four trains of four
    projects and that catch-up schedule at once; wait for all."""
    files = []
    for i in range(PROJECTS):
        monitoring = {"schedule": "*/10 * * * *", "window": "10m", "min_rows": 5}
        data = {**SEED_LINEAR, "name": f"p{i}", "serving": {"prediction_log": "log"},
                "monitoring": monitoring}  # fmt: skip
        files.append(write_project(folder, data, f"p{i}.yaml"))
    full_env = {**os.environ, **env}

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "mm_platform", *args], cwd=folder,
                                env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip

    first = start("train", str(files[0]))
    first.communicate(timeout=300)
    assert first.returncode == 0
    traffic = np.concatenate([_window_traffic(k) for k in range(WINDOWS)])
    pd.DataFrame({"x": traffic}).to_csv(folder / "traffic.csv", index=False)
    predict = start("predict", str(files[0]), str(folder / "traffic.csv"))
    _, err = predict.communicate(timeout=300)
    assert predict.returncode == 0, err
    base = pd.Timestamp.now(tz="UTC").floor("10min") - pd.Timedelta(hours=3)
    _backdate(folder, base)
    state = folder / "state"
    state.mkdir()
    # a schedule whose state is 3 hours old: it catches up 18 windows while the trains run
    (state / "p0.json").write_text('{"last_end": "' + base.isoformat() + '"}')
    processes = [start("train", str(f)) for f in files]
    processes.append(start("schedule", str(files[0]), "--once", "--state-dir", str(state)))
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=600)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    finally:
        for process in processes:  # a timeout must not leave writers behind
            if process.poll() is None:
                process.kill()
    return results, base


def _check(work: tuple[list[subprocess.CompletedProcess], pd.Timestamp], tracking_uri: str) -> None:
    from mlflow import MlflowClient

    results, base = work
    for result in results:
        assert "database is locked" not in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for result in results[:-1]:
        assert result.returncode == 0, (result.args, result.stderr[-2000:])
    assert results[-1].returncode == 5, results[-1].stdout + results[-1].stderr[-2000:]  # drift
    client = MlflowClient(tracking_uri=tracking_uri)
    for i in range(PROJECTS):
        experiment = client.get_experiment_by_name(f"p{i}")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == (2 if i == 0 else 1)
        assert all(r.info.status == "FINISHED" for r in runs)
        versions = client.search_model_versions(f"name = 'p{i}'")
        assert len(versions) == len(parents)
    drift = client.search_runs(
        [client.get_experiment_by_name("p0-monitoring").experiment_id], max_results=1000
    )
    # 18 windows, or 19 when a ten-minute boundary passed while the test ran
    windows = results[-1].stdout.count(": window ")
    assert windows in (18, 19), results[-1].stdout
    assert len(drift) == windows and all(r.info.status == "FINISHED" for r in drift)
    ends = [r.data.tags["mm.window_end"] for r in drift]
    assert len(set(ends)) == windows  # each window once
    # every window with traffic ran Evidently and got the verdict its traffic was built for
    verdicts = {}
    for run in drift:
        k = (pd.Timestamp(run.data.tags["mm.window_end"]) - base) // pd.Timedelta(minutes=10)
        verdicts[k] = (run.data.tags["mm.status"], run.data.metrics.get("n_current_rows"))
    expected = {k + 1: ("no_drift" if k % 2 == 0 else "drift", float(ROWS))
                for k in range(WINDOWS)}  # fmt: skip
    if windows == 19:  # the window after the last one with traffic
        expected[19] = ("not_enough_data", 0.0)
    assert verdicts == expected


@pytest.mark.slow
def test_concurrent_trains_and_drift_on_sqlite(store: str, tmp_path: Path) -> None:
    _check(_concurrent_work(tmp_path, {"MLFLOW_TRACKING_URI": store}), store)


@pytest.mark.slow
def test_concurrent_trains_and_drift_on_postgresql(tracking_server: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _check(_concurrent_work(work, {"MLFLOW_TRACKING_URI": tracking_server}), tracking_server)


def test_four_trains_started_together_on_a_new_sqlite_store_all_succeed(tmp_path: Path) -> None:
    # no `store` fixture: the store must not exist before the four processes start
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    (tmp_path / "fresh").mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    files = [
        write_project(tmp_path, {**SEED_LINEAR, "name": f"fresh{i}"}, f"fresh{i}.yaml")
        for i in range(PROJECTS)
    ]
    processes = [
        subprocess.Popen([sys.executable, "-m", "mm_platform", "train", str(f)], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for f in files
    ]  # fmt: skip
    try:
        outcomes = [process.communicate(timeout=300) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (_, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err[-2000:]
    assert (tmp_path / "fresh" / "mlflow.db.lock").exists()
