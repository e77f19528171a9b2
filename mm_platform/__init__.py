"""mm_platform: model management for scikit-learn on MLflow and Evidently.

Importing this package loads neither MLflow nor Evidently; the commands that need them
import them when they run.
"""

from __future__ import annotations

from mm_platform.errors import (
    DataError,
    ExitCode,
    MmError,
    ProjectConfigError,
    RegistryError,
    TrackingError,
)
from mm_platform.project.config import Project, load_project

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "ExitCode",
    "MmError",
    "Project",
    "ProjectConfigError",
    "RegistryError",
    "TrackingError",
    "__version__",
    "load_project",
]
