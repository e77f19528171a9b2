"""`mm train`: candidates, hyper-parameter search by CV, selection, holdout scoring, registry."""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
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
    train_test_split,
)

from mm_platform.catalog import METRICS, estimator_path, metrics_for
from mm_platform.config import Distribution, Project, project_params
from mm_platform.data import LoadedData, load_dataset
from mm_platform.errors import ProjectConfigError
from mm_platform.evaluation import cv_scorers, cv_sign, holdout_metrics, latency_ms_per_1k_rows
from mm_platform.features import build_pipeline, n_engineered_features

REFERENCE_ARTIFACT = "reference/reference.parquet"
REFERENCE_MAX_ROWS = 10_000

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Trial:
    """One candidate configuration: an estimator and one point of its search space."""

    candidate: str
    estimator: str
    params: dict[str, Any]
    index: int  # position of the candidate in the project file


@dataclass
class TrialResult:
    """What cross-validation said of one trial (or why it failed)."""

    trial: Trial
    run_id: str
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class TrainResult:
    """The outcome of one `mm train`: the chosen model, its scores and where it is registered."""

    project: str
    task: str
    run_id: str
    experiment_id: str
    candidate: str
    params: dict[str, Any]
    selection_metric: str
    cv_score: float
    holdout: dict[str, float]
    version: str
    alias: str
    n_trials: int
    n_failed: int
    dataset_digest: str
    tracking_uri: str

    @property
    def key_metric(self) -> tuple[str, float]:
        """The holdout value of the selection metric."""
        name = f"holdout_{self.selection_metric}"
        return name, self.holdout[name]


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


def _check_params(project: Project, index: int, cls: type, params: dict[str, Any]) -> None:
    from sklearn.utils._param_validation import InvalidParameterError

    estimator = cls(**params)
    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise ProjectConfigError(f"{project.label}: candidates[{index}].params: {exc}") from exc


def make_estimator(trial: Trial, project: Project) -> Any:
    """A fresh estimator for `trial`, seeded by the project when it takes a random_state."""
    cls = estimator_class(trial.estimator, project.task)
    estimator = cls(**trial.params)
    if "random_state" in estimator.get_params() and "random_state" not in trial.params:
        estimator.set_params(random_state=project.seed)
    return estimator


def _run_name(trial: Trial) -> str:
    shown = ",".join(f"{k}={v}" for k, v in sorted(trial.params.items()))
    return f"train/{trial.candidate}" + (f"/{shown}" if shown else "")[:200]


def _cv(project: Project) -> Any:
    folds = project.split.cv_folds
    if project.task != "regression" and project.split.stratify:
        return StratifiedKFold(folds, shuffle=True, random_state=project.seed)
    return KFold(folds, shuffle=True, random_state=project.seed)


def split_holdout(project: Project, data: LoadedData) -> tuple[pd.DataFrame, ...]:
    """The seeded train/holdout split every run of this project uses."""
    stratify = data.y if project.task != "regression" and project.split.stratify else None
    return tuple(
        train_test_split(
            data.X,
            data.y,
            test_size=project.split.holdout_fraction,
            random_state=project.seed,
            stratify=stratify,
        )
    )


