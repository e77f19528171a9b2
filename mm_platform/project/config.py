"""Project files: strict pydantic models of `projects/<name>.yaml` and `load_project()`.

Loading a project opens no connection and trains nothing; it only reads and checks YAML.
The models live by section (`base`, `search`, `monitoring`, `schema`) and reading them in
`loading`; this module gathers them, so callers import every name from here.
"""

from __future__ import annotations

from mm_platform.project.base import (
    Dataset,
    Features,
    FileDataset,
    Finetune,
    Promotion,
    Serving,
    SklearnDataset,
    Split,
    StrictModel,
    SyntheticDataset,
    parse_duration,
)
from mm_platform.project.loading import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_NODES,
    MAX_PROJECT_BYTES,
    describe_validation_error,
    load_project,
    project_params,
    resolve_project_path,
)
from mm_platform.project.monitoring import (
    DRIFT_METHODS,
    ColumnDrift,
    Monitoring,
    Retrain,
    names_path,
)
from mm_platform.project.schema import Project, monitoring_experiment
from mm_platform.project.search import (
    Candidate,
    Compression,
    Distill,
    Distribution,
    ParamSpace,
    Prune,
    Quantize,
    Scalar,
    Search,
    Selection,
    Sparsity,
    Student,
)
from mm_platform.project.spark import Spark, check_master

__all__ = [
    "DRIFT_METHODS",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_PROJECT_BYTES",
    "Candidate",
    "ColumnDrift",
    "Compression",
    "Dataset",
    "Distill",
    "Distribution",
    "Features",
    "FileDataset",
    "Finetune",
    "Monitoring",
    "ParamSpace",
    "Project",
    "Promotion",
    "Prune",
    "Quantize",
    "Retrain",
    "Scalar",
    "Search",
    "Selection",
    "Serving",
    "SklearnDataset",
    "Spark",
    "Sparsity",
    "Split",
    "StrictModel",
    "Student",
    "SyntheticDataset",
    "check_master",
    "describe_validation_error",
    "load_project",
    "monitoring_experiment",
    "names_path",
    "parse_duration",
    "project_params",
    "resolve_project_path",
]
