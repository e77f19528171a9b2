"""Starting MLflow's own UI on the current store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import mlflow
from mlflow import MlflowClient

from mm_platform.errors import TrackingError
from mm_platform.tracking.store import connect, ui_runs_url


def server_env() -> dict[str, str]:
    """Environment for an MLflow server or UI process: background job execution off."""
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def _experiment_id(project: str | None) -> str | None:
    client = MlflowClient()
    if project is not None:
        experiment = client.get_experiment_by_name(project)
        if experiment is None:
            raise TrackingError(
                f"no experiment named '{project}' in {mlflow.get_tracking_uri()}; "
                f"train it first: mm train projects/{project}.yaml"
            )
        return experiment.experiment_id
    experiments = client.search_experiments(order_by=["last_update_time DESC"], max_results=1)
    return experiments[0].experiment_id if experiments else None


def wait_for_health(url: str, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll `url`/health until it answers 200, the process exits, or `timeout` passes."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TrackingError(
                f"the MLflow server for {url} exited with code {process.returncode}"
            )
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TrackingError(f"the MLflow server at {url} did not become healthy in {timeout:.0f} s")


def run_ui(*, host: str, port: int, project: str | None, echo: Callable[[str], None]) -> None:
    """Start `mlflow ui` for the current store, print the runs-table URL, wait until Ctrl-C."""
    uri = connect()
    experiment_id = _experiment_id(project)
    if uri.startswith(("http://", "https://")):
        echo(f"the store is a tracking server; its UI: {ui_runs_url(uri, experiment_id or '0')}")
        return
    base = f"http://{host}:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # the server's own chatter goes to stderr so stdout carries only the URL
    process = subprocess.Popen(command, env=server_env(), stdout=sys.stderr)
    try:
        wait_for_health(base, process, timeout=90)
        target = ui_runs_url(base, experiment_id) if experiment_id else base
        echo(f"MLflow UI for {uri}: {target}  (Ctrl-C stops it)")
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
