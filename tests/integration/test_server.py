"""Against real MLflow processes: a tracking server over HTTP, and `mm ui`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support import SEED_LINEAR, first_line, free_port, mm, write_project

pytestmark = pytest.mark.slow


def test_train_against_tracking_server_over_http(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    path = write_project(tmp_path, SEED_LINEAR)
    result = mm("train", str(path), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert result.returncode == 0, result.stderr
    assert f"store {mlflow_server}" in result.stdout

    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version_by_alias("tiny", "champion")
    assert str(version.version) == "1"  # a str over REST
    run = client.get_run(version.run_id)
    assert run.data.tags["mm.run_type"] == "train"
    assert "holdout_rmse" in run.data.metrics
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == 2
    # artifacts went through the server's proxy into its artifact folder
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = list((tmp_path / "server" / "mlartifacts").rglob("reference.parquet"))
    assert len(stored) == 1
    assert not (tmp_path / "mlruns").exists()


def test_mm_ui_serves_the_store_and_prints_runs_table_url(store: str, tmp_path: Path) -> None:
    path = write_project(tmp_path, SEED_LINEAR)
    assert mm("train", str(path), cwd=tmp_path).returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "ui", "--port", str(port), "--project", "tiny"],
        cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = first_line(process)  # printed once /health answers
        assert f"http://127.0.0.1:{port}/#/experiments/" in line
        assert line.strip().split(": ", 1)[1].split()[0].endswith("/runs")
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
        body = requests.get(api, params={"experiment_name": "tiny"}, timeout=10).json()
        assert body["experiment"]["name"] == "tiny"
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        process.terminate()  # SIGTERM: mm ui must stop the server it started, workers too
        process.wait(30)
    time.sleep(0.5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_mm_ui_on_a_busy_port_says_so(store: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = mm("ui", "--port", str(port), cwd=tmp_path, timeout=60)
    assert result.returncode == 3
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr and "Traceback" not in result.stderr
