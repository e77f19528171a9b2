"""Foundations of a project file: the strict model base, durations, the dataset sources,
features, the split, and the serving, fine-tuning and promotion sections."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


class StrictModel(BaseModel):
    """A section of a project file: unknown keys are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """Seconds in a duration such as `30m`, `6h`, `1d`, `2w`; ValueError otherwise."""
    match = _DURATION.match(str(text))
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"'{text}' is not a duration; write a positive number and a unit, e.g. 30m, 6h, 1d"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# --- dataset sources -------------------------------------------------------------------


class SyntheticDataset(StrictModel):
    """A seeded generator: `linear` (the seed's y = slope·x + intercept + noise), or sklearn's."""

    source: Literal["synthetic"]
    generator: Literal["linear", "friedman1", "regression", "classification"]
    n_samples: int = Field(1000, ge=10, le=10_000_000)
    n_features: int | None = Field(None, ge=1, le=10_000)
    noise: float | None = Field(None, ge=0)
    slope: float = 3.0
    intercept: float = 2.0
    x_low: float = 0.0
    x_high: float = 10.0
    n_classes: int = Field(2, ge=2, le=100)

    @model_validator(mode="after")
    def _check_generator(self) -> SyntheticDataset:
        if self.generator == "linear" and self.n_features not in (None, 1):
            raise ValueError("the linear generator makes one feature; drop n_features")
        if self.generator == "friedman1" and self.n_features is not None and self.n_features < 5:
            raise ValueError("friedman1 needs n_features >= 5")
        if self.x_high <= self.x_low:
            raise ValueError("x_high must be greater than x_low")
        return self


class SklearnDataset(StrictModel):
    """A dataset bundled inside scikit-learn (none of the ones that download)."""

    source: Literal["sklearn"]
    name: Literal["diabetes", "breast_cancer", "iris", "wine", "digits"]


class FileDataset(StrictModel):
    """A user's CSV or Parquet file with a named target column."""

    source: Literal["file"]
    path: Path
    target: str = Field(min_length=1)
    format: Literal["csv", "parquet"] | None = None

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        value = value.expanduser()
        if base is not None and not value.is_absolute():
            value = Path(base) / value
        return value

    @property
    def file_format(self) -> str:
        """The format, from `format` or else the file suffix."""
        if self.format:
            return self.format
        return "parquet" if self.path.suffix.lower() in (".parquet", ".pq") else "csv"


Dataset = Annotated[SyntheticDataset | SklearnDataset | FileDataset, Field(discriminator="source")]


class Features(StrictModel):
    """Preprocessing (imputation, scaling, encoding) and feature engineering."""

    categorical: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    impute: Literal["mean", "median", "most_frequent", "none"] = "median"
    scale: Literal["standard", "minmax", "robust", "none"] = "standard"
    polynomial_degree: int = Field(1, ge=1, le=4)
    interaction_only: bool = False
    select_k_best: int | None = Field(None, ge=1)


class Split(StrictModel):
    """Holdout split and cross-validation folds."""

    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    cv_folds: int = Field(5, ge=2, le=20)
    stratify: bool = True


class Serving(StrictModel):
    """Where the served model's prediction log and labels live."""

    prediction_log: str | None = Field(
        None, description="folder (relative to the project file) or pyarrow filesystem URI"
    )

    @field_validator("prediction_log")
    @classmethod
    def _resolve_log(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or "://" in value or base is None:
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else Path(base) / path)


class Finetune(StrictModel):
    """Fine-tuning toward the champion: min 1/m Σ L + λ‖θ − θ₀‖²."""

    lam: float = Field(1.0, ge=0)
    epochs: int = Field(20, ge=1, le=10_000)  # MLP: warm-started epochs on the new data
    n_new_trees: int = Field(50, ge=1, le=10_000)  # tree ensembles: trees added


class Promotion(StrictModel):
    """The gate a challenger passes to become champion."""

    min_improvement: float = Field(0.0, ge=-1, le=10)  # relative, on the selection metric
    max_regression: float = Field(0.02, ge=0, le=10)  # relative, on every other metric
    max_size_bytes: int | None = Field(None, ge=1)
    max_latency_ms: float | None = Field(None, gt=0)  # per 1000 rows
    use_production: bool = True  # also evaluate on labelled production data
