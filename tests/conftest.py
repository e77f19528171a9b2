"""Shared fixtures: a real MLflow SQLite store in tmp_path, project files, free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import first_line, free_port

os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store in tmp_path; the working directory is tmp_path too."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    yield uri
    import mlflow

    while mlflow.active_run() is not None:  # a failed test must not leak its run
        mlflow.end_run("FAILED")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with job execution off; yields its URL."""
    import requests

    port = free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (server_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}",
            "--artifacts-destination", str(server_dir / "mlartifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        cwd=server_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError((server_dir / "server.log").read_text()[-3000:])
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start in 120 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's postgresql package), for the
    whole session; yields a database URI with a password in it. `.ci/run` installs the
    package and sets MM_REQUIRE_POSTGRES=1, which turns a missing server into a failure."""
    from tests.support.postgres import postgres_bin, postgres_cluster

    if postgres_bin() is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("MM_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with postgres_cluster() as uri:
        yield uri


@pytest.fixture
def tracking_server(postgres_uri: str, tmp_path: Path):
    """`mm server` on the PostgreSQL store; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MM_BACKEND_STORE_URI"] = postgres_uri  # a password stays off command lines
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "server",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        banner = first_line(server)  # printed once /health answers
        assert "MLflow tracking server on postgresql://mm:***@127.0.0.1" in banner, (
            tmp_path / "server.log"
        ).read_text()
        password = postgres_uri.split(":")[2].split("@")[0]
        assert password not in banner and "mm:***@127.0.0.1" in banner  # user, no password
        listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert password not in listing  # not on any command line either
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        assert password not in (tmp_path / "server.log").read_text()


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One real local[2] Spark session for the whole test process (its JVM takes ~9 s to
    start). Without PySpark or Java the Spark tests skip, unless MM_REQUIRE_SPARK is set
    (CI sets it): then they fail."""
    from mm_platform.errors import MmError
    from mm_platform.project.config import Spark
    from mm_platform.spark import session

    try:
        active = session(Spark(master="local[2]", conf={"spark.sql.shuffle.partitions": "8"}))
    except MmError as exc:
        if os.environ.get("MM_REQUIRE_SPARK"):
            raise
        pytest.skip(f"no Spark here: {exc}")
    yield active
