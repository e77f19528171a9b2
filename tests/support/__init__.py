"""Helpers shared by the tests: project files, the real `mm` command, free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from mm_platform.tracking.server import free_port

__all__ = [
    "PROJECTS",
    "REPO",
    "SEED_LINEAR",
    "first_line",
    "free_port",
    "mm",
    "write_project",
]

REPO = Path(__file__).resolve().parents[2]
PROJECTS = REPO / "projects"

SEED_LINEAR = {
    "name": "tiny",
    "task": "regression",
    "dataset": {"source": "synthetic", "generator": "linear", "n_samples": 200},
    "features": {"polynomial_degree": 2},
    "candidates": [{"estimator": "ridge", "params": {"alpha": [0.1, 1.0]}}],
    "selection": {"metric": "rmse"},
    "split": {"cv_folds": 3},
}


def write_project(folder: Path, data: dict, name: str = "project.yaml") -> Path:
    """Write a project file and return its path."""
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def mm(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the real `mm` command in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mm_platform", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def first_line(process: subprocess.Popen, timeout: float = 180) -> str | bytes:
    """The first line `process` writes to its stdout pipe (a start-up banner).

    A server that hangs before printing it fails the test after `timeout` seconds instead
    of hanging the suite: the process (its whole group when it leads one) is killed.
    """
    line: list[str | bytes] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not reader.is_alive():
        return line[0]
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except ProcessLookupError:
        pass
    raise AssertionError(f"{process.args!r} printed no line within {timeout:g} s")
