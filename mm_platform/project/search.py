"""How a project searches for its model and compresses it: candidates, their parameter
spaces, the search, the selection metric, and the compression methods."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from mm_platform.project.base import StrictModel
from mm_platform.project.catalog import ESTIMATORS, METRICS

Scalar = bool | int | float | str | None


# --- candidates and the search ------------------------------------------------------------


class Distribution(StrictModel):
    """A continuous or integer range sampled by random search."""

    distribution: Literal["uniform", "loguniform", "randint"]
    low: float
    high: float

    @model_validator(mode="after")
    def _check_range(self) -> Distribution:
        if self.high <= self.low:
            raise ValueError("high must be greater than low")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


ParamSpace = Distribution | list[Scalar] | list[list[Scalar]] | Scalar


class Search(StrictModel):
    """How a candidate's parameter space is searched by cross-validation."""

    kind: Literal["grid", "random"] = "grid"
    n_iter: int = Field(10, ge=1, le=10_000)


class Candidate(StrictModel):
    """One algorithm and the hyper-parameter space searched for it."""

    estimator: Literal[tuple(ESTIMATORS)]  # type: ignore[valid-type]
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    params: dict[str, ParamSpace] = Field(default_factory=dict)
    search: Search = Field(default_factory=Search)

    @property
    def label(self) -> str:
        """The candidate's name in run names and params (its `name`, else the estimator)."""
        return self.name or self.estimator

    @model_validator(mode="after")
    def _check_space(self) -> Candidate:
        for key, space in self.params.items():
            if isinstance(space, list) and not space:
                raise ValueError(f"params.{key} is an empty list; give at least one value")
            if isinstance(space, Distribution) and self.search.kind == "grid":
                raise ValueError(
                    f"params.{key} is a distribution, which only random search can sample; "
                    "set search.kind: random or give a list of values"
                )
        return self


class Selection(StrictModel):
    """The metric that picks the best candidate by cross-validation."""

    metric: Literal[tuple(METRICS)]  # type: ignore[valid-type]


# --- compression -------------------------------------------------------------------------

Sparsity = Annotated[float, Field(gt=0, lt=1)]


def _no_repeats(values: list[Any]) -> list[Any]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"lists each value once; {repeated} repeat")
    return values


class Prune(StrictModel):
    """Pruning sweeps: magnitude sparsities, L1 proximal lambdas, ensemble sizes."""

    sparsities: list[Sparsity] = Field(default_factory=lambda: [0.5, 0.8, 0.9])
    l1_lambdas: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list)
    ensemble_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    refit_epochs: int = Field(0, ge=0, le=1000)

    @field_validator("sparsities", "l1_lambdas", "ensemble_sizes")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        return _no_repeats(values)


_BITS: list[Literal[8, 16]] = [8, 16]


class Quantize(StrictModel):
    """Quantization sweeps: 8 (int8 with scales) or 16 (float16) bits."""

    bits: list[Literal[8, 16]] = Field(default_factory=lambda: list(_BITS))
    per_channel: list[bool] = Field(default_factory=lambda: [False])

    @field_validator("bits", "per_channel")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        return _no_repeats(values)


class Student(StrictModel):
    """A smaller model trained on the teacher's predictions."""

    kind: Literal["boosting", "mlp", "linear_poly"]
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    n_estimators: int = Field(100, ge=1, le=5000)
    max_depth: int = Field(3, ge=1, le=32)
    learning_rate: float = Field(0.1, gt=0, le=1)
    hidden_layer_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32])
    max_iter: int = Field(300, ge=1, le=10_000)
    degree: int = Field(2, ge=1, le=4)
    alpha: float = Field(1e-3, ge=0)

    @property
    def label(self) -> str:
        """The student's name in run names: `name`, else its kind."""
        return self.name or self.kind


class Distill(StrictModel):
    """Distillation: students fit to the teacher on the training inputs plus jittered copies."""

    students: list[Student] = Field(min_length=1)
    n_jitter_copies: int = Field(2, ge=0, le=50)
    jitter_scale: float = Field(0.05, ge=0, le=10)

    @model_validator(mode="after")
    def _check_names(self) -> Distill:
        labels = [s.label for s in self.students]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise ValueError(
                    f"students[{i}]: two students are called '{label}'; give each a distinct name"
                )
        return self


class Compression(StrictModel):
    """Which compression variants `mm compress` makes of a registered model."""

    prune: Prune | None = None
    quantize: Quantize | None = None
    distill: Distill | None = None
    latency_repeats: int = Field(7, ge=1, le=1000)
