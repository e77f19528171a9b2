"""One logging pass of a training record: runs, datasets, model, version, alias.

Every write is keyed by the record's attempt (tracking/durable.py), so a pass replayed
after an outage finds what an earlier pass wrote and completes it instead of repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from mm_platform.clock import from_ms, readable_stamp
from mm_platform.modeling.reference import REFERENCE_ARTIFACT
from mm_platform.project.config import monitoring_experiment, project_params
from mm_platform.tracking import tags
from mm_platform.tracking.tags import class_tags
from mm_platform.training.record import TrainRecord, TrainResult, Trial, TrialResult

if TYPE_CHECKING:
    from mm_platform.tracking.durable import Attempt, RunSpec

REGISTERING = "register the model"


@dataclass
class Pass:
    """Where a logging pass is (for messages) and its Attempt (to end its runs on failure)."""

    step: str = "start logging"
    log: Any = None


def registration_state(state: Pass, name: str, step: str) -> str:
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


def undo_version(state: Pass, name: str) -> str:
    """Delete a version this attempt registered but could not give its alias (a refused
    alias move, not an outage): no version is left half-registered. Returns a sentence."""
    from mm_platform import tracking

    log = state.log
    if log is None or log.version is None or log.alias is not None:
        return ""
    try:
        tracking.delete_version(name, log.version)
    except Exception:
        return f" {name} version {log.version} was created without its alias; delete it or re-log."
    return f" {name} version {log.version} was created without its alias and deleted again."


def write_attempt(record: TrainRecord, uri: str, state: Pass) -> TrainResult:
    """One pass over everything `record` logs; every step finds what a pass before it wrote."""
    from mm_platform.tracking import durable

    project = record.project
    if record.experiment_id is None:  # the first pass: where `mm train` runs decides
        _place(record, uri, state)
    log = durable.Attempt(record.attempt, str(record.experiment_id))
    if state.log is not None:  # what an earlier pass got to (for the messages)
        log.version, log.alias = state.log.version, state.log.alias
    state.log = log
    train, hold = _dataset(record, "train"), _dataset(record, "holdout")
    common = {tags.RUN_TYPE: "train", tags.PROJECT: project.name}
    parent = _parent_spec(record, common, train.digest, hold.digest, [train, hold])
    state.step = f"create a run in experiment '{project.name}'"
    parent_id = log.write_run(parent, record.outer_run_id)
    child_ids = []
    for index, result in enumerate(record.results):
        state.step = f"log trial {index + 1} of {len(record.results)}"
        child = trial_spec(index, result, common)
        child_ids.append(log.write_run(child, parent_id))
        log.end_run(child)
    log.add(parent, tags={tags.BEST_CHILD_RUN_ID: child_ids[record.best]})
    version, alias = _model_and_version(record, log, parent, parent_id, common, train.digest, state)
    state.step = "finish the parent run"
    log.add(parent, tags={tags.MODEL_VERSION: version, tags.MODEL_ALIAS: alias or "none"})
    log.end_run(parent)
    return _result(record, parent_id, version, alias, train.digest, uri)


def _place(record: TrainRecord, uri: str, state: Pass) -> None:
    """Decide, once, the store, experiment and outer run every pass of `record` writes to."""
    from mm_platform import tracking

    project = record.project
    # the model's writer owns its monitoring experiment: whoever ran `mm drift` first
    # would otherwise own it, and a read-only user would lock the writer out. Made
    # first, so the project's own experiment is the newest (what `mm ui` opens).
    state.step = f"find or create experiment '{monitoring_experiment(project)}'"
    tracking.experiment_id_for(monitoring_experiment(project))
    state.step = f"find or create experiment '{project.name}'"
    outer = tracking.outer_run()
    if outer:
        outer_id, experiment_id = outer
    else:
        outer_id, experiment_id = None, tracking.experiment_id_for(project.name)
    record.tracking_uri = tracking.redact_uri(uri)
    record.experiment_id, record.outer_run_id = experiment_id, outer_id


def _dataset(record: TrainRecord, part: str) -> Any:
    """The MLflow dataset of the training or holdout part, features and target."""
    from mm_platform import tracking

    X, y = (record.X_train, record.y_train) if part == "train" else (record.X_hold, record.y_hold)
    return tracking.dataset_entity(
        pd.concat([X, y], axis=1),
        name=f"{record.data_name}-{part}",
        source=record.data_source,
        targets=record.target,
    )


def _parent_spec(
    record: TrainRecord, common: dict[str, str], digest: str, hold_digest: str, data: list[Any]
) -> RunSpec:
    """The parent run: the project's settings, the chosen trial, the refit's figures."""
    from mm_platform.tracking.durable import RunSpec

    project, best = record.project, record.best_result
    return RunSpec(
        part="parent",
        name=f"train/{project.name} {readable_stamp(from_ms(record.start_ms))}",
        tags={
            **common,
            tags.DATASET_DIGEST: digest,
            tags.HOLDOUT_DIGEST: hold_digest,
            tags.CANDIDATE: best.trial.candidate,
            tags.ENGINE: record.engine,
        },
        start_ms=record.start_ms,
        end_ms=record.end_ms,
        params={
            **project_params(project),
            "n_trials": str(len(record.results)),
            "n_rows_train": str(len(record.X_train)),
            "n_rows_holdout": str(len(record.X_hold)),
            "n_features": str(record.X_train.shape[1]),
            "candidate": best.trial.candidate,
            "estimator": best.trial.estimator,
            **{f"best.{k}": v for k, v in best.trial.params.items()},
        },
        metrics={**record.metrics, **record.size_metrics},
        history=record.history,
        datasets=[(data[0].entity, "training"), (data[1].entity, "holdout")],
        artifacts=record.artifacts,
    )


def _model_and_version(
    record: TrainRecord,
    log: Attempt,
    parent: RunSpec,
    parent_id: str,
    common: dict[str, str],
    digest: str,
    state: Pass,
) -> tuple[str, str | None]:
    """Log the refit model under the parent run and register it; (version, alias)."""
    from mm_platform import tracking

    project, best = record.project, record.best_result
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
    holdout = _holdout(record)
    state.step = f"{REGISTERING} '{project.name}'"
    return log.register(
        project.name,
        run_id=parent_id,
        model_uri=model_uri,
        model_id=model_id,
        tags={
            **common,
            tags.DATASET_DIGEST: digest,
            tags.SOURCE_RUN_ID: parent_id,
            tags.CANDIDATE: best.trial.candidate,
            tags.REFERENCE_ARTIFACT: REFERENCE_ARTIFACT,
            **class_tags(record.pipeline),
            **{tags.metric_tag(k): f"{v:.6g}" for k, v in {**holdout, **size}.items()},
        },
        description=(
            f"{best.trial.candidate} trained by `mm train` on {record.data_name}; "
            f"{key}={holdout[key]:.4g}"
        ),
        started_ms=record.start_ms,
    )


def _holdout(record: TrainRecord) -> dict[str, float]:
    return {k: v for k, v in record.metrics.items() if k.startswith("holdout_")}


def _result(
    record: TrainRecord, run_id: str, version: str, alias: str | None, digest: str, uri: str
) -> TrainResult:
    from mm_platform import tracking

    project, best = record.project, record.best_result
    return TrainResult(
        project=project.name,
        task=project.task,
        run_id=run_id,
        experiment_id=str(record.experiment_id),
        candidate=best.trial.candidate,
        params=best.trial.params,
        selection_metric=project.selection.metric,
        cv_score=best.scores[f"cv_{project.selection.metric}_mean"],
        holdout=_holdout(record),
        version=version,
        alias=alias,
        n_trials=len(record.results),
        n_failed=record.n_failed,
        dataset_digest=digest,
        tracking_uri=tracking.redact_uri(uri),
    )


def run_name(trial: Trial) -> str:
    """`train/<candidate>/<params>`: the trial's run name, readable in the runs table."""
    shown = ",".join(f"{k}={v}" for k, v in sorted(trial.params.items()))
    return f"train/{trial.candidate}" + (f"/{shown}" if shown else "")[:200]


def trial_spec(index: int, result: TrialResult, common: dict[str, str]) -> RunSpec:
    """The child run of one cross-validated trial (FAILED with its error when it failed)."""
    from mm_platform.tracking.durable import RunSpec

    trial = result.trial
    run_tags = {**common, tags.CANDIDATE: trial.candidate, tags.TRIAL: "cv"}
    if result.error is not None:
        run_tags[tags.ERROR] = result.error
    return RunSpec(
        part=f"trial-{index}",
        name=run_name(trial),
        tags=run_tags,
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
