"""Four concurrent `mm train` processes and a drift schedule against one store, on the
SQLite default and on PostgreSQL (through `mm server`): every run recorded, none failed."""

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


def _concurrent_work(folder: Path, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Train one project first (for the drift job to have a model), then start four trains
    of four projects and a catch-up drift schedule at once; wait for all."""
    files = []
    for i in range(PROJECTS):
        monitoring = {"schedule": "*/10 * * * *", "window": "1h", "min_rows": 5}
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
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.uniform(0, 10, 50)}).to_csv(folder / "traffic.csv", index=False)
    predict = start("predict", str(files[0]), str(folder / "traffic.csv"))
    predict.communicate(timeout=300)
    state = folder / "state"
    state.mkdir()
    # a schedule whose state is 3 hours old: it catches up 18 windows while the trains run
    (state / "p0.json").write_text(
        '{"last_end": "'
        + (pd.Timestamp.now(tz="UTC").floor("10min") - pd.Timedelta(hours=3)).isoformat()
        + '"}'
    )
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
    return results


def _check(results: list[subprocess.CompletedProcess], tracking_uri: str) -> None:
    from mlflow import MlflowClient

    for result in results:
        assert "database is locked" not in result.stderr, result.stderr[-2000:]
        assert result.returncode in (0, 5, 6), (result.args, result.stderr[-2000:])
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
