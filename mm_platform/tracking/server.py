"""MLflow's own UI and tracking server as child processes: start, announce, stop."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mlflow import MlflowClient

from mm_platform.errors import TrackingError
from mm_platform.tracking.errors import store_label
from mm_platform.tracking.store import connect, redact_uri, ui_runs_url


def server_env() -> dict[str, str]:
    """Environment for an MLflow server or UI process: background job execution off."""
    env = dict(os.environ)
    # MLflow starts `uvicorn` by name: make this interpreter's scripts folder come first
    scripts = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def _experiment(project: str | None) -> tuple[str, str] | None:
    """(id, name) of the project's experiment, or of the newest one when no project is given."""
    client = MlflowClient()
    if project is not None:
        experiment = client.get_experiment_by_name(project)
        if experiment is None:
            raise TrackingError(
                f"no experiment named '{project}' in {store_label()}; "
                f"train it first: mm train projects/{project}.yaml"
            )
        return experiment.experiment_id, experiment.name
    experiments = client.search_experiments(order_by=["last_update_time DESC"], max_results=1)
    return (experiments[0].experiment_id, experiments[0].name) if experiments else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise TrackingError when something already listens on host:port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise TrackingError(
                f"port {port} on {host} is already in use ({exc.strerror}); stop what holds "
                "it or choose another with --port"
            ) from exc


def wait_for_health(
    url: str, process: subprocess.Popen[bytes] | None, timeout: float, path: str = "/health"
) -> None:
    """Poll `url` + `path` until it answers 200, the process exits, or `timeout` passes."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TrackingError(
                f"the MLflow server for {url} stopped (exit code {process.returncode}) before "
                "answering; its own error is printed above"
            )
        try:
            if requests.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TrackingError(f"the MLflow server at {url} did not become healthy in {timeout:.0f} s")


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop the server and the worker processes it started (its whole process group),
    gracefully, and return only when all of them have exited (SIGKILL after `timeout`)."""
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # reap our direct child; the workers are reaped by init
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break  # every process of the group has exited
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    process.wait()


def raise_keyboard_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_ui(*, host: str, port: int, project: str | None, echo: Callable[[str], None]) -> None:
    """Start `mlflow ui` for the current store, print its URL, serve until Ctrl-C or SIGTERM."""
    uri = connect()
    experiment = _experiment(project)
    if uri.startswith(("http://", "https://")):
        where = ui_runs_url(uri, experiment[0]) if experiment else uri
        echo(f"the store is a tracking server; open its own UI: {where}")
        return
    check_port_free(host, port)
    base = f"http://{host}:{port}"
    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    if project is not None and experiment is not None:
        lines = [f"MLflow UI for {redact_uri(uri)}: {ui_runs_url(base, experiment[0])}  "
                 "(Ctrl-C stops it)"]  # fmt: skip
    else:
        lines = [f"MLflow UI for {redact_uri(uri)}: {base}  (Ctrl-C stops it)"]
        if experiment is not None:
            lines.append(f"runs of the newest experiment, {experiment[1]}: "
                         f"{ui_runs_url(base, experiment[0])}")  # fmt: skip
    _serve("mlflow ui", command, server_env(), base, timeout=90, announce=lines, echo=echo)


def _serve(
    name: str,
    command: list[str],
    env: dict[str, str],
    base: str,
    *,
    timeout: float,
    announce: list[str],
    echo: Callable[[str], None],
) -> None:
    """Run an MLflow server process until it exits, Ctrl-C or SIGTERM: print `announce`
    once `base`/health answers, and stop its whole process group on the way out."""
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    # own process group, so stopping it stops its uvicorn workers too; its chatter goes to
    # stderr so that stdout carries only the URL
    process = subprocess.Popen(command, env=env, stdout=sys.stderr, start_new_session=True)
    try:
        wait_for_health(base, process, timeout=timeout)
        for line in announce:
            echo(line)
        process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            raise TrackingError(f"{name} stopped with exit code {process.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        stop_process_group(process)
        signal.signal(signal.SIGTERM, previous)


def _check_driver(backend_store_uri: str) -> None:
    """Raise TrackingError when the store is PostgreSQL and its driver is not installed."""
    if backend_store_uri.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401  (MLflow's PostgreSQL driver)
        except ImportError as exc:
            raise TrackingError(
                f"{redact_uri(backend_store_uri)}: a PostgreSQL store needs the driver; "
                "pip install 'mm_platform[postgres]' (psycopg)"
            ) from exc


def _prepare_auth(env: dict[str, str]) -> None:
    """Check MLflow's basic-auth app can start, and give it its CSRF secret in `env`."""
    try:
        import flask_wtf  # noqa: F401
    except ImportError as exc:
        raise TrackingError(
            "--auth needs MLflow's basic-auth app: pip install 'mm_platform[auth]'"
        ) from exc
    if not env.get("MLFLOW_AUTH_ADMIN_PASSWORD") and not Path("basic_auth.db").exists():
        raise TrackingError(
            "--auth: set MLFLOW_AUTH_ADMIN_PASSWORD; the first start creates the admin "
            "user ('admin', or MLFLOW_AUTH_ADMIN_USERNAME) with it in ./basic_auth.db"
        )
    # the CSRF secret of the auth app: kept for the server's lifetime, never printed
    env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))


def run_tracking_server(
    *,
    backend_store_uri: str,
    artifacts_destination: str,
    host: str,
    port: int,
    jobs: bool,
    allowed_hosts: str | None,
    echo: Callable[[str], None],
    auth: bool = False,
) -> None:
    """`mlflow server` on a database store with proxied artifacts, until Ctrl-C or SIGTERM.

    Clients reach it through MLFLOW_TRACKING_URI=http://host:port; artifacts go through the
    server (`mlflow-artifacts:`), so clients need no access to the artifact location.
    Background job execution stays off unless `jobs` (it costs ~2 GB and ~20 s at start).
    """
    _check_driver(backend_store_uri)
    env = server_env()
    if auth:
        _prepare_auth(env)
    check_port_free(host, port)
    base = f"http://{host}:{port}"
    # the store URI (it may hold a password) goes by environment, not where `ps` shows it
    env["MLFLOW_BACKEND_STORE_URI"] = backend_store_uri
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--artifacts-destination", artifacts_destination, "--serve-artifacts",
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    if auth:
        command += ["--app-name", "basic-auth"]
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if jobs else "false"
    store = redact_uri(backend_store_uri)  # no password in what is printed
    lines = [
        f"MLflow tracking server on {store}, artifacts in {artifacts_destination}: {base}"
        + (" (basic auth: users in ./basic_auth.db)" if auth else ""),
        f"  export MLFLOW_TRACKING_URI={base}   (Ctrl-C stops it)",
    ]
    _serve("mlflow server", command, env, base, timeout=180, announce=lines, echo=echo)
