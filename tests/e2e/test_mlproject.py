"""`mlflow run` executes the MLproject entry points; our runs nest under MLflow's run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, SEED_LINEAR, write_project

pytestmark = pytest.mark.slow


def test_mlflow_run_train_nests_the_same_runs_under_mlflows_run(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    project = write_project(tmp_path, SEED_LINEAR)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow_cli = shutil.which("mlflow", path=env["PATH"])
    result = subprocess.run(
        [mlflow_cli, "run", str(REPO), "-e", "train", "-P", f"project={project}",
         "--env-manager", "local", "--experiment-name", "tiny"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    outer = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(outer) == 1 and outer[0].data.tags.get("mlflow.project.entryPoint") == "train"
    assert outer[0].info.status == "FINISHED"
    train = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outer[0].info.run_id]
    assert len(train) == 1 and train[0].info.run_name.startswith("train/tiny 20")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == train[0].info.run_id]
    assert len(children) == 2
    version = client.get_model_version_by_alias("tiny", "champion")
    assert version.run_id == train[0].info.run_id


def test_mlflow_run_drift_on_an_empty_window_finishes_with_not_enough_data(
    store: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project

    project = write_project(tmp_path, SEED_LINEAR)
    train_project(load_project(project))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MM_PREDICTION_LOG": str(tmp_path / "nothing-served")}  # fmt: skip
    result = subprocess.run(
        [shutil.which("mlflow", path=env["PATH"]), "run", str(REPO), "-e", "drift",
         "-P", f"project={project}", "--env-manager", "local",
         "--experiment-name", "tiny-monitoring"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not enough data" in result.stdout
    assert "Traceback" not in result.stderr

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tiny-monitoring").experiment_id])
    outer = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "drift"]
    assert len(outer) == 1 and outer[0].info.status == "FINISHED"
    assert outer[0].data.tags["mm.status"] == "not_enough_data"
    (drift,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outer[0].info.run_id]
    assert drift.info.status == "FINISHED" and drift.data.tags["mm.status"] == "not_enough_data"
