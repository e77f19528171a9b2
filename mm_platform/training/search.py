"""`mm train`: candidates, hyper-parameter search by CV, selection, holdout scoring, registry."""

from __future__ import annotations

import contextlib
import importlib
import itertools
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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

from mm_platform.data.sources import LoadedData, load_dataset
from mm_platform.errors import DataError, ProjectConfigError, TrackingError
from mm_platform.modeling.features import build_pipeline, n_engineered_features
from mm_platform.modeling.metrics import (
    class_probabilities,
    class_scores,
    class_tags,
    cv_scorers,
    cv_sign,
    holdout_metrics,
    latency_ms_per_1k_rows,
    model_classes,
    proba_column,
)
from mm_platform.project.catalog import METRICS, estimator_path, metrics_for
from mm_platform.project.config import (
    Distribution,
    Project,
    monitoring_experiment,
    parse_duration,
    project_params,
)

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
    """What cross-validation said of one trial (or why it failed), and when."""

    trial: Trial
    scores: dict[str, float]
    error: str | None
    start_ms: int
    end_ms: int


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
    alias: str | None  # None: registered without one (a late re-log, see Attempt.register)
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


DEFAULT_RETRY = "2m"  # how long `mm train` waits for a tracking server that went away


@dataclass
class TrainRecord:
    """A finished search and refit, not yet logged: what `mm train` logs and `mm relog`
    logs again. `attempt` keys every write, so logging it twice writes it once."""

    project: Project
    attempt: str
    data_name: str
    data_source: str
    target: str
    X_train: pd.DataFrame
    X_hold: pd.DataFrame
    y_train: pd.Series
    y_hold: pd.Series
    results: list[TrialResult]
    best: int  # index into results
    pipeline: Any
    metrics: dict[str, float]
    size_metrics: dict[str, float]  # n_params, n_nonzero
    history: dict[str, list[float]]
    artifacts: dict[str, bytes]
    start_ms: int
    end_ms: int
    # where the first logging pass went: a re-log goes to the same store, experiment and
    # outer run, or it would start a second set of runs
    tracking_uri: str | None = None
    experiment_id: str | None = None
    outer_run_id: str | None = None
    kept_in: str | None = None  # the pending folder, once kept


def train_project(
    project: Project, progress: Progress | None = None, retry_for: float | None = None
) -> TrainResult:
    """Search every candidate by CV, refit the best, then log it all under one parent run
    and register it. A tracking server that goes away while logging is waited for up to
    `retry_for` seconds (default 2 min); after that the model is kept locally."""
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
    from mm_platform import tracking

    tracking.connect()  # an unusable store fails now, not after the search
    record = fit_project(project, data, trials, progress)
    return log_training(record, retry_for=retry_for, progress=progress)


