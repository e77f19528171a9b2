"""`mm drift`: one window of production data against the monitored version's reference.

The job reads the reference sample logged with the version (features, target and its
predictions), takes the current rows from the prediction log window (joined with any
labels) or from a file, checks them, computes drift with Evidently
(`mm_platform.monitoring.drift`), and records everything as one run of experiment
`<project>-monitoring`: tags, flat metrics, the HTML report and a reloadable snapshot.
Then it posts the configured alert and applies the retrain policy.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mm_platform.errors import DataError, MmError
from mm_platform.modeling.metrics import PROBA_PREFIX, align_labels, score_predictions
from mm_platform.project.catalog import METRICS
from mm_platform.project.config import monitoring_experiment
from mm_platform.serving.batch import (
    conform_file,
    input_spec,
    join_labels,
    read_table,
    target_name,
)
from mm_platform.serving.predlog.journal import recover
from mm_platform.serving.predlog.reader import read_window
from mm_platform.serving.predlog.writer import META
from mm_platform.serving.scoring import raw_model, score

if TYPE_CHECKING:
    from mm_platform.monitoring.drift import ColumnSpec, DriftResult
    from mm_platform.project.config import Project

EXIT_NO_DRIFT = 0
EXIT_DRIFT = 5
EXIT_NOT_ENOUGH_DATA = 6
STATUS_EXIT = {
    "no_drift": EXIT_NO_DRIFT,
    "drift": EXIT_DRIFT,
    "not_enough_data": EXIT_NOT_ENOUGH_DATA,
}
REPORT_ARTIFACT = "drift_report.html"
SNAPSHOT_ARTIFACT = "snapshot.json"
_NUMERIC_TYPES = {"double", "float", "long", "integer"}
_INTEGER_CARDINALITY_LIMIT = 10


@dataclass
class DriftOutcome:
    """What one drift job found and where it is recorded."""

    project: str
    version: str
    alias: str | None
    start: datetime | None
    end: datetime | None
    status: str  # no_drift, drift, not_enough_data
    run_id: str
    n_current: int
    message: str
    report_uri: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    drifted_columns: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return STATUS_EXIT[self.status]


def run_drift(
    project: Project,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    current_path: Path | None = None,
    alias: str | None = "champion",
    version: str | None = None,
    log_root: str | None = None,
    retrain: bool = True,
) -> DriftOutcome:
    """Run the drift job for one window (or one file) and record it; see the module doc."""
    from mm_platform import tracking
    from mm_platform.serving.predlog.writer import log_root as default_log_root

    log_root = log_root or default_log_root(project.serving.prediction_log)
    start, end = _utc(start), _utc(end)
    if current_path is None and (start is None or end is None):
        end = end or datetime.now(timezone.utc)
        start = start or end - timedelta(seconds=project.monitoring.window_seconds)
    if start is not None and end is not None and start >= end:
        raise DataError(f"the window start {start.isoformat()} is not before its end")
    tracking.connect()
    model = tracking.resolve_version(
        project.name, alias=None if version else alias, version=version, source=project.label
    )
    number = str(model.version)
    uri = tracking.verify_model_files(project.name, number)  # a checked local copy
    reference = _reference(project, model, uri)
    specs = column_specs(project, uri, reference)
    target = target_name(project)

    if current_path is not None:
        current, source = _from_file(project, current_path, specs, uri), str(current_path)
    else:
        current = _from_log(project, log_root, number, start, end)
        source = f"prediction log {log_root}"
    window_rows = len(current)
    tags = {
        "mm.model_name": project.name,
        "mm.model_version": number,
        "mm.alias": (alias or "") if not version else "",
        "mm.window_start": start.isoformat() if start else "",
        "mm.window_end": end.isoformat() if end else "",
        "mm.source": source,
    }
    name = f"drift v{number} " + (
        f"{start:%Y-%m-%d %H:%M:%S}..{end:%H:%M:%S}" if start and end else Path(source).name
    )
    outcome = DriftOutcome(
        project.name, number, tags["mm.alias"] or None, start, end, "no_drift", "", window_rows, ""
    )
    monitoring = project.monitoring
    stale = _stale_runs(project, number, end) if current_path is None else []
    with tracking.tracked_run(
        "drift", project.name, name, experiment=monitoring_experiment(project), tags=tags
    ) as run:
        outcome.run_id = run.info.run_id
        for old in stale:  # a job killed on this window: this run replaces it
            tracking.end_stale_run(old, "KILLED", {"mm.superseded_by": outcome.run_id})
        if window_rows < monitoring.min_rows:
            outcome.status = "not_enough_data"
            outcome.message = (
                f"{window_rows} rows in the window (minimum {monitoring.min_rows}, "
                "monitoring.min_rows): no drift computed"
            )
            tracking.set_tags({"mm.status": outcome.status, "mm.message": outcome.message})
            tracking.log_metrics({"n_current_rows": window_rows})
            return outcome
        if monitoring.sample_rows and window_rows > monitoring.sample_rows:
            current = current.sample(monitoring.sample_rows, random_state=project.seed)
        current = _check(current, specs, target, source)
        result, performance = _compute(project, reference, current, specs, target)
        from mm_platform.monitoring.drift import metric_key

        metrics = result.metrics()
        metrics.update(performance)
        metrics["window_rows"] = window_rows
        outcome.metrics = metrics
        outcome.drifted_columns = [c.spec.name for c in result.columns if c.drifted]
        outcome.status = "drift" if result.detected else "no_drift"
        outcome.message = _describe(result, performance, project)
        tracking.set_tags({"mm.status": outcome.status, "mm.message": outcome.message})
        tracking.log_params(
            {
                **{f"method.{metric_key(c.spec.name)}": c.method for c in result.columns},
                **{f"threshold.{metric_key(c.spec.name)}": c.threshold for c in result.columns},
                "drift_share_threshold": monitoring.drift_share,
                "sample_rows": len(current) if len(current) < window_rows else "none",
                "min_rows": monitoring.min_rows,
            }
        )
        tracking.log_metrics(metrics)
        snapshot = _report(project, result, reference, current, target, end, number)
        outcome.report_uri = tracking.log_text(
            snapshot.get_html_str(as_iframe=False), REPORT_ARTIFACT
        )
        tracking.log_text(snapshot.dumps(), SNAPSHOT_ARTIFACT)
        if monitoring.workspace:
            outcome.decisions.append(_add_to_workspace(project, snapshot, result))
    if outcome.status == "drift" and monitoring.webhook:
        outcome.decisions.append(_alert(project, outcome))
    if retrain and monitoring.retrain is not None:
        outcome.decisions.append(apply_retrain_policy(project, outcome, log_root))
    if outcome.decisions:
        tracking.set_run_tags(outcome.run_id, {"mm.decisions": " | ".join(outcome.decisions)})
    return outcome


def _stale_runs(project: Project, number: str, end: datetime | None) -> list[str]:
    """Runs of this window left RUNNING by a drift job that was killed."""
    from mm_platform import tracking

    if end is None:
        return []
    runs = tracking.recent_runs(
        monitoring_experiment(project),
        f"tags.`mm.run_type` = 'drift' and tags.`mm.model_version` = '{number}' and "
        f"tags.`mm.window_end` = '{end.isoformat()}' and attributes.status = 'RUNNING'",
        100,
    )
    return [run.info.run_id for run in runs]


# --- inputs ---------------------------------------------------------------------------------


def _utc(moment: datetime | None) -> datetime | None:
    """`moment` in UTC; a naive one is taken to be UTC already."""
    if moment is None:
        return None
    return (
        moment.replace(tzinfo=timezone.utc)
        if moment.tzinfo is None
        else moment.astimezone(timezone.utc)
    )


def _reference(project: Project, model: Any, uri: str) -> pd.DataFrame:
    """The reference sample of `model`; for a version without one (compressed), its nearest
    ancestor's features and target with this version's own predictions."""
    from mm_platform import tracking

    artifact = model.tags.get("mm.reference_artifact")
    if artifact:
        return tracking.load_frame(model.run_id, artifact)
    current = model
    for _ in range(20):
        parent = current.tags.get("mm.parent_model_version")
        if not parent:
            break
        current = tracking.resolve_version(project.name, version=parent)
        artifact = current.tags.get("mm.reference_artifact")
        if artifact:
            frame = tracking.load_frame(current.run_id, artifact)
            made = ["prediction", *(c for c in frame.columns if c.startswith(PROBA_PREFIX))]
            frame = frame.drop(columns=made)  # the ancestor's; this version's replace them
            pyfunc = tracking.load_pyfunc(uri)
            scores = score(pyfunc, raw_model(pyfunc), frame.drop(columns=[target_name(project)]))
            return frame.assign(**scores.columns())
    raise DataError(
        f"{project.name} version {model.version} has no reference sample "
        "(mm.reference_artifact), nor has any version it descends from; retrain with mm train"
    )


def column_specs(project: Project, uri: str, reference: pd.DataFrame) -> list[ColumnSpec]:
    """Features with their kinds from the model's signature (and the project's categorical
    list), then the prediction and the target; Evidently infers nothing."""
    from mm_platform import tracking
    from mm_platform.monitoring.drift import ColumnSpec

    target = target_name(project)
    schema = tracking.input_schema(uri)
    if not schema:  # no signature: the reference's own columns and dtypes
        schema = [
            (c, "double" if pd.api.types.is_numeric_dtype(reference[c]) else "string")
            for c in reference.columns
            if c not in (target, "prediction")
        ]
    categorical = set(project.features.categorical)

    def kind_of(name: str, kind: str) -> str:
        if name in categorical or kind not in _NUMERIC_TYPES:
            return "cat"
        if kind in ("long", "integer") and name in reference.columns:
            # Evidently's own rule (evidently.core.datasets.infer_column_type): integers
            # with at most 10 distinct values are categories
            return "cat" if reference[name].nunique() <= _INTEGER_CARDINALITY_LIMIT else "num"
        return "num"

    specs = [ColumnSpec(name, kind_of(name, kind)) for name, kind in schema]
    label_kind = "num" if project.task == "regression" else "cat"
    specs.append(ColumnSpec("prediction", label_kind, "prediction"))
    specs.append(ColumnSpec(target, label_kind, "target"))
    return specs


def _from_log(
    project: Project, log_root: str, number: str, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    """The window's logged rows of version `number`, with labels joined where there are some."""
    recover(log_root, project.name)  # killed writers' acknowledged requests belong to it
    logged = read_window(log_root, "predictions", project.name, start=start, end=end)
    if not len(logged):
        return logged
    logged = logged[logged["model_version"].astype(str) == number]
    labels = read_window(log_root, "labels", project.name)
    if len(labels):
        logged = join_labels(logged, labels, target_name(project))
    return logged.drop(columns=[c for c in META if c in logged.columns]).reset_index(drop=True)


