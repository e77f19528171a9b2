"""`mm drift`: one window of production data against the monitored version's reference.

The job reads the reference (the sample logged with the version: features, target and
its predictions; or `--reference`/`monitoring.reference`), takes the current rows from the
prediction log window (joined with any labels) or from a file, checks them (`window`),
computes drift with Evidently (`mm_platform.monitoring.drift`) and performance on labelled
rows (`performance`), and records everything as one run of experiment
`<project>-monitoring`: tags, flat metrics, the HTML report and a reloadable snapshot
(`report`). Then it posts the configured alert (`alerts`) and applies the retrain policy
(`retrain`). On the Spark engine (`spark_job`) the rows stay in Spark; the run is the same,
tagged `mm.engine=spark`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mm_platform.data.columns import target_name
from mm_platform.errors import ExitCode
from mm_platform.monitoring.alerts import post_alert
from mm_platform.monitoring.estimation import estimated_performance
from mm_platform.monitoring.performance import labelled_rows, performance_metrics
from mm_platform.monitoring.report import (
    REPORT_ARTIFACT,
    SNAPSHOT_ARTIFACT,
    add_to_workspace,
    describe,
)
from mm_platform.monitoring.retrain import apply_retrain_policy
from mm_platform.monitoring.window import (
    Computed,
    Inputs,
    Window,
    check_rows,
    column_options,
    column_specs,
    reference_frame,
    reference_from_file,
    rows_from_file,
    rows_from_log,
    tested_specs,
)
from mm_platform.monitoring.worker import Local, Rendered, Worker
from mm_platform.project.config import monitoring_experiment
from mm_platform.tracking import tags
from mm_platform.tracking.tags import CHAMPION

if TYPE_CHECKING:
    from mm_platform.monitoring.results import ColumnOptions, DriftResult
    from mm_platform.project.config import Project

EXIT_NO_DRIFT = ExitCode.OK
EXIT_DRIFT = ExitCode.DRIFT
EXIT_NOT_ENOUGH_DATA = ExitCode.NOT_ENOUGH_DATA
STATUS_EXIT = {
    "no_drift": EXIT_NO_DRIFT,
    "drift": EXIT_DRIFT,
    "not_enough_data": EXIT_NOT_ENOUGH_DATA,
}


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
    current_path: Path | str | None = None,
    alias: str | None = CHAMPION,
    version: str | None = None,
    log_root: str | None = None,
    retrain: bool = True,
    engine: str | None = None,
    reference: str | None = None,
    evidently: Local | Worker | None = None,
) -> DriftOutcome:
    """Run the drift job for one window (or one file) and record it; see the module doc.
    `engine` (pandas or spark) and `reference` (a file, folder or, on Spark, a table)
    default to the project's `monitoring.engine` and `monitoring.reference`. `evidently`:
    where drift and report are computed (default: a `Worker` started here on the pandas
    engine, `Local` otherwise; a caller running many windows passes `Local()`); the job
    closes it."""
    try:
        window = Window.of(
            project, start=start, end=end, current_path=current_path, alias=alias,
            version=version, log_root=log_root, engine=engine, reference=reference,
        )  # fmt: skip
    except BaseException:
        if evidently is not None:
            evidently.close()
        raise
    # Evidently loads in a second process while this one loads the version and scores,
    # unless this process has it already (a notebook, a test session, a second window)
    use_worker = (
        window.engine == "pandas"
        and not project.monitoring.workspace
        and "evidently" not in sys.modules
    )
    if evidently is None or (isinstance(evidently, Worker) and not use_worker):
        if evidently is not None:
            evidently.close()
        evidently = Worker() if use_worker else Local()
    try:
        return _run(project, window, evidently, version, retrain)
    finally:
        evidently.close()


def _run(
    project: Project, window: Window, evidently: Local | Worker, version: str | None, retrain: bool
) -> DriftOutcome:
    """The job once its window is known and Evidently is loading."""
    from mm_platform import tracking

    tracking.connect()
    model = tracking.resolve_version(
        project.name, alias=window.alias, version=version, source=project.label
    )
    number = str(model.version)
    uri = tracking.verify_model_files(project.name, number)  # a checked local copy
    if window.engine == "spark":
        from mm_platform.monitoring.spark_job import spark_inputs

        inputs = spark_inputs(project, window, model, uri)
    else:
        inputs = _pandas_inputs(project, window, model, uri)
    outcome = DriftOutcome(
        project.name, number, window.alias or None, window.start, window.end, "no_drift", "",
        inputs.n_current, "",
    )  # fmt: skip
    if _record(project, window, outcome, inputs, evidently):
        _decide(project, outcome, window.log_root, retrain)
    return outcome


def _pandas_inputs(project: Project, window: Window, model: Any, uri: str) -> Inputs:
    """The reference, column kinds and current rows of `window` as pandas frames."""
    if window.reference is None:
        reference = reference_frame(project, model, uri)
    else:
        reference = reference_from_file(project, window.reference, uri)
    specs = column_specs(project, uri, reference)
    if window.current_path is not None:
        current = rows_from_file(project, Path(window.current_path), specs, uri)
    else:
        current = rows_from_log(project, window, str(model.version))
    return Inputs(reference, specs, current, len(current))


def _record(
    project: Project, window: Window, outcome: DriftOutcome, inputs: Inputs,
    evidently: Local | Worker,
) -> bool:  # fmt: skip
    """Compute the window's verdict, then write its run (metrics, report and snapshot)
    through the outage-proof writer. False when the window has too few rows to compute
    anything."""
    from mm_platform.tracking.durable import RunSpec, write_command

    number, monitoring = outcome.version, project.monitoring
    stale = _stale_runs(project, number, window.end) if window.current_path is None else []
    started = _now_ms()
    computed = outcome.n_current >= monitoring.min_rows
    spec = RunSpec("drift", window.run_name(number), {}, started, started)
    if computed:
        result, rendered, spec.params = _analyse(project, window, outcome, inputs, evidently)
        spec.metrics = outcome.metrics
        spec.artifacts = {REPORT_ARTIFACT: rendered.html, SNAPSHOT_ARTIFACT: rendered.snapshot_json}
    else:
        outcome.status = "not_enough_data"
        outcome.message = (
            f"{outcome.n_current} rows in the window (minimum {monitoring.min_rows}, "
            "monitoring.min_rows): no drift computed"
        )
        spec.metrics = {"n_current_rows": outcome.n_current}
    spec.tags = {tags.RUN_TYPE: "drift", tags.PROJECT: project.name}
    spec.tags.update(window.tags(project, number))
    spec.tags.update({tags.STATUS: outcome.status, tags.MESSAGE: outcome.message})
    spec.end_ms = _now_ms()

    def write(log: Any) -> tuple[str, str]:
        run_id = log.write_run(spec, log.outer_run_id)
        if log.outer_run_id and log.outer_run_id == os.environ.get("MLFLOW_RUN_ID"):
            # `mlflow run . -e drift`: the run MLflow opened for this job shows its verdict
            log.client.set_tag(log.outer_run_id, tags.STATUS, outcome.status)
        log.step = "end the runs this window replaces"
        for old in stale:  # a job killed on this window: this run replaces it
            log.client.set_tag(old, tags.SUPERSEDED_BY, run_id)
            log.client.set_terminated(old, "KILLED")
        log.step = "finish the drift run"
        log.end_run(spec)
        return run_id, log.runs[spec.part].info.artifact_uri

    where = f"the drift run of {project.name} version {number}"
    outcome.run_id, artifacts = write_command(monitoring_experiment(project), write, what=where)
    if computed:
        outcome.report_uri = f"{artifacts}/{REPORT_ARTIFACT}"
        if monitoring.workspace:
            outcome.decisions.append(add_to_workspace(project, rendered.snapshot, result))
    return computed


def _now_ms() -> int:
    return int(time.time() * 1000)


def _analyse(
    project: Project, window: Window, outcome: DriftOutcome, inputs: Inputs,
    evidently: Local | Worker,
) -> tuple[DriftResult, Rendered, dict[str, Any]]:  # fmt: skip
    """Drift and performance of the window (filled into `outcome`), the Evidently report
    and the run's params."""
    from mm_platform.monitoring.results import metric_key, test_reason

    monitoring, target = project.monitoring, target_name(project)
    options = column_options(project, inputs.specs)
    if inputs.spark is not None:
        from mm_platform.monitoring.spark_job import compute_on_spark

        computed = compute_on_spark(project, window, inputs, options)
        made_here = computed.result  # with Evidently's objects for the report
    else:
        computed = _compute(project, window, inputs, options, evidently)
        made_here = None
    # performance and its estimate while the worker tests the columns
    performance = _performance(project, computed, target)
    estimated, estimate_notes = estimated_performance(project, outcome.version, inputs, performance)
    result = computed.result or evidently.compute_result()
    metrics = result.metrics()
    metrics.update(performance)
    metrics.update(estimated)
    metrics["window_rows"] = outcome.n_current
    outcome.metrics = metrics
    outcome.drifted_columns = [c.spec.name for c in result.columns if c.drifted]
    outcome.status = "drift" if result.detected else "no_drift"
    notes = [*computed.notes, *estimate_notes]
    if computed.reference is None:
        notes.append(f"the reference has no target column '{target}': no target drift, "
                     "no performance on the reference")  # fmt: skip
    outcome.message = "; ".join([describe(result, performance, project), *notes])
    params = {
        **{f"method.{metric_key(c.spec.name)}": c.method for c in result.columns},
        **{f"threshold.{metric_key(c.spec.name)}": c.threshold for c in result.columns},
        **{
            f"test_reason.{metric_key(c.spec.name)}": test_reason(c, options.get(c.spec.name))
            for c in result.columns
        },
        "drift_share_threshold": monitoring.drift_share,
        "min_rows": monitoring.min_rows,
        **computed.params,
    }
    rendered = evidently.report(
        project, performance, computed.labelled, computed.reference, window.end,
        outcome.version, result=made_here,
    )  # fmt: skip
    return result, rendered, params


