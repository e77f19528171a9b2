"""`mm train`: candidates, hyper-parameter search by CV, selection, holdout scoring.

Logging what the search found is training/log.py's work; this module logs nothing.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import time
import uuid
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import (
    KFold,
    ParameterGrid,
    ParameterSampler,
    StratifiedKFold,
    cross_validate,
)

from mm_platform.clock import utc_now
from mm_platform.data.sources import LoadedData, load_dataset
from mm_platform.data.splits import split_holdout
from mm_platform.errors import ProjectConfigError
from mm_platform.modeling.features import build_pipeline, n_engineered_features
from mm_platform.modeling.metrics import (
    cv_scorers,
    cv_sign,
    holdout_metrics,
    latency_ms_per_1k_rows,
)
from mm_platform.modeling.reference import (  # noqa: F401  (imported from here too)
    REFERENCE_ARTIFACT,
    reference_sample,
)
from mm_platform.progress import Progress, silent
from mm_platform.project.catalog import METRICS, estimator_path, metrics_for
from mm_platform.project.config import Distribution, Project
from mm_platform.training import artifacts
from mm_platform.training.engines import DEFAULT_ENGINE, check_engine
from mm_platform.training.log import log_training
from mm_platform.training.record import TrainRecord, TrainResult, Trial, TrialResult, now_ms


def estimator_class(name: str, task: str) -> type:
    """Import the sklearn estimator class named `name` in the catalog for `task`."""
    module, cls = estimator_path(name, task).split(":")
    return getattr(importlib.import_module(module), cls)


def _space(value: Any) -> Any:
    """A search-space entry as sklearn's ParameterGrid/ParameterSampler take it."""
    from scipy import stats

    if isinstance(value, Distribution):
        if value.distribution == "uniform":
            return stats.uniform(value.low, value.high - value.low)
        if value.distribution == "loguniform":
            return stats.loguniform(value.low, value.high)
        return stats.randint(int(value.low), int(value.high) + 1)
    values = value if isinstance(value, list) else [value]
    return [tuple(v) if isinstance(v, list) else v for v in values]


def expand_trials(project: Project) -> list[Trial]:
    """Every configuration the search will cross-validate, checked against sklearn's rules."""
    trials: list[Trial] = []
    for index, cand in enumerate(project.candidates):
        cls = estimator_class(cand.estimator, project.task)
        accepted = cls().get_params()
        for key in cand.params:
            if key not in accepted:
                raise ProjectConfigError(
                    f"{project.label}: candidates[{index}].params.{key} is not a parameter of "
                    f"{cls.__name__} (it takes: {', '.join(sorted(accepted))})"
                )
        space = {k: _space(v) for k, v in cand.params.items()}
        if cand.search.kind == "grid":
            points = list(ParameterGrid(space))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # n_iter above a finite grid
                points = list(
                    ParameterSampler(space, n_iter=cand.search.n_iter, random_state=project.seed)
                )
        for params in points:
            params = {k: _plain(v) for k, v in params.items()}
            _check_params(project, index, cls, params)
            trials.append(Trial(cand.label, cand.estimator, params, index))
    return trials


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# Bounds on MLP sizes, checked before anything is fitted: hidden_layer_sizes [[60000, 60000]]
# asks for a 28.8 GB weight matrix, which no fit should try. 10,000 units per layer and
# 10 million hidden-to-hidden weights (80 MB of float64) are far above what a tabular model needs.
MAX_HIDDEN_UNITS = 10_000
MAX_HIDDEN_WEIGHTS = 10_000_000


def _check_params(project: Project, index: int, cls: type, params: dict[str, Any]) -> None:
    from sklearn.utils._param_validation import InvalidParameterError

    where = f"{project.label}: candidates[{index}].params"
    if params.get("metric") == "pyfunc":
        raise ProjectConfigError(
            f"{where}.metric 'pyfunc' needs a Python callable, which a project file cannot "
            "give; use a named metric such as euclidean, manhattan or minkowski"
        )
    if "hidden_layer_sizes" in params:
        _check_hidden_layers(where, params["hidden_layer_sizes"])
    estimator = cls(**params)
    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise ProjectConfigError(f"{where}: {exc}") from exc


