"""`mm serve`: a registered version behind MLflow's scoring server, with every request logged.

The monitored model folder is served by `mm_platform.serving.app` (MLflow's scoring app
with request limits and a health check that includes the prediction log); any other model
folder or URI by `mlflow models serve`.

This module imports MLflow although it lies outside `tracking/` (a named exception): the
monitored model it builds is an MLflow pyfunc folder (`mlflow.pyfunc.save_model` with this
package's loader), and telling a monitored folder from any other reads its `MLmodel`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from mlflow.models import Model

from mm_platform.serving import app
from mm_platform.serving.monitored import MONITOR_FILE
from mm_platform.tracking.models import pip_requirements, signature_pairs
from mm_platform.tracking.registry import verify_model_files
from mm_platform.tracking.server import (
    check_port_free,
    raise_keyboard_interrupt,
    server_env,
    stop_process_group,
    wait_for_health,
)

MONITORED_LOADER = "mm_platform.serving.monitored"


def build_monitored_model(
    name: str, version: str, log_root: str, dest: Path, *, ids: tuple[str, ...] = (),
    ignored: tuple[str, ...] = (),
) -> Path:  # fmt: skip
    """Save the monitored pyfunc of `name` version `version` into `dest` and return it.

    `ids` (the project's dropped columns) are carried into the log; `ignored` (the target)
    is accepted in requests and dropped.
    """
    if dest.exists():
        shutil.rmtree(dest)
    work = dest.parent / f".{dest.name}-data"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(verify_model_files(name, version), work / "inner")
    signature = Model.load(str(work / "inner" / "MLmodel")).signature
    schema = [] if signature is None else signature_pairs(signature)
    (work / MONITOR_FILE).write_text(
        json.dumps(
            {"model_name": name, "model_version": str(version), "log_root": log_root,
             "schema": schema, "ids": list(ids), "ignored": list(ignored)}
        )
    )  # fmt: skip
    # no signature on the wrapper: MLflow would enforce it first and silently drop extra
    # columns; the wrapper conforms requests to the inner model's signature itself
    mlflow.pyfunc.save_model(
        str(dest),
        loader_module=MONITORED_LOADER,
        data_path=str(work),
        pip_requirements=pip_requirements(),
    )
    shutil.rmtree(work)
    return dest


def serve_command(model_dir: Path | str, host: str, port: int) -> list[str]:
    """The command line serving `model_dir`: mm's app for a monitored model folder,
    `mlflow models serve` for anything else."""
    if is_monitored(model_dir):
        return [sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port),
                "mm_platform.serving.app:app"]  # fmt: skip
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
        "--env-manager", "local", "-h", host, "-p", str(port),
    ]  # fmt: skip


def is_monitored(model_dir: Path | str) -> bool:
    """Whether `model_dir` is a monitored model folder made by `build_monitored_model`."""
    mlmodel = Path(str(model_dir)) / "MLmodel"
    if not mlmodel.is_file():
        return False
    flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
    return flavor.get("loader_module") == MONITORED_LOADER


def start_server(
    model_dir: Path | str, *, host: str, port: int, output: Any = None,
    max_bytes: int | None = None, max_rows: int | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start the scoring server on `model_dir` and return once it answers /ping."""
    check_port_free(host, port)
    env = server_env()
    env[app.ENV_MODEL] = str(model_dir)
    if max_bytes is not None:
        env[app.ENV_MAX_BYTES] = str(max_bytes)
    if max_rows is not None:
        env[app.ENV_MAX_ROWS] = str(max_rows)
    process = subprocess.Popen(
        serve_command(model_dir, host, port), env=env,
        stdout=output if output is not None else sys.stderr,
        stderr=output if output is not None else None, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_health_path(f"http://{host}:{port}", process)
    except BaseException:
        stop_process_group(process)
        raise
    return process


def run_server(
    model_dir: Path, *, host: str, port: int, echo: Callable[[str], None], banner: str,
    max_bytes: int | None = None, max_rows: int | None = None,
) -> None:  # fmt: skip
    """Serve `model_dir` until Ctrl-C or SIGTERM; both stop the server gracefully."""
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    process = None
    try:
        process = start_server(
            model_dir, host=host, port=port, max_bytes=max_bytes, max_rows=max_rows
        )
        echo(f"{banner}: POST http://{host}:{port}/invocations  (Ctrl-C stops it)")
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process is not None:
            stop_process_group(process)
        signal.signal(signal.SIGTERM, previous)


def wait_for_health_path(base: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Wait for the scoring server's /ping (it has no /health)."""
    wait_for_health(base, process, timeout=timeout, path="/ping")
