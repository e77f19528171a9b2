"""Helpers shared by the tests: project files, the real `mm` command, free ports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from mm_platform.tracking.server import free_port

__all__ = ["PROJECTS", "REPO", "SEED_LINEAR", "free_port", "mm", "write_project"]

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
