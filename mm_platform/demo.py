"""`mm demo`: the lifecycle on the embedded default store, one project file at a time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mm_platform.config import load_project
from mm_platform.errors import ProjectConfigError

if TYPE_CHECKING:
    from mm_platform.compression.job import CompressResult
    from mm_platform.training import Progress, TrainResult


def project_files(folder: Path) -> list[Path]:
    """The project files in `folder`, sorted by name."""
    if not folder.is_dir():
        raise ProjectConfigError(
            f"{folder}: no such folder of project files; run mm demo from the repository root "
            "or pass --projects DIR"
        )
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise ProjectConfigError(f"{folder}: holds no *.yaml project files")
    return files


def run_demo(
    folder: Path, progress: Progress | None = None
) -> tuple[list[TrainResult], list[CompressResult]]:
    """Train and register every project in `folder` (all files are checked before any
    trains), then compress the champion of each project that has a compression section."""
    from mm_platform.compression.job import compress_project
    from mm_platform.training import train_project

    projects = [load_project(path) for path in project_files(folder)]
    trained = [train_project(project, progress=progress) for project in projects]
    compressed = [
        compress_project(project, progress=progress)
        for project in projects
        if project.compression is not None
    ]
    return trained, compressed