def fit_project(
    project: Project, data: LoadedData, trials: list[Trial], progress: Progress | None = None
) -> TrainRecord:
    """Cross-validate every trial, refit the best and score it on the holdout; log nothing."""
    import uuid
    from datetime import datetime, timezone

    X_train, X_hold, y_train, y_hold = split_holdout(project, data)
    report = progress or (lambda _desc, _done, _total: None)
    total = len(trials) + 1
    start_ms = _now_ms()
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
    figure_file, figure_png = _figure(project, pipeline, X_hold, y_hold)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
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
        size_metrics=_n_params(pipeline),
        history=_learning_curve(pipeline),
        artifacts={REFERENCE_ARTIFACT: _parquet(reference), figure_file: figure_png},
        start_ms=start_ms,
        end_ms=_now_ms(),
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _parquet(frame: pd.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def log_training(
    record: TrainRecord, *, retry_for: float | None = None, progress: Progress | None = None
) -> TrainResult:
    """Log `record` (runs, datasets, model, version, alias), riding out a tracking server
    that goes away for up to `retry_for` seconds. If it stays away, or the store refuses a
    write, the record is kept in the pending folder and the error says how to re-log it."""
    import mlflow

    from mm_platform import tracking
    from mm_platform.tracking import durable

    project = record.project
    uri = mlflow.get_tracking_uri()  # not connect(): a server gone since the search is waited for
    report = progress or (lambda _desc, _done, _total: None)
    total = len(record.results) + 1
    report(f"{project.name}: log to MLflow", total - 1, total)
    budget = parse_duration(DEFAULT_RETRY) if retry_for is None else retry_for
    state = _Pass()
    try:
        result = durable.replay(
            lambda: _write_attempt(record, uri, state), budget_s=budget, step=lambda: state.step
        )
    except durable.ServerGone as gone:
        registry = _registration_state(state, project.name, gone.step)
        raise TrackingError(
            f"tracking server {tracking.redact_uri(uri)} unreachable for {gone.waited:.0f} s "
            f"({gone.reason}) while trying to {gone.step}; {registry} "
            + _keep(record, "once the server is back, ")
        ) from gone
    except KeyboardInterrupt:
        if state.log is not None:
            state.log.end_open_runs("KILLED", "interrupted (Ctrl-C)")
        print(f"interrupted while trying to {state.step}. {_keep(record)}", file=sys.stderr)
        raise
    except Exception as exc:
        if state.log is not None:
            state.log.end_open_runs("FAILED", f"{type(exc).__name__}: {exc}")
        undone = _undo_version(state, project.name)
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            error: BaseException = tracking.tracking_error(exc, state.step)
        elif isinstance(exc, OSError):  # a full disk or a permission in a temporary folder
            error = TrackingError(f"{exc}")
        else:
            error = exc
        if isinstance(error, TrackingError):
            raise TrackingError(f"{error}.{undone} {_keep(record)}") from exc
        print(f"logging failed while trying to {state.step}. {_keep(record)}", file=sys.stderr)
        raise
    report(f"{project.name}: done", total, total)
    return result


def _keep(record: TrainRecord, when: str = "") -> str:
    """Keep `record` in the pending folder; the sentence that says where and what next."""
    try:
        folder = save_pending(record)
    except Exception as exc:  # keeping it must not hide the error that made it necessary
        return (
            f"Keeping the trained model in {pending_root()} failed too ({exc}); set "
            "MM_PENDING_DIR to a writable folder and train again."
        )
    return (
        f"The trained model is kept in {folder} (its model/ folder loads with "
        f"mlflow.sklearn.load_model); {when}re-log it with: mm relog {folder}"
    )


@dataclass
class _Pass:
    """Where a logging pass is (for messages) and its Attempt (to end its runs on failure)."""

    step: str = "start logging"
    log: Any = None


REGISTERING = "register the model"


def _registration_state(state: _Pass, name: str, step: str) -> str:
    """What the registry holds of this attempt, from what the pass saw."""
    log = state.log
    version = log.version if log is not None else None
    alias = log.alias if log is not None else None
    if version and alias:
        return (
            f"{name} version {version} is registered as @{alias}; only the runs' last "
            "tags and status are missing (do not train again: re-log)."
        )
    if version:
        return (
            f"{name} version {version} exists without its alias until `mm relog` "
            "completes it (serving and promotion keep using the current champion)."
        )
    if step.startswith(REGISTERING):
        return (
            "a version may exist without its alias until `mm relog` completes it "
            "(serving and promotion keep using the current champion)."
        )
    return "no model version was registered."


def _undo_version(state: _Pass, name: str) -> str:
    """Delete a version this attempt registered but could not give its alias (a refused
    alias move, not an outage): no version is left half-registered. Returns a sentence."""
    log = state.log
    if log is None or log.version is None or log.alias is not None:
        return ""
    try:
        log.client.delete_model_version(name, log.version)
    except Exception:
        return f" {name} version {log.version} was created without its alias; delete it or re-log."
    return f" {name} version {log.version} was created without its alias and deleted again."


def _write_attempt(record: TrainRecord, uri: str, state: _Pass) -> TrainResult:
    """One pass over everything `record` logs; every step finds what a pass before it wrote."""
    import os

    import mlflow

    from mm_platform import tracking
    from mm_platform.tracking import durable

    project = record.project
    if record.experiment_id is None:  # the first pass: where `mm train` runs decides
        # the model's writer owns its monitoring experiment: whoever ran `mm drift` first
        # would otherwise own it, and a read-only user would lock the writer out. Made
        # first, so the project's own experiment is the newest (what `mm ui` opens).
        state.step = f"find or create experiment '{monitoring_experiment(project)}'"
        tracking.experiment_id_for(monitoring_experiment(project))
        state.step = f"find or create experiment '{project.name}'"
        outer = os.environ.get("MLFLOW_RUN_ID") or (
            active.info.run_id if (active := mlflow.active_run()) else None
        )
        if outer:
            experiment_id = mlflow.MlflowClient().get_run(outer).info.experiment_id
        else:
            experiment_id = tracking.experiment_id_for(project.name)
        record.tracking_uri = tracking.redact_uri(uri)
        record.experiment_id, record.outer_run_id = experiment_id, outer
    outer, experiment_id = record.outer_run_id, record.experiment_id
    log = durable.Attempt(record.attempt, experiment_id)
    if state.log is not None:  # what an earlier pass got to (for the messages)
        log.version, log.alias = state.log.version, state.log.alias
    state.log = log

    train = tracking.dataset_entity(
        pd.concat([record.X_train, record.y_train], axis=1),
        name=f"{record.data_name}-train",
        source=record.data_source,
        targets=record.target,
    )
    hold = tracking.dataset_entity(
        pd.concat([record.X_hold, record.y_hold], axis=1),
        name=f"{record.data_name}-holdout",
        source=record.data_source,
        targets=record.target,
    )
    best = record.results[record.best]
    common = {"mm.run_type": "train", "mm.project": project.name}
    parent = durable.RunSpec(
        part="parent",
        name=f"train/{project.name}",
        tags={
            **common,
            "mm.dataset_digest": train.digest,
            "mm.holdout_digest": hold.digest,
            "mm.candidate": best.trial.candidate,
        },
        start_ms=record.start_ms,
        end_ms=record.end_ms,
        params={
            **project_params(project),
            "n_trials": len(record.results),
            "n_rows_train": len(record.X_train),
            "n_rows_holdout": len(record.X_hold),
            "n_features": record.X_train.shape[1],
            "candidate": best.trial.candidate,
            "estimator": best.trial.estimator,
            **{f"best.{k}": v for k, v in best.trial.params.items()},
        },
        metrics={**record.metrics, **record.size_metrics},
        history=record.history,
        datasets=[(train.entity, "training"), (hold.entity, "holdout")],
        artifacts=record.artifacts,
    )
    state.step = f"create a run in experiment '{project.name}'"
    parent_id = log.write_run(parent, outer)
    child_ids = []
    for index, result in enumerate(record.results):
        state.step = f"log trial {index + 1} of {len(record.results)}"
        child = _trial_spec(index, result, common)
        child_ids.append(log.write_run(child, parent_id))
        log.end_run(child)
    log.add(parent, tags={"mm.best_child_run_id": child_ids[record.best]})

    state.step = "log the model"
    model_uri, model_id = log.write_model(
        parent_id,
        {k: str(v) for k, v in parent.params.items()},
        lambda mid, rid: tracking.log_sklearn_model(
            record.pipeline, record.X_train, model_id=mid, run_id=rid
        ),
    )
    size = {"size_bytes": float(tracking.artifact_size(model_uri))}
    log.add(parent, metrics=size)
    size.update(record.size_metrics)
    key = f"holdout_{project.selection.metric}"
    holdout = {k: v for k, v in record.metrics.items() if k.startswith("holdout_")}
    state.step = f"{REGISTERING} '{project.name}'"
    version, alias = log.register(
        project.name,
        run_id=parent_id,
        model_uri=model_uri,
        model_id=model_id,
        tags={
            **common,
            "mm.dataset_digest": train.digest,
            "mm.source_run_id": parent_id,
            "mm.candidate": best.trial.candidate,
            "mm.reference_artifact": REFERENCE_ARTIFACT,
            **class_tags(record.pipeline),
            **{f"mm.metric.{k}": f"{v:.6g}" for k, v in {**holdout, **size}.items()},
        },
        description=(
            f"{best.trial.candidate} trained by `mm train` on {record.data_name}; "
            f"{key}={holdout[key]:.4g}"
        ),
        started_ms=record.start_ms,
    )
    state.step = "finish the parent run"
    log.add(parent, tags={"mm.model_version": version, "mm.model_alias": alias or "none"})
    log.end_run(parent)
    primary = f"cv_{project.selection.metric}_mean"
    return TrainResult(
        project=project.name,
        task=project.task,
        run_id=parent_id,
        experiment_id=experiment_id,
        candidate=best.trial.candidate,
        params=best.trial.params,
        selection_metric=project.selection.metric,
        cv_score=best.scores[primary],
        holdout=holdout,
        version=version,
        alias=alias,
        n_trials=len(record.results),
        n_failed=sum(r.error is not None for r in record.results),
        dataset_digest=train.digest,
        tracking_uri=tracking.redact_uri(uri),
    )


def _trial_spec(index: int, result: TrialResult, common: dict[str, str]) -> Any:
    from mm_platform.tracking.durable import RunSpec

    trial = result.trial
    tags = {**common, "mm.candidate": trial.candidate, "mm.trial": "cv"}
    if result.error is not None:
        tags["mm.error"] = result.error
    return RunSpec(
        part=f"trial-{index}",
        name=_run_name(trial),
        tags=tags,
        start_ms=result.start_ms,
        end_ms=result.end_ms,
        params={
            "candidate": trial.candidate,
            "estimator": trial.estimator,
            **{f"model.{k}": v for k, v in trial.params.items()},
        },
        metrics=result.scores,
        status="FAILED" if result.error is not None else "FINISHED",
    )


def pending_root() -> Path:
    """Where trained models wait when they could not be logged (MM_PENDING_DIR)."""
    import os

    return Path(os.environ.get("MM_PENDING_DIR") or "mm_pending")


def save_pending(record: TrainRecord) -> Path:
    """Keep `record` in `<pending root>/<project>-<attempt>/`: record.pkl for `mm relog`
    and model/, an MLflow model folder anyone can load. Returns the folder."""
    import pickle
    import shutil

    from mm_platform import tracking

    if record.kept_in and (Path(record.kept_in) / "record.pkl").is_file():
        return Path(record.kept_in)  # a re-log that failed again: it is already kept there
    folder = pending_root() / f"{record.project.name}-{record.attempt}"
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tracking.save_sklearn_model(record.pipeline, record.X_train, str(staging / "model"))
    with open(staging / "record.pkl", "wb") as fh:
        pickle.dump(record, fh, protocol=pickle.HIGHEST_PROTOCOL)
    staging.rename(folder)
    record.kept_in = str(folder)
    return folder


def load_pending(folder: str | Path) -> TrainRecord:
    """The record `save_pending` kept in `folder`."""
    import pickle

    path = Path(folder) / "record.pkl"
    if not Path(folder).exists():
        raise DataError(
            f"{folder} does not exist (re-logged already? a re-log removes its folder); "
            f"the folders still waiting are under {pending_root()}/"
        )
    if not path.is_file():
        raise DataError(
            f"{folder}: no record.pkl here; give the folder `mm train` named when it could "
            f"not log (they are kept under {pending_root()}/)"
        )
    try:
        with open(path, "rb") as fh:
            record = pickle.load(fh)
    except Exception as exc:
        raise DataError(
            f"{path}: cannot be read ({type(exc).__name__}); it was written by another "
            "version of mm or damaged. Its model/ folder still loads with "
            "mlflow.sklearn.load_model"
        ) from exc
    if not isinstance(record, TrainRecord):
        raise DataError(f"{path}: not a training record kept by `mm train`")
    record.kept_in = str(folder)
    return record


def relog(folder: str | Path, retry_for: float | None = None) -> TrainResult:
    """Log a kept training record; runs and versions written before are completed, not
    repeated. The folder is removed once everything is logged."""
    import fcntl
    import shutil

    from mm_platform import tracking

    record = load_pending(folder)
    with open(Path(folder) / "record.pkl", "rb") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise DataError(f"{folder}: another `mm relog` is logging it right now") from exc
        uri = tracking.redact_uri(tracking.connect())
        if record.tracking_uri is not None and record.tracking_uri != uri:
            raise DataError(
                f"{folder} was being logged to {record.tracking_uri}, not {uri}: set "
                f"MLFLOW_TRACKING_URI to {record.tracking_uri} (with its password, if any) "
                "to complete those runs"
            )
        result = log_training(record, retry_for=retry_for)
        shutil.rmtree(folder)
    with contextlib.suppress(OSError):
        Path(folder).resolve().parent.rmdir()  # the pending root, once empty
    return result


def _cross_validate(trial: Trial, project: Project, X: pd.DataFrame, y: pd.Series) -> TrialResult:
    """Cross-validate one trial; a failing fit fails only that trial."""
    pipeline = build_pipeline(
        project.features, list(X.columns), make_estimator(trial, project), project.task
    )
    scorers = cv_scorers(project.task, y)
    start_ms = _now_ms()
    try:
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
    except Exception as exc:  # MemoryError too: whatever one estimator raises fails only it
        return TrialResult(trial, {}, _one_line(exc), start_ms, _now_ms())
    scores: dict[str, float] = {}
    for metric in scorers:
        values = cv[f"test_{metric}"] * cv_sign(project.task, metric)
        scores[f"cv_{metric}_mean"] = float(np.mean(values))
        scores[f"cv_{metric}_std"] = float(np.std(values))
    scores["cv_fit_seconds"] = float(np.mean(cv["fit_time"]))
    return TrialResult(trial, scores, None, start_ms, _now_ms())


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


def _n_params(pipeline: Any) -> dict[str, float]:
    """`n_params` and `n_nonzero` as compression counts them, where the family has them."""
    from mm_platform.compression.compile import compile_pipeline

    try:
        compiled = compile_pipeline(pipeline)
    except Exception:  # no compressed form (UnsupportedModel) or a bug: counting must never
        return {}  # fail a training run
    return {"n_params": float(compiled.n_params()), "n_nonzero": float(compiled.n_nonzero())}


def _learning_curve(pipeline: Any) -> dict[str, list[float]]:
    """Per-iteration curves the fitted model kept (loss per epoch, ...), as plain floats."""
    model = pipeline.named_steps["model"]
    history: dict[str, Any] = {}
    if getattr(model, "loss_curve_", None) is not None:
        history["train_loss"] = model.loss_curve_
    if getattr(model, "validation_scores_", None) is not None:
        history["validation_score"] = model.validation_scores_
    train_score = getattr(model, "train_score_", None)
    if train_score is not None and len(train_score):
        if type(model).__name__.startswith("HistGradientBoosting"):
            # scores (higher is better; with scoring="loss" the negated loss), per iteration
            history["train_score"] = train_score
            if len(getattr(model, "validation_score_", [])):
                history["validation_score"] = model.validation_score_
        else:  # GradientBoosting: the training loss (deviance) after each stage
            history["train_loss"] = train_score
    return {k: [float(v) for v in values] for k, values in history.items()}


def _figure(project: Project, pipeline: Any, X: pd.DataFrame, y: pd.Series) -> tuple[str, bytes]:
    """The holdout figure as (artifact path, PNG bytes)."""
    import io

    import matplotlib.pyplot as plt

    from mm_platform.modeling import figures

    title = f"{project.name}: holdout"
    y_pred = pipeline.predict(X)
    if project.task == "regression":
        fig = figures.predicted_vs_actual(y, y_pred, title)
        path = "figures/predicted_vs_actual.png"
    else:
        classes = list(pipeline.classes_)
        scores = class_scores(pipeline, X, project.task)
        fig = figures.roc_and_confusion(y, y_pred, scores, classes, title)
        path = "figures/roc_confusion.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return path, buffer.getvalue()


def reference_sample(
    project: Project, pipeline: Any, X: pd.DataFrame, y: pd.Series
) -> pd.DataFrame:
    """Holdout features, target and the model's predictions: the drift jobs' reference.
    A classifier with probabilities adds one float column per class, `proba_<class>`
    (`str(label)`, in `classes_` order)."""
    if len(X) > REFERENCE_MAX_ROWS:
        X = X.sample(REFERENCE_MAX_ROWS, random_state=project.seed)
        y = y.loc[X.index]
    frame = X.reset_index(drop=True).copy()
    frame[str(y.name)] = y.to_numpy()
    frame["prediction"] = pipeline.predict(X)
    if project.task != "regression":
        proba = class_probabilities(pipeline, X)
        if proba is not None:
            for j, label in enumerate(model_classes(pipeline) or []):
                frame[proba_column(label)] = proba[:, j].astype("float64")
    return frame


def metric_names(project: Project) -> list[str]:
    """The holdout metric names this project's runs report."""
    return [f"holdout_{m}" for m in metrics_for(project.task)]