def _from_file(project: Project, path: Path, specs: list[ColumnSpec], uri: str) -> pd.DataFrame:
    """Features (and optionally target and predictions), checked before anything is logged;
    predictions are made with the monitored version when the file has none."""
    from mm_platform import tracking
    from mm_platform.monitoring.drift import check_current

    frame = read_table(path)
    features = [s for s in specs if s.role == "feature"]
    check_current(frame, features, source=str(path))
    if "prediction" not in frame.columns:
        model = tracking.load_pyfunc(uri)
        spec = input_spec(project, tracking.model_input_schema(model))
        known = [c for c in frame.columns if c in {*spec.columns, *spec.ids, *spec.ignored}]
        conformed, _ = conform_file(path, frame[known], spec)
        try:
            scores = score(model, raw_model(model), conformed)
        except Exception as exc:  # MLflow's schema enforcement names the column and type
            message = str(getattr(exc, "message", exc)).splitlines()[0][:300]
            raise DataError(f"{path}: the model refuses this data: {message}") from exc
        frame = frame.reset_index(drop=True).assign(**scores.columns())
    target = target_name(project)
    _check(frame, specs, target, str(path))
    return frame


def _check(
    current: pd.DataFrame, specs: list[ColumnSpec], target: str, source: str
) -> pd.DataFrame:
    from mm_platform.monitoring.drift import check_current

    for role in ("feature", "prediction", "target"):  # features first: they name the fix
        if role != "target" or target in current.columns:
            check_current(current, [s for s in specs if s.role == role], source=source)
    return current


