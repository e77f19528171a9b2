"""Project files: strict pydantic models of `projects/<name>.yaml` and `load_project()`.

Loading a project opens no connection and trains nothing; it only reads and checks YAML.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mm_platform.errors import ProjectConfigError
from mm_platform.project.catalog import ESTIMATORS, METRICS, Task, task_family

Scalar = bool | int | float | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- dataset sources -------------------------------------------------------------------


class SyntheticDataset(_Strict):
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


class SklearnDataset(_Strict):
    """A dataset bundled inside scikit-learn (none of the ones that download)."""

    source: Literal["sklearn"]
    name: Literal["diabetes", "breast_cancer", "iris", "wine", "digits"]


class FileDataset(_Strict):
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


# --- features and candidates -------------------------------------------------------------


class Features(_Strict):
    """Preprocessing (imputation, scaling, encoding) and feature engineering."""

    categorical: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    impute: Literal["mean", "median", "most_frequent", "none"] = "median"
    scale: Literal["standard", "minmax", "robust", "none"] = "standard"
    polynomial_degree: int = Field(1, ge=1, le=4)
    interaction_only: bool = False
    select_k_best: int | None = Field(None, ge=1)


class Distribution(_Strict):
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


class Search(_Strict):
    """How a candidate's parameter space is searched by cross-validation."""

    kind: Literal["grid", "random"] = "grid"
    n_iter: int = Field(10, ge=1, le=10_000)


class Candidate(_Strict):
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


class Split(_Strict):
    """Holdout split and cross-validation folds."""

    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    cv_folds: int = Field(5, ge=2, le=20)
    stratify: bool = True


class Selection(_Strict):
    """The metric that picks the best candidate by cross-validation."""

    metric: Literal[tuple(METRICS)]  # type: ignore[valid-type]


# --- compression -------------------------------------------------------------------------

Sparsity = Annotated[float, Field(gt=0, lt=1)]


def _no_repeats(values: list[Any]) -> list[Any]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"lists each value once; {repeated} repeat")
    return values


class Prune(_Strict):
    """Pruning sweeps: magnitude sparsities, L1 proximal lambdas, ensemble sizes."""

    sparsities: list[Sparsity] = Field(default_factory=lambda: [0.5, 0.8, 0.9])
    l1_lambdas: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list)
    ensemble_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    refit_epochs: int = Field(0, ge=0, le=1000)

    @field_validator("sparsities", "l1_lambdas", "ensemble_sizes")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        return _no_repeats(values)


class Quantize(_Strict):
    """Quantization sweeps: 8 (int8 with scales) or 16 (float16) bits."""

    bits: list[Literal[8, 16]] = Field(default_factory=lambda: [8, 16])
    per_channel: list[bool] = Field(default_factory=lambda: [False])

    @field_validator("bits", "per_channel")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        return _no_repeats(values)


class Student(_Strict):
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


class Distill(_Strict):
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


class Compression(_Strict):
    """Which compression variants `mm compress` makes of a registered model."""

    prune: Prune | None = None
    quantize: Quantize | None = None
    distill: Distill | None = None
    latency_repeats: int = Field(7, ge=1, le=1000)


class Serving(_Strict):
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


class Finetune(_Strict):
    """Fine-tuning toward the champion: min 1/m Σ L + λ‖θ − θ₀‖²."""

    lam: float = Field(1.0, ge=0)
    epochs: int = Field(20, ge=1, le=10_000)  # MLP: warm-started epochs on the new data
    n_new_trees: int = Field(50, ge=1, le=10_000)  # tree ensembles: trees added


class Promotion(_Strict):
    """The gate a challenger passes to become champion."""

    min_improvement: float = Field(0.0, ge=-1, le=10)  # relative, on the selection metric
    max_regression: float = Field(0.02, ge=0, le=10)  # relative, on every other metric
    max_size_bytes: int | None = Field(None, ge=1)
    max_latency_ms: float | None = Field(None, gt=0)  # per 1000 rows
    use_production: bool = True  # also evaluate on labelled production data


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


