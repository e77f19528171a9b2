"""The whole project file: `Project`, its sections checked against each other."""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    Field,
    PrivateAttr,
    model_validator,
)

from mm_platform.project.base import (
    Dataset,
    Features,
    Finetune,
    Promotion,
    Serving,
    Split,
    StrictModel,
    SyntheticDataset,
)
from mm_platform.project.catalog import ESTIMATORS, METRICS, Task, task_family
from mm_platform.project.monitoring import NOT_ESTIMATED, Monitoring
from mm_platform.project.search import Candidate, Compression, Selection
from mm_platform.project.spark import Spark


class Project(StrictModel):
    """One model project: data, features, candidates, selection; registered under `name`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    description: str = ""
    task: Task
    dataset: Dataset
    features: Features = Field(default_factory=Features)
    candidates: list[Candidate] = Field(min_length=1)
    selection: Selection
    split: Split = Field(default_factory=Split)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    compression: Compression | None = None
    serving: Serving = Field(default_factory=Serving)
    finetune: Finetune = Field(default_factory=Finetune)
    promotion: Promotion = Field(default_factory=Promotion)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    spark: Spark = Field(default_factory=Spark)

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> Path | None:
        """The project file this was loaded from, if any."""
        return self._source

    @property
    def label(self) -> str:
        """How errors name this project: its file, else its name."""
        return str(self._source) if self._source else self.name

    @model_validator(mode="after")
    def _check_task(self) -> Project:
        family = task_family(self.task)
        tasks, _ = METRICS[self.selection.metric]
        if self.task not in tasks:
            allowed = ", ".join(m for m, (t, _) in METRICS.items() if self.task in t)
            raise ValueError(
                f"selection.metric '{self.selection.metric}' does not apply to a "
                f"{self.task} task; use one of {allowed}"
            )
        labels: set[str] = set()
        for i, cand in enumerate(self.candidates):
            if family not in ESTIMATORS[cand.estimator]:
                allowed = ", ".join(n for n, p in ESTIMATORS.items() if family in p)
                raise ValueError(
                    f"candidates[{i}].estimator '{cand.estimator}' cannot do {self.task}; "
                    f"use one of {allowed}"
                )
            if cand.label in labels:
                raise ValueError(
                    f"candidates[{i}]: two candidates are called '{cand.label}'; "
                    "give each a distinct name"
                )
            labels.add(cand.label)
        if isinstance(self.dataset, SyntheticDataset):
            gen = self.dataset.generator
            if (gen == "classification") != (family == "classification"):
                raise ValueError(f"dataset.generator '{gen}' does not make {self.task} data")
        return self

    @model_validator(mode="after")
    def _check_estimated_retrain(self) -> Project:
        retrain, metric = self.monitoring.retrain, self.selection.metric
        if (
            retrain is not None
            and "estimated_performance" in retrain.on
            and metric in NOT_ESTIMATED
        ):
            raise ValueError(
                f"monitoring.retrain.on: estimated_performance cannot act on selection.metric "
                f"'{metric}': {NOT_ESTIMATED[metric]}; use performance, or select another metric"
            )
        return self


def monitoring_experiment(project: Project) -> str:
    """The MLflow experiment that holds a project's drift runs: `<project>-monitoring`."""
    return f"{project.name}-monitoring"