# --- computing and reporting ------------------------------------------------------------


def _compute(
    project: Project,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    specs: list[ColumnSpec],
    target: str,
) -> tuple[DriftResult, dict[str, float]]:
    from mm_platform.monitoring.drift import ColumnOptions, compute

    labelled = _labelled(current, reference, target)
    enough_labels = len(labelled) >= project.monitoring.min_rows
    tested = [s for s in specs if s.role != "target" or enough_labels]
    options = {
        name: ColumnOptions(c.method, c.threshold) for name, c in project.monitoring.columns.items()
    }
    unknown = sorted(set(options) - {s.name for s in specs})
    if unknown:
        raise DataError(
            f"{project.label}: monitoring.columns names {unknown}, which the model does not "
            f"have; its columns are {[s.name for s in specs]}"
        )
    result = compute(
        reference, current, tested, options=options, drift_share=project.monitoring.drift_share
    )
    performance: dict[str, float] = {"n_labelled_rows": float(len(labelled))}
    if enough_labels:
        performance.update(_scores(project, labelled, reference, target, "current_"))
        performance.update(_scores(project, reference, reference, target, "reference_"))
        metric = project.selection.metric
        before, after = performance.get(f"reference_{metric}"), performance.get(f"current_{metric}")
        if before is not None and after is not None:
            larger = METRICS[metric][1]
            drop = (before - after) if larger else (after - before)
            performance["performance_drop"] = drop / abs(before or 1.0)
    return result, performance