def _check_hidden_layers(where: str, sizes: Any) -> None:
    layers = [sizes] if isinstance(sizes, int) else list(sizes)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in layers):
        return  # sklearn's own validation names the bad value
    if any(n > MAX_HIDDEN_UNITS for n in layers):
        raise ProjectConfigError(
            f"{where}.hidden_layer_sizes {list(layers)} has a layer above "
            f"{MAX_HIDDEN_UNITS:,} units (training.MAX_HIDDEN_UNITS); use smaller layers"
        )
    weights = sum(a * b for a, b in itertools.pairwise(layers))
    if weights > MAX_HIDDEN_WEIGHTS:
        raise ProjectConfigError(
            f"{where}.hidden_layer_sizes {list(layers)} needs {weights:,} weights between "
            f"hidden layers, above {MAX_HIDDEN_WEIGHTS:,} (training.MAX_HIDDEN_WEIGHTS); "
            "use smaller or fewer layers"
        )


def make_estimator(trial: Trial, project: Project) -> Any:
    """A fresh estimator for `trial`, seeded by the project when it takes a random_state."""
    cls = estimator_class(trial.estimator, project.task)
    estimator = cls(**trial.params)
    if "random_state" in estimator.get_params() and "random_state" not in trial.params:
        estimator.set_params(random_state=project.seed)
    return estimator


def _cv(project: Project) -> Any:
    folds = project.split.cv_folds
    if project.task != "regression" and project.split.stratify:
        return StratifiedKFold(folds, shuffle=True, random_state=project.seed)
    return KFold(folds, shuffle=True, random_state=project.seed)


def train_project(
    project: Project,
    progress: Progress | None = None,
    retry_for: float | None = None,
    engine: str = DEFAULT_ENGINE,
) -> TrainResult:
    """Search every candidate by CV, refit the best, then log it all under one parent run
    and register it. A tracking server that goes away while logging is waited for up to
    `retry_for` seconds (default 2 min); after that the model is kept locally. With
    `engine="spark"` the CV fits run on the project's Spark cluster (same scores)."""
    check_engine(engine)
    data = load_dataset(project)
    trials = expand_trials(project)
    k = project.features.select_k_best
    if k is not None:
        made = n_engineered_features(project.features, data.X)
        if k > made:
            raise ProjectConfigError(
                f"{project.label}: features.select_k_best is {k} but preprocessing makes only "
                f"{made} features; lower it or drop the key"
            )
    if engine == "spark":  # Spark that cannot start fails now, before any run exists
        from mm_platform.training.engines import start_spark

        start_spark(project)
    from mm_platform import tracking

    tracking.connect()  # an unusable store fails now, not after the search
    record = fit_project(project, data, trials, progress, engine=engine)
    return log_training(record, retry_for=retry_for, progress=progress)


def fit_project(
    project: Project,
    data: LoadedData,
    trials: list[Trial],
    progress: Progress | None = None,
    engine: str = DEFAULT_ENGINE,
) -> TrainRecord:
    """Cross-validate every trial (here, or on Spark with `engine="spark"`), refit the best
    and score it on the holdout; log nothing."""
    X_train, X_hold, y_train, y_hold = split_holdout(project, data)
    report = progress or silent
    total = len(trials) + 1
    start_ms = now_ms()
    if check_engine(engine) == "spark":
        project, results = _search_on_spark(project, trials, X_train, y_train, report)
    else:
        results = []
        for done, trial in enumerate(trials):
            report(f"{project.name}: {trial.candidate}", done, total)
            results.append(_cross_validate(trial, project, X_train, y_train))
    report(f"{project.name}: refit", len(trials), total)
    best = _best(project, results)
    pipeline = build_pipeline(
        project.features, list(X_train.columns), make_estimator(best.trial, project), project.task
    )
    started = time.perf_counter()
    pipeline.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - started
    holdout = holdout_metrics(project.task, pipeline, X_hold, y_hold)
    primary = f"cv_{project.selection.metric}_mean"
    reference = reference_sample(project, pipeline, X_hold, y_hold)
    figure_file, figure_png = artifacts.holdout_figure(project, pipeline, X_hold, y_hold)
    stamp = utc_now().strftime("%Y%m%dT%H%M%S")
    return TrainRecord(
        project=project,
        attempt=f"{stamp}-{uuid.uuid4().hex[:8]}",
        data_name=data.name,
        data_source=data.source,
        target=str(data.y.name),
        X_train=X_train,
        X_hold=X_hold,
        y_train=y_train,
        y_hold=y_hold,
        results=results,
        best=results.index(best),
        pipeline=pipeline,
        metrics={
            **holdout,
            primary: best.scores[primary],
            "fit_seconds": fit_seconds,
            "latency_ms_per_1k_rows": latency_ms_per_1k_rows(pipeline, X_hold),
            "n_failed_trials": sum(r.error is not None for r in results),
        },
        size_metrics=artifacts.size_metrics(pipeline),
        history=artifacts.learning_curve(pipeline),
        artifacts={**artifacts.reference_artifacts(project, reference), figure_file: figure_png},
        start_ms=start_ms,
        end_ms=now_ms(),
        engine=engine,
    )