def train_project(project: Project, progress: Progress | None = None) -> TrainResult:
    """Search every candidate by CV under one parent run, refit the best, register it."""
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
    X_train, X_hold, y_train, y_hold = split_holdout(project, data)

    from mm_platform import tracking

    uri = tracking.connect()
    report = progress or (lambda _desc, _done, _total: None)
    total = len(trials) + 1
    with tracking.tracked_run("train", project.name, f"train/{project.name}") as parent:
        tracking.log_params(project_params(project))
        tracking.log_params(
            {
                "n_trials": len(trials),
                "n_rows_train": len(X_train),
                "n_rows_holdout": len(X_hold),
                "n_features": X_train.shape[1],
            }
        )
        target = str(data.y.name)
        digest = tracking.log_dataset(
            pd.concat([X_train, y_train], axis=1),
            name=f"{data.name}-train",
            source=data.source,
            targets=target,
            context="training",
        )
        hold_digest = tracking.log_dataset(
            pd.concat([X_hold, y_hold], axis=1),
            name=f"{data.name}-holdout",
            source=data.source,
            targets=target,
            context="holdout",
        )
        import mlflow

        mlflow.set_tags({"mm.dataset_digest": digest, "mm.holdout_digest": hold_digest})

        results = []
        for done, trial in enumerate(trials):
            report(f"{project.name}: {trial.candidate}", done, total)
            results.append(_cross_validate(trial, project, X_train, y_train))
        report(f"{project.name}: refit + log", len(trials), total)

        best = _best(project, results)
        pipeline = build_pipeline(
            project.features,
            list(X_train.columns),
            make_estimator(best.trial, project),
            project.task,
        )
        started = time.perf_counter()
        pipeline.fit(X_train, y_train)
        fit_seconds = time.perf_counter() - started
        holdout = holdout_metrics(project.task, pipeline, X_hold, y_hold)
        primary = f"cv_{project.selection.metric}_mean"

        tracking.log_params({"candidate": best.trial.candidate, "estimator": best.trial.estimator})
        tracking.log_params(best.trial.params, prefix="best.")
        tracking.log_metrics(
            {
                **holdout,
                primary: best.scores[primary],
                "fit_seconds": fit_seconds,
                "latency_ms_per_1k_rows": latency_ms_per_1k_rows(pipeline, X_hold),
                "n_failed_trials": sum(r.error is not None for r in results),
            }
        )
        mlflow.set_tags({"mm.best_child_run_id": best.run_id, "mm.candidate": best.trial.candidate})
        _log_learning_curve(pipeline)
        _log_figure(project, pipeline, X_hold, y_hold)
        tracking.log_frame(_reference_sample(project, pipeline, X_hold, y_hold), REFERENCE_ARTIFACT)
        info = tracking.log_sklearn_model(pipeline, X_train, method="predict")
        size = {"size_bytes": float(tracking.artifact_size(info.model_uri)), **_n_params(pipeline)}
        tracking.log_metrics(size)
        key = f"holdout_{project.selection.metric}"
        version, alias = tracking.register_with_alias(
            project.name,
            model_uri=info.model_uri,
            run_id=parent.info.run_id,
            model_id=info.model_id,
            tags={
                "mm.run_type": "train",
                "mm.project": project.name,
                "mm.dataset_digest": digest,
                "mm.source_run_id": parent.info.run_id,
                "mm.candidate": best.trial.candidate,
                "mm.reference_artifact": REFERENCE_ARTIFACT,
                **{f"mm.metric.{k}": f"{v:.6g}" for k, v in {**holdout, **size}.items()},
            },
            description=(
                f"{best.trial.candidate} trained by `mm train` on {data.name}; "
                f"{key}={holdout[key]:.4g}"
            ),
        )
        mlflow.set_tags({"mm.model_version": version, "mm.model_alias": alias})
        report(f"{project.name}: done", total, total)
        return TrainResult(
            project=project.name,
            task=project.task,
            run_id=parent.info.run_id,
            experiment_id=parent.info.experiment_id,
            candidate=best.trial.candidate,
            params=best.trial.params,
            selection_metric=project.selection.metric,
            cv_score=best.scores[primary],
            holdout=holdout,
            version=version,
            alias=alias,
            n_trials=len(trials),
            n_failed=sum(r.error is not None for r in results),
            dataset_digest=digest,
            tracking_uri=uri,
        )