def _labelled(current: pd.DataFrame, reference: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rows of `current` with a label, labels in the reference target's dtype (a join
    with unlabelled rows turns integer class labels into floats)."""
    if target not in current.columns:
        return current[:0]
    labelled = current[current[target].notna()]
    wanted = reference[target].dtype
    if labelled[target].dtype != wanted:
        try:
            cast = labelled[target].astype(wanted)
        except (TypeError, ValueError):
            return labelled
        if (cast == labelled[target]).all():  # only a lossless cast (2.0 -> 2, not 2.5)
            labelled = labelled.assign(**{target: cast})
    return labelled


def _scores(
    project: Project, rows: pd.DataFrame, reference: pd.DataFrame, target: str, prefix: str
) -> dict[str, float]:
    """The task's metrics of labelled `rows`, scored as training scored the model: the
    reference's `proba_<class>` columns give the classes in the model's order (the positive
    class of a binary task is the second), and ROC-AUC where `rows` hold them too."""
    columns = [c for c in reference.columns if c.startswith(PROBA_PREFIX)]
    classes = _classes(reference, target, columns)
    y, y_pred, y_score, pos_label = rows[target], rows["prediction"], None, None
    if classes is not None:
        y, y_pred = align_labels(y, classes), align_labels(y_pred, classes)
        pos_label = classes[1] if project.task == "binary" and len(classes) == 2 else None
        if all(c in rows.columns for c in columns):
            probabilities = rows[columns].to_numpy(dtype="float64")
            if not np.isnan(probabilities).any():
                y_score = probabilities[:, 1] if project.task == "binary" else probabilities
    try:
        return score_predictions(
            project.task, y, y_pred, y_score, prefix, pos_label=pos_label, classes=classes
        )
    except ValueError as exc:  # e.g. labels of a type the predictions cannot match
        raise DataError(f"{project.name}: cannot score the labelled rows: {exc}") from exc


def _classes(reference: pd.DataFrame, target: str, columns: list[str]) -> list[Any] | None:
    """The model's classes in its order, as labels of the reference's type, from the names
    of its probability columns (None for a regressor or a reference without them)."""
    if not columns:
        return None
    seen = {str(v): v for v in pd.unique(reference[[target, "prediction"]].to_numpy().ravel())}
    classes = [seen.get(c[len(PROBA_PREFIX) :]) for c in columns]
    if any(c is None for c in classes):
        return None
    return [c.item() if isinstance(c, np.generic) else c for c in classes]


def _describe(result: DriftResult, performance: dict[str, float], project: Project) -> str:
    parts = [
        f"{result.n_drifted} of {len(result.features)} features drifted "
        f"(share {result.drift_share:.2f}, dataset drift at {result.drift_share_threshold:.2f})"
    ]
    for role in ("prediction", "target"):
        column = result.role(role)  # type: ignore[arg-type]
        if column is not None:
            verdict = "drifted" if column.drifted else "stable"
            test = column.display or column.method
            parts.append(f"{role} {verdict} ({test} {column.score:.3g})")
    for failure in result.quality_failures:
        parts.append(f"data quality: {failure.column}: {failure.failure}")
    if "performance_drop" in performance:
        metric = project.selection.metric
        parts.append(
            f"{metric} {performance[f'reference_{metric}']:.4g} -> "
            f"{performance[f'current_{metric}']:.4g} on {int(performance['n_labelled_rows'])} "
            "labelled rows"
        )
    return "; ".join(parts)


def _report(
    project: Project,
    result: DriftResult,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    target: str,
    end: datetime | None,
    number: str,
) -> Any:
    from mm_platform.monitoring.drift import build_report

    performance = None
    labelled = _labelled(current, reference, target)
    if len(labelled) >= project.monitoring.min_rows:
        from evidently import (
            BinaryClassification,
            DataDefinition,
            MulticlassClassification,
            Regression,
        )

        if project.task == "regression":
            definition = DataDefinition(
                regression=[Regression(target=target, prediction="prediction")]
            )
        elif project.task == "binary":
            definition = DataDefinition(
                classification=[BinaryClassification(target=target, prediction_labels="prediction")]
            )
        else:
            definition = DataDefinition(
                classification=[
                    MulticlassClassification(target=target, prediction_labels="prediction")
                ]
            )
        columns = [target, "prediction"]
        performance = (labelled[columns], reference[columns], definition)
    # Evidently's snapshot time is naive UTC
    stamp = end.astimezone(timezone.utc).replace(tzinfo=None) if end else None
    name = f"{project.name} v{number}"
    metadata = {"model": project.name, "version": number}
    try:
        return build_report(
            result, performance=performance, timestamp=stamp, name=name, metadata=metadata
        )
    except Exception:  # e.g. one class only: Evidently cannot compute its ROC curve
        if performance is None:
            raise
    # the drift report still stands; the metrics in the run carry the performance
    return build_report(result, timestamp=stamp, name=name, metadata=metadata)


def _add_to_workspace(project: Project, snapshot: Any, result: DriftResult) -> str:
    """Add the snapshot to the Evidently workspace project `<project>-monitoring`, creating
    it with a drift-over-time dashboard the first time."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel
    from evidently.ui.workspace import Workspace

    folder = project.monitoring.workspace
    workspace = Workspace.create(folder)
    name = monitoring_experiment(project)
    found = workspace.search_project(name)
    if found:
        target = found[0]
    else:
        target = workspace.create_project(name, description=f"Drift of {project.name}")
        lines = [
            PanelMetric(
                legend=c.spec.name, metric="MmColumnDrift", metric_labels={"column": c.spec.name}
            )
            for c in result.columns
            if c.spec.role == "feature"
        ]
        target.dashboard.add_panel(line_plot_panel("Feature drift score", lines), tab="Drift")
        target.dashboard.add_panel(
            line_plot_panel(
                "Prediction drift score",
                [
                    PanelMetric(
                        legend="prediction",
                        metric="MmColumnDrift",
                        metric_labels={"role": "prediction"},
                    )
                ],
            ),
            tab="Drift",
        )
    workspace.add_run(target.id, snapshot)
    return f"snapshot added to Evidently workspace {folder} (project {name})"