def _cross_validate(trial: Trial, project: Project, X: pd.DataFrame, y: pd.Series) -> TrialResult:
    """Cross-validate one trial; a failing fit fails only that trial."""
    pipeline = build_pipeline(
        project.features, list(X.columns), make_estimator(trial, project), project.task
    )
    scorers = cv_scorers(project.task, y)
    start_ms = now_ms()
    folds = _fit_folds(pipeline, X, y, scorers, _cv(project))
    if isinstance(folds, str):
        return TrialResult(trial, {}, folds, start_ms, now_ms())
    return TrialResult(trial, _cv_scores(project, scorers, folds), None, start_ms, now_ms())


def _fit_folds(
    pipeline: Any, X: pd.DataFrame, y: pd.Series, scorers: dict[str, Any], cv: Any
) -> dict[str, Any] | str:
    """sklearn's cross_validate of `pipeline` over the folds `cv` gives, or the one line of
    the error that stopped it: whatever one estimator raises fails only its own trial."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter belongs in the scores
            return cross_validate(
                clone(pipeline), X, y, cv=cv, scoring=dict(scorers), error_score="raise"
            )
    except Exception as exc:  # MemoryError too
        return _one_line(exc)


def _cv_scores(project: Project, scorers: dict[str, Any], cv: dict[str, Any]) -> dict[str, float]:
    """A trial's CV metrics (mean and std over folds, in the project's sign) from
    cross_validate's arrays."""
    scores: dict[str, float] = {}
    for metric in scorers:
        values = cv[f"test_{metric}"] * cv_sign(project.task, metric)
        scores[f"cv_{metric}_mean"] = float(np.mean(values))
        scores[f"cv_{metric}_std"] = float(np.std(values))
    scores["cv_fit_seconds"] = float(np.mean(cv["fit_time"]))
    return scores


def _search_on_spark(
    project: Project, trials: list[Trial], X: pd.DataFrame, y: pd.Series, report: Progress
) -> tuple[Project, list[TrialResult]]:
    """Every fold of every trial as one Spark task, all at once; the project as it ran
    (its spark.master is the session's) and each trial's result, as `_cross_validate`
    would give it. The folds are split here, so every task sees the local search's folds."""
    from mm_platform.training.engines import run_on_spark, start_spark

    master = start_spark(project)
    scorers = cv_scorers(project.task, y)
    splits = list(_cv(project).split(X, y))
    pipelines = [
        build_pipeline(project.features, list(X.columns), make_estimator(t, project), project.task)
        for t in trials
    ]
    calls = [
        functools.partial(_fit_folds, pipeline, X, y, scorers, [split])
        for pipeline in pipelines
        for split in splits
    ]
    report(f"{project.name}: {len(calls)} CV fits on Spark ({master})", 0, len(trials) + 1)
    start_ms = now_ms()
    folds = run_on_spark(calls, master)
    end_ms = now_ms()
    results = []
    for index, trial in enumerate(trials):
        mine = folds[index * len(splits) : (index + 1) * len(splits)]
        error = next((f for f in mine if isinstance(f, str)), None)
        if error is not None:
            results.append(TrialResult(trial, {}, error, start_ms, end_ms))
            continue
        cv = {key: np.concatenate([f[key] for f in mine]) for key in mine[0]}  # type: ignore[index]
        results.append(TrialResult(trial, _cv_scores(project, scorers, cv), None, start_ms, end_ms))
    ran_on = project.spark.model_copy(update={"master": master})
    return project.model_copy(update={"spark": ran_on}), results


def _one_line(exc: BaseException, limit: int = 500) -> str:
    """`Type: message` of an estimator's error, its first line only, cut to `limit`."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[:limit] + "..."


def _best(project: Project, results: list[TrialResult]) -> TrialResult:
    ok = [r for r in results if r.error is None]
    if not ok:
        raise ProjectConfigError(
            f"{project.label}: every candidate configuration failed to fit; first error: "
            f"{results[0].error}"
        )
    key = f"cv_{project.selection.metric}_mean"
    _, larger_is_better = METRICS[project.selection.metric]
    return (max if larger_is_better else min)(ok, key=lambda r: r.scores[key])


def metric_names(project: Project) -> list[str]:
    """The holdout metric names this project's runs report."""
    return [f"holdout_{m}" for m in metrics_for(project.task)]
