"""The monitoring section of a project file: window, schedule, drift tests, retraining."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mm_platform.project.base import StrictModel, parse_duration

DRIFT_METHODS = (
    "anderson", "chisquare", "chisquare_2s", "cramer_von_mises", "ed", "es", "fisher_exact",
    "g_test", "hellinger", "jensenshannon", "kl_div", "ks", "mannw",
    "psi", "t_test", "TVD", "wasserstein", "z", "empirical_mmd",
)  # fmt: skip


class ColumnDrift(StrictModel):
    """How one column's drift is tested; unset keys keep Evidently's own choice."""

    method: Literal[DRIFT_METHODS] | None = None  # type: ignore[valid-type]
    threshold: float | None = Field(None, ge=0)


_ON: list[Literal["drift", "performance", "estimated_performance"]] = ["drift", "performance"]
# metrics a drift job cannot estimate without labels, and why (the others it estimates)
NOT_ESTIMATED = {"r2": "it needs the window's target variance, which no model output gives"}


class Retrain(StrictModel):
    """Fine-tune and hand to the gate when N of the last M windows are flagged."""

    flagged_windows: int = Field(2, ge=1)  # N
    of_last: int = Field(3, ge=1)  # M
    # performance: the drop measured on labelled rows; estimated_performance: the drop
    # estimated without labels (CBPE, DLE)
    on: list[Literal["drift", "performance", "estimated_performance"]] = Field(
        default_factory=lambda: list(_ON), min_length=1
    )
    max_performance_drop: float = Field(0.1, ge=0)  # relative, on the selection metric
    auto_promote: bool = False

    @model_validator(mode="after")
    def _check_window_count(self) -> Retrain:
        if self.flagged_windows > self.of_last:
            raise ValueError(
                f"flagged_windows ({self.flagged_windows}) cannot exceed of_last "
                f"({self.of_last}); it is N of the last M windows"
            )
        return self


def names_path(value: str) -> bool:
    """Whether a `reference:` value names a file or folder rather than a table: it has a
    path separator, a file suffix, or a leading `.` or `~`."""
    return (
        "/" in value
        or "\\" in value
        or value.startswith((".", "~"))
        or value.endswith((".csv", ".parquet", ".pq"))
    )


class Monitoring(StrictModel):
    """Drift jobs: windows, schedule, methods, sampling, alerts and the retrain policy."""

    window: str = "1d"
    schedule: str | None = None  # cron, five fields, UTC: one window per fire time
    min_rows: int = Field(30, ge=2)
    sample_rows: int | None = Field(None, ge=100)
    # the reference sample logged with each trained version: up to this many holdout rows
    reference_rows: int = Field(50_000, ge=100)
    drift_share: float = Field(0.5, gt=0, le=1)
    columns: dict[str, ColumnDrift] = Field(default_factory=dict)
    workspace: str | None = None  # Evidently workspace folder, relative to the project file
    webhook: str | None = None  # POSTed a JSON summary when drift is found
    retrain: Retrain | None = None
    engine: Literal["pandas", "spark"] = "pandas"  # where drift is computed; same scores
    # the reference: a CSV/Parquet file or Parquet folder (relative to the project file) or,
    # on the Spark engine, a table name; None: the sample logged with the version
    reference: str | None = None

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from croniter import croniter

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                f"'{value}' is not a five-field cron expression "
                "(minute hour day-of-month month day-of-week), e.g. '0 * * * *'"
            )
        return value

    @field_validator("webhook")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value

    @field_validator("reference")
    @classmethod
    def _resolve_reference(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or base is None or "://" in value or not names_path(value):
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else Path(base) / path)

    @field_validator("workspace")
    @classmethod
    def _resolve_workspace(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or base is None:
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else Path(base) / path)

    @property
    def window_seconds(self) -> int:
        return parse_duration(self.window)