DRIFT_METHODS = (
    "anderson", "chisquare", "cramer_von_mises", "ed", "es", "fisher_exact", "g_test",
    "hellinger", "jensenshannon", "kl_div", "ks", "mannw",
    "psi", "t_test", "TVD", "wasserstein", "z", "empirical_mmd",
)  # fmt: skip


class ColumnDrift(_Strict):
    """How one column's drift is tested; unset keys keep Evidently's own choice."""

    method: Literal[DRIFT_METHODS] | None = None  # type: ignore[valid-type]
    threshold: float | None = Field(None, ge=0)


class Retrain(_Strict):
    """Fine-tune and hand to the gate when N of the last M windows are flagged."""

    flagged_windows: int = Field(2, ge=1)  # N
    of_last: int = Field(3, ge=1)  # M
    on: list[Literal["drift", "performance"]] = Field(
        default_factory=lambda: ["drift", "performance"], min_length=1
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


class Monitoring(_Strict):
    """Drift jobs: windows, schedule, methods, sampling, alerts and the retrain policy."""

    window: str = "1d"
    schedule: str | None = None  # cron, five fields, UTC: one window per fire time
    min_rows: int = Field(30, ge=2)
    sample_rows: int | None = Field(None, ge=100)
    drift_share: float = Field(0.5, gt=0, le=1)
    columns: dict[str, ColumnDrift] = Field(default_factory=dict)
    workspace: str | None = None  # Evidently workspace folder, relative to the project file
    webhook: str | None = None  # POSTed a JSON summary when drift is found
    retrain: Retrain | None = None

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


class Project(_Strict):
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


def monitoring_experiment(project: Project) -> str:
    """The MLflow experiment that holds a project's drift runs: `<project>-monitoring`."""
    return f"{project.name}-monitoring"


# --- loading ------------------------------------------------------------------------------


def resolve_project_path(ref: str | Path) -> Path:
    """Return the project file for `ref`: a path, or a bare name looked up in ./projects."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.suffix == "" and len(path.parts) == 1:
        for candidate in (Path("projects") / f"{ref}.yaml", Path("projects") / f"{ref}.yml"):
            if candidate.is_file():
                return candidate
    raise ProjectConfigError(
        f"{ref}: no such project file; pass a path such as projects/diabetes.yaml "
        "(or a name of a file in ./projects)"
    )


# Limits on a project file, enforced while it is parsed, before anything is built from it:
# a few dozen keys is a large project, so these only stop files made to exhaust memory
# (an alias "billion laughs" expands nine aliases nine levels deep to 10^9 nodes).
MAX_PROJECT_BYTES = 1024 * 1024  # 1 MiB
MAX_ALIASES = 100  # *alias references
MAX_NODES = 100_000  # scalars and collections once every alias is expanded
MAX_DEPTH = 32  # nested mappings and lists


def load_project(ref: str | Path) -> Project:
    """Read and validate a project file; relative paths in it resolve against its folder."""
    path = resolve_project_path(ref)
    try:
        size = path.stat().st_size
        if size > MAX_PROJECT_BYTES:
            raise ProjectConfigError(
                f"{path}: the project file is {size:,} bytes, above the limit of "
                f"{MAX_PROJECT_BYTES:,} (1 MiB); a project file holds settings, not data"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectConfigError(f"{path}: cannot read the project file ({exc})") from exc
    try:
        _check_yaml_shape(path, text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProjectConfigError(f"{where}: invalid YAML: {problem}") from exc
    if raw is None:
        raise ProjectConfigError(f"{path}: the project file is empty; see README, 'Project files'")
    if not isinstance(raw, dict):
        raise ProjectConfigError(
            f"{path}: a project file is a mapping of keys (name, task, dataset, ...), "
            f"got a {type(raw).__name__}"
        )
    raw.setdefault("name", path.stem)
    try:
        project = Project.model_validate(raw, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ProjectConfigError(f"{path}: {describe_validation_error(exc)}") from exc
    project._source = path
    return project


def _check_yaml_shape(path: Path, text: str) -> None:
    """Walk the YAML event stream (nothing is constructed) and refuse a file past the
    alias, expanded-size or nesting limits, in one line naming the file and the limit."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    anchors: dict[str, int] = {}  # anchor -> nodes it stands for, expanded
    open_nodes: list[list[Any]] = []  # [anchor, nodes so far] per open collection
    aliases = total = 0

    def add(count: int, new: int) -> None:
        """`count` nodes into the open collection, `new` of them not counted before."""
        nonlocal total
        total += new
        if open_nodes:
            open_nodes[-1][1] += count
        if total > MAX_NODES:
            raise ProjectConfigError(
                f"{path}: the project file expands to more than {MAX_NODES:,} values "
                "(config.MAX_NODES), through its aliases; write the values out"
            )

    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ProjectConfigError(
                    f"{path}: the project file uses more than {MAX_ALIASES} aliases "
                    "(config.MAX_ALIASES); write the values out"
                )
            size = anchors.get(event.anchor, 1)
            add(size, size)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                anchors[event.anchor] = 1
            add(1, 1)
        elif isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append([event.anchor, 0])
            if len(open_nodes) > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise ProjectConfigError(
                    f"{path}:{line}: the project file nests deeper than {MAX_DEPTH} levels "
                    "(config.MAX_DEPTH); a project file needs a handful"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, count = open_nodes.pop()
            if anchor is not None:
                anchors[anchor] = count + 1
            add(count + 1, 1)  # its members were counted as they arrived


def describe_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's errors into one line: the key, what is wrong, what was given."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _clean_loc(first["loc"])
    where = _dotted(loc)
    kind = first["type"]
    given = first.get("input")
    if kind == "extra_forbidden":
        raw_loc = first["loc"]
        tag = raw_loc[1] if len(raw_loc) > 2 and raw_loc[0] == "dataset" else None
        allowed = _allowed_keys(loc[:-1], tag)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        text = f"unknown key '{where}'{hint}"
    elif kind == "missing":
        text = f"required key '{where}' is missing"
    elif kind == "value_error":
        msg = str(first.get("ctx", {}).get("error", first["msg"]))
        text = f"{where}: {msg}" if where else msg
    else:
        text = f"{where}: {first['msg'][0].lower()}{first['msg'][1:]}, got {given!r}"
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text


_TAGS = {"synthetic", "sklearn", "file"}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for i, part in enumerate(loc):
        # pydantic puts the discriminator tag and union member names into locations
        if i > 0 and loc[i - 1] == "dataset" and part in _TAGS:
            continue
        if isinstance(part, str) and (
            part.startswith(("list[", "bool", "int", "float", "str", "Distribution"))
            or part in ("none", "function-after[_check_range(), Distribution]")
        ):
            continue
        out.append(part)
    return tuple(out)


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_DATASETS = {"synthetic": SyntheticDataset, "sklearn": SklearnDataset, "file": FileDataset}


def _allowed_keys(loc: tuple[Any, ...], dataset_tag: str | None) -> list[str]:
    """The keys a model accepts at location `loc` of a project file (for 'unknown key' errors)."""
    model: Any = Project
    for part in loc:
        if isinstance(part, int):
            continue
        if model is Project and part == "dataset":
            model = _DATASETS.get(dataset_tag or "")
        else:
            field = model.model_fields.get(part)
            model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside an annotation (list[X], X | None); for unions, None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Annotated) or (
        origin in (Union, types.UnionType) and len(args) == 1
    ):
        return _model_of(args[0])
    return None


def project_params(project: Project) -> dict[str, str]:
    """The project's settings as flat MLflow params (`dataset.source`, `features.scale`, ...)."""
    data = project.model_dump(
        mode="json",
        exclude={"candidates", "description", "compression", "serving", "finetune", "promotion"},
    )
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            flat[prefix] = str(value)

    walk("", data)
    flat["candidates"] = ",".join(c.label for c in project.candidates)
    return {k: v for k, v in flat.items() if re.fullmatch(r"[\w./ -]+", k)}
