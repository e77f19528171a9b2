"""`mm demo`: the lifecycle on the embedded default store, one project file at a time."""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mm_platform.data.tables import require_path
from mm_platform.errors import ProjectConfigError
from mm_platform.project.config import Project, load_project
from mm_platform.tracking.server import free_port

if TYPE_CHECKING:
    from datetime import datetime

    from mm_platform.compression.job import CompressResult
    from mm_platform.lifecycle.finetuning import FinetuneResult
    from mm_platform.lifecycle.promotion import PromotionResult
    from mm_platform.monitoring.job import DriftOutcome
    from mm_platform.progress import Progress
    from mm_platform.serving.batch import LabelResult
    from mm_platform.training.record import TrainResult


def project_files(folder: Path) -> list[Path]:
    """The project files in `folder`, sorted by name."""
    require_path(
        folder,
        "no such folder of project files; run mm demo from the repository root or pass "
        "--projects DIR",
        folder=True,
        error=ProjectConfigError,
    )
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise ProjectConfigError(f"{folder}: holds no *.yaml project files")
    return files


@dataclass
class DemoResult:
    """Everything `mm demo` did, for the CLI to render."""

    trained: list[TrainResult]
    compressed: list[CompressResult]
    loop: LoopResult | None


def run_demo(folder: Path, progress: Progress | None = None) -> DemoResult:
    """Train and register every project in `folder` (all files are checked before any
    trains), compress the champion of each project that has a compression section, then
    run the production loop on seed_linear when the folder has it."""
    from mm_platform.compression.job import compress_project
    from mm_platform.serving.predlog.writer import log_root
    from mm_platform.training.search import train_project

    projects = [load_project(path) for path in project_files(folder)]
    trained = [train_project(project, progress=progress) for project in projects]
    compressed = [
        compress_project(project, progress=progress)
        for project in projects
        if project.compression is not None
    ]
    loop = None
    for project in projects:
        if project.name == LOOP_PROJECT:
            root = log_root(project.serving.prediction_log)
            loop = production_loop(project, log_root=root, progress=progress)
    return DemoResult(trained, compressed, loop)


LOOP_PROJECT = "seed_linear"  # the loop simulates traffic for its one feature, x


@dataclass
class LoopResult:
    """The production loop of the demo: traffic served, labels, fine-tune, promotion."""

    project: str
    metric: str
    served_version: str
    n_requests: int
    n_rows: int
    shifted_from: int
    labels: LabelResult
    finetune: FinetuneResult
    promotion: PromotionResult
    drift_before: DriftOutcome | None = None  # the served version, traffic before the shift
    drift_after: DriftOutcome | None = None  # ... and after it


def simulated_traffic(seed: int, n_requests: int) -> list[tuple[pd.DataFrame, np.ndarray]]:
    """Requests of 1-5 rows; halfway through, inputs and the true relation both shift."""
    rng = np.random.default_rng(seed)
    traffic = []
    for i in range(n_requests):
        n = int(rng.integers(1, 6))
        if i < n_requests // 2:
            x = rng.uniform(0, 10, n)
            y = 3.0 * x + 2.0 + rng.normal(0, 0.5, n)
        else:  # covariate shift (wider x) and concept shift (steeper slope)
            x = rng.uniform(4, 14, n)
            y = 3.4 * x + 2.5 + rng.normal(0, 0.5, n)
        traffic.append((pd.DataFrame({"x": x}), y))
    return traffic


def production_loop(
    project: Project, *, log_root: str, n_requests: int = 150, progress: Progress | None = None
) -> LoopResult:
    """Serve the champion, send shifted traffic, ingest labels, drift reports of both
    halves, fine-tune, promote."""
    import tempfile

    from mm_platform import tracking
    from mm_platform.lifecycle.finetuning import finetune_project
    from mm_platform.lifecycle.promotion import promote_project
    from mm_platform.serving.batch import ingest_labels

    report = progress or (lambda _d, _i, _n: None)
    tracking.connect()
    champion = str(tracking.resolve_version(project.name, source=project.label).version)
    traffic = simulated_traffic(project.seed, n_requests)
    with tempfile.TemporaryDirectory(prefix="mm-demo-") as tmp:
        ids, truth, moments = _serve_traffic(
            project, champion, traffic, log_root=log_root, folder=Path(tmp), report=report
        )
        labels_file = Path(tmp) / "labels.csv"
        pd.DataFrame({"request_id": ids, "label": truth}).to_csv(labels_file, index=False)
        labels = ingest_labels(project, labels_file, log_root=log_root)
    report(f"{project.name}: drift reports (Evidently)", 0, 2)
    from mm_platform.monitoring.job import run_drift
    from mm_platform.monitoring.worker import Local  # windows in a row: Evidently here, once

    drift = [
        run_drift(project, start=start, end=end, version=champion, log_root=log_root,
                  evidently=Local(),
                  retrain=False)
        for start, end in itertools.pairwise(moments)
    ]  # fmt: skip
    tuned = finetune_project(project, log_root=log_root)
    decision = promote_project(project, log_root=log_root)
    shifted_from = sum(len(frame) for frame, _ in traffic[: n_requests // 2])
    return LoopResult(
        project.name,
        project.selection.metric,
        champion,
        n_requests,
        len(ids),
        shifted_from,
        labels,
        tuned,
        decision,
        *drift,
    )


def _serve_traffic(
    project: Project,
    version: str,
    traffic: list[tuple[pd.DataFrame, np.ndarray]],
    *,
    log_root: str,
    folder: Path,
    report: Progress,
) -> tuple[list[str], list[float], list[datetime]]:
    """Serve `version` with mlflow models serve and send `traffic`: the request ids, the
    true values, and the moments (UTC) traffic started, shifted and ended."""
    import requests

    from mm_platform.clock import utc_now
    from mm_platform.serving.launcher import (
        build_monitored_model,
        start_server,
        stop_process_group,
    )

    n_requests = len(traffic)
    ids: list[str] = []
    truth: list[float] = []
    moments: list[datetime] = []  # traffic start, the shift, traffic end (UTC)
    model_dir = build_monitored_model(project.name, version, log_root, folder / "model")
    port = free_port()
    report(f"{project.name}: starting server", 0, n_requests)
    server = start_server(model_dir, host="127.0.0.1", port=port, output=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/invocations"
        for i, (frame, y) in enumerate(traffic):
            if i in (0, n_requests // 2):
                moments.append(utc_now())
            body = {"dataframe_split": frame.to_dict(orient="split", index=False)}
            answer = requests.post(url, json=body, timeout=30)
            answer.raise_for_status()
            ids += answer.json()["predictions"]["request_id"]
            truth += list(y)
            report(f"{project.name}: traffic", i + 1, n_requests)
        moments.append(utc_now())
    finally:
        stop_process_group(server)  # graceful: the log is flushed before it exits
    return ids, truth, moments
