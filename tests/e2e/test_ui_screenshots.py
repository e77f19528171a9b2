"""The MLflow UI and an Evidently drift report, rendered in headless Chromium (Debian's
`chromium`): the runs table, a compare-runs view and the report, as screenshots and as
the DOM the page built. Screenshots are copied to MM_SCREENSHOT_DIR when it is set."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support import SEED_LINEAR, first_line, free_port, write_project

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1400,900",
    "--virtual-time-budget=30000",  # the MLflow UI renders only with a virtual time budget
]  # fmt: skip


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("MM_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def render(url: str, shot: Path, profile: Path) -> str:
    """Save a screenshot of `url` and return the DOM the page built."""
    chromium = _chromium()
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    subprocess.run([*common, f"--screenshot={shot}", url], check=True, capture_output=True,
                   timeout=180)  # fmt: skip
    dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True,
                         text=True, timeout=180)  # fmt: skip
    keep = os.environ.get("MM_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return dom.stdout


def assert_not_blank(shot: Path) -> None:
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 800 and pixels.shape[1] >= 1300
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1])[::97], axis=0)
    assert len(colours) > 20, f"{shot} looks blank"


@pytest.mark.slow
def test_mlflow_ui_runs_table_and_compare_view_render(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project

    _chromium()
    train_project(load_project(write_project(tmp_path, SEED_LINEAR)))
    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "ui", "--port", str(port)], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert "MLflow UI" in first_line(ui)
        base = f"http://127.0.0.1:{port}"
        table = render(f"{base}/#/experiments/{experiment.experiment_id}/runs",
                       tmp_path / "mlflow-runs-table.png", tmp_path / "profile")  # fmt: skip
        assert "train/tiny" in table  # the parent run's name, in the table the page built
        assert_not_blank(tmp_path / "mlflow-runs-table.png")
        ids = json.dumps([r.info.run_id for r in children[:2]])
        compare = render(
            f"{base}/#/compare-runs?runs={ids}&experiments={json.dumps([experiment.experiment_id])}",
            tmp_path / "mlflow-compare-runs.png", tmp_path / "profile",
        )  # fmt: skip
        assert "cv_rmse_mean" in compare  # the metrics of the compared runs
        assert_not_blank(tmp_path / "mlflow-compare-runs.png")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(60)


@pytest.mark.slow
def test_evidently_drift_report_renders(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from mm_platform.monitoring.job import run_drift
    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project

    _chromium()
    project = load_project(write_project(tmp_path, {**SEED_LINEAR, "monitoring": {"min_rows": 20}}))
    train_project(project)
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.uniform(6, 16, 200)}).to_csv(tmp_path / "shifted.csv", index=False)
    outcome = run_drift(project, current_path=tmp_path / "shifted.csv")
    report = Path(MlflowClient().download_artifacts(outcome.run_id, "drift_report.html",
                                                    str(tmp_path)))  # fmt: skip
    dom = render(report.as_uri(), tmp_path / "evidently-drift-report.png", tmp_path / "profile")
    assert "Drift in column 'x'" in dom  # the widgets Evidently's scripts built
    assert_not_blank(tmp_path / "evidently-drift-report.png")