def _compute(
    project: Project, window: Window, inputs: Inputs, options: dict[str, ColumnOptions],
    evidently: Local | Worker,
) -> Computed:  # fmt: skip
    """Drift of every column on pandas (the target only with enough labels), on a sample of
    `monitoring.sample_rows` rows when the window is larger."""
    monitoring, target = project.monitoring, target_name(project)
    reference, current = inputs.reference, inputs.current
    assert reference is not None and current is not None  # the pandas engine's inputs
    if monitoring.sample_rows and len(current) > monitoring.sample_rows:
        current = current.sample(monitoring.sample_rows, random_state=project.seed)
    current = check_rows(current, inputs.specs, target, window.source)
    has_target = target in reference.columns
    labelled = labelled_rows(current, reference if has_target else current, target)
    tested = tested_specs(inputs.specs, len(labelled) >= monitoring.min_rows)
    evidently.start_compute(
        reference, current, tested, options=options, drift_share=monitoring.drift_share
    )  # collected with evidently.compute_result()
    sample = len(current) if len(current) < inputs.n_current else "none"
    return Computed(None, labelled, reference if has_target else None, len(labelled),
                    {"sample_rows": sample}, [])  # fmt: skip


def _performance(project: Project, computed: Computed, target: str) -> dict[str, float]:
    """The performance metrics; only the current ones when the reference has no target."""
    if computed.reference is not None:
        performance = performance_metrics(project, computed.labelled, computed.reference, target)
    else:
        performance = performance_metrics(project, computed.labelled, computed.labelled, target)
        performance = {
            k: v for k, v in performance.items()
            if not k.startswith("reference_") and k != "performance_drop"
        }  # fmt: skip
    performance["n_labelled_rows"] = float(computed.n_labelled)
    return performance


def _decide(project: Project, outcome: DriftOutcome, log_root: str, retrain: bool) -> None:
    """The alert and the retrain policy, recorded on the window's run as `mm.decisions`."""
    from mm_platform import tracking

    monitoring = project.monitoring
    if outcome.status == "drift" and monitoring.webhook:
        outcome.decisions.append(post_alert(project, outcome))
    if retrain and monitoring.retrain is not None:
        outcome.decisions.append(apply_retrain_policy(project, outcome, log_root))
    if outcome.decisions:
        tracking.set_run_tags(outcome.run_id, {tags.DECISIONS: " | ".join(outcome.decisions)})


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