def _alert(project: Project, outcome: DriftOutcome) -> str:
    """POST a JSON summary to the configured webhook; a failure is reported, not raised."""
    url = project.monitoring.webhook or ""
    body = {
        "project": project.name,
        "model_version": outcome.version,
        "alias": outcome.alias,
        "status": outcome.status,
        "window_start": outcome.start.isoformat() if outcome.start else None,
        "window_end": outcome.end.isoformat() if outcome.end else None,
        "drift_share": outcome.metrics.get("drift_share"),
        "drifted_columns": outcome.drifted_columns,
        "prediction_drift_score": outcome.metrics.get("prediction_drift_score"),
        "message": outcome.message,
        "mlflow_run_id": outcome.run_id,
        "report": outcome.report_uri,
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    for attempt in range(3):
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return f"alert sent to {url} (HTTP {answer.status})"
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            error = exc
            time.sleep(0.5 * (attempt + 1))
    return f"alert to {url} failed: {error}"


# --- the retrain policy -------------------------------------------------------------------


def apply_retrain_policy(project: Project, outcome: DriftOutcome, log_root: str) -> str:
    """Fine-tune on labelled production data and hand the challenger to the gate when N of
    the last M windows (the latest included) were flagged; return the decision."""
    from mm_platform import tracking

    policy = project.monitoring.retrain
    assert policy is not None
    runs = tracking.recent_runs(
        monitoring_experiment(project),
        f"tags.`mm.run_type` = 'drift' and tags.`mm.model_version` = '{outcome.version}' "
        "and attributes.status = 'FINISHED'",
        policy.of_last,
    )
    flags = [_flagged(run, policy) for run in runs]
    if not flags or not flags[0] or runs[0].info.run_id != outcome.run_id:
        return f"retrain: no (the latest window is not flagged by {', '.join(policy.on)})"
    count = sum(flags)
    if count < policy.flagged_windows:
        return (
            f"retrain: no ({count} of the last {len(flags)} windows flagged; "
            f"needs {policy.flagged_windows} of {policy.of_last})"
        )
    why = f"{count} of the last {len(flags)} windows flagged"
    try:
        from mm_platform.lifecycle.finetuning import finetune_project

        tuned = finetune_project(project, log_root=log_root)
    except MmError as exc:
        return f"retrain: wanted ({why}) but fine-tuning failed: {exc}"
    decision = f"retrain: yes ({why}); fine-tuned version {tuned.version} is @challenger"
    if not policy.auto_promote:
        return decision + "; auto_promote is off, promote it with mm promote"
    from mm_platform.lifecycle.promotion import promote_project

    try:
        gate = promote_project(project, log_root=log_root)
    except MmError as exc:
        return decision + f"; the gate could not run: {exc}"
    verdict = "promoted to @champion" if gate.promoted else "refused by the gate"
    return decision + f"; {verdict}: {'; '.join(gate.reasons)}"


def _flagged(run: Any, policy: Any) -> bool:
    drifted = "drift" in policy.on and run.data.tags.get("mm.status") == "drift"
    drop = run.data.metrics.get("performance_drop")
    worse = "performance" in policy.on and drop is not None and drop > policy.max_performance_drop
    return drifted or worse
