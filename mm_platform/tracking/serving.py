"""`mm serve`: a registered version behind `mlflow models serve`, with every request logged."""

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

from mm_platform.tracking.models import pip_requirements
from mm_platform.tracking.registry import verify_model_files
from mm_platform.tracking.server import (
    check_port_free,
    raise_keyboard_interrupt,
    server_env,
    stop_process_group,
    wait_for_health,
)


def build_monitored_model(name: str, version: str, log_root: str, dest: Path) -> Path:
    """Save the monitored pyfunc of `name` version `version` into `dest` and return it."""
    if dest.exists():
        shutil.rmtree(dest)
    work = dest.parent / f".{dest.name}-data"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    inner = Path(shutil.copytree(verify_model_files(name, version), work / "inner"))
    if inner != work / "inner":  # some stores nest the files one level down
        shutil.move(str(inner), str(work / "inner_tmp"))
        shutil.rmtree(work / "inner", ignore_errors=True)
        (work / "inner_tmp").rename(work / "inner")
    signature = Model.load(str(work / "inner" / "MLmodel")).signature
    columns = signature.inputs.input_names() if signature is not None else []
    (work / "monitor.json").write_text(
        json.dumps(
            {"model_name": name, "model_version": str(version), "log_root": log_root,
             "columns": columns}
        )
    )  # fmt: skip
    # no signature on the wrapper: MLflow would enforce it first and silently drop extra
    # columns; the inner model enforces the same signature and the wrapper refuses extras
    mlflow.pyfunc.save_model(
        str(dest),
        loader_module="mm_platform.tracking.monitored",
        data_path=str(work),
        pip_requirements=pip_requirements(),
    )
    shutil.rmtree(work)
    return dest


def serve_command(model_dir: Path, host: str, port: int) -> list[str]:
    """The `mlflow models serve` command line for a local model folder."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
        "--env-manager", "local", "-h", host, "-p", str(port),
    ]  # fmt: skip


def start_server(
    model_dir: Path, *, host: str, port: int, output: Any = None
) -> subprocess.Popen[bytes]:
    """Start `mlflow models serve` on `model_dir` and return once it answers /ping."""
    check_port_free(host, port)
    process = subprocess.Popen(
        serve_command(model_dir, host, port), env=server_env(),
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
    model_dir: Path, *, host: str, port: int, echo: Callable[[str], None], banner: str
) -> None:
    """Serve `model_dir` until Ctrl-C or SIGTERM; both stop the server gracefully."""
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    process = None
    try:
        process = start_server(model_dir, host=host, port=port)
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