def _cross_validate(trial: Trial, project: Project, X: pd.DataFrame, y: pd.Series) -> TrialResult:
    """Cross-validate one trial inside its own child run; a failing fit fails only that child."""
    from mm_platform import tracking

    pipeline = build_pipeline(
        project.features, list(X.columns), make_estimator(trial, project), project.task
    )
    scorers = cv_scorers(project.task)
    try:
        with tracking.tracked_run(
            "train",
            project.name,
            _run_name(trial),
            tags={"mm.candidate": trial.candidate, "mm.trial": "cv"},
        ) as run:
            tracking.log_params({"candidate": trial.candidate, "estimator": trial.estimator})
            tracking.log_params(trial.params, prefix="model.")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter belongs in the scores
                cv = cross_validate(
                    clone(pipeline),
                    X,
                    y,
                    cv=_cv(project),
                    scoring={m: s for m, s in scorers.items()},
                    error_score="raise",
                )
            scores: dict[str, float] = {}
            for metric in scorers:
                values = cv[f"test_{metric}"] * cv_sign(project.task, metric)
                scores[f"cv_{metric}_mean"] = float(np.mean(values))
                scores[f"cv_{metric}_std"] = float(np.std(values))
            scores["cv_fit_seconds"] = float(np.mean(cv["fit_time"]))
            tracking.log_metrics(scores)
            return TrialResult(trial, run.info.run_id, scores)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        return TrialResult(trial, "", error=f"{type(exc).__name__}: {exc}")


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


def _n_params(pipeline: Any) -> dict[str, float]:
    """`n_params` and `n_nonzero` as compression counts them, where the family has them."""
    from mm_platform.compression.compile import compile_pipeline

    try:
        compiled = compile_pipeline(pipeline)
    except Exception:  # no compressed form (UnsupportedModel) or a bug: counting must never
        return {}  # fail a training run
    return {"n_params": float(compiled.n_params()), "n_nonzero": float(compiled.n_nonzero())}


def _log_learning_curve(pipeline: Any) -> None:
    from mm_platform import tracking

    model = pipeline.named_steps["model"]
    history: dict[str, list[float]] = {}
    if getattr(model, "loss_curve_", None) is not None:
        history["train_loss"] = list(model.loss_curve_)
    if getattr(model, "validation_scores_", None) is not None:
        history["validation_score"] = list(model.validation_scores_)
    train_score = getattr(model, "train_score_", None)
    if train_score is not None and len(train_score):
        if type(model).__name__.startswith("HistGradientBoosting"):
            # scores (higher is better; with scoring="loss" the negated loss), per iteration
            history["train_score"] = list(train_score)
            if len(getattr(model, "validation_score_", [])):
                history["validation_score"] = list(model.validation_score_)
        else:  # GradientBoosting: the training loss (deviance) after each stage
            history["train_loss"] = list(train_score)
    if history:
        tracking.log_history(history)


def _log_figure(project: Project, pipeline: Any, X: pd.DataFrame, y: pd.Series) -> None:
    from mm_platform import figures, tracking

    title = f"{project.name}: holdout"
    y_pred = pipeline.predict(X)
    if project.task == "regression":
        fig = figures.predicted_vs_actual(y, y_pred, title)
        tracking.log_figure(fig, "figures/predicted_vs_actual.png")
    else:
        proba = pipeline.predict_proba(X) if hasattr(pipeline, "predict_proba") else None
        if proba is not None and project.task == "binary":
            proba = proba[:, 1]
        classes = list(pipeline.classes_)
        fig = figures.roc_and_confusion(y, y_pred, proba, classes, title)
        tracking.log_figure(fig, "figures/roc_confusion.png")


def _reference_sample(
    project: Project, pipeline: Any, X: pd.DataFrame, y: pd.Series
) -> pd.DataFrame:
    """Holdout features, target and the model's predictions: the drift jobs' reference."""
    if len(X) > REFERENCE_MAX_ROWS:
        X = X.sample(REFERENCE_MAX_ROWS, random_state=project.seed)
        y = y.loc[X.index]
    frame = X.reset_index(drop=True).copy()
    frame[str(y.name)] = y.to_numpy()
    frame["prediction"] = pipeline.predict(X)
    return frame


def metric_names(project: Project) -> list[str]:
    """The holdout metric names this project's runs report."""
    return [f"holdout_{m}" for m in metrics_for(project.task)]
