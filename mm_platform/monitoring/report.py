"""What a drift job shows: the one-line verdict, the Evidently report (drift, plus
performance when the window has labels) and the Evidently workspace entry."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from mm_platform.data.columns import target_name
from mm_platform.project.config import monitoring_experiment

if TYPE_CHECKING:
    from mm_platform.monitoring.results import DriftResult
    from mm_platform.project.config import Project

REPORT_ARTIFACT = "drift_report.html"
SNAPSHOT_ARTIFACT = "snapshot.json"


def describe(result: DriftResult, performance: dict[str, float], project: Project) -> str:
    """The verdict in one line: drifted features, prediction and target, quality, scores."""
    parts = [
        f"{result.n_drifted} of {len(result.features)} features drifted "
        f"(share {result.drift_share:.2f}, dataset drift at {result.drift_share_threshold:.2f})"
    ]
    for role in ("prediction", "target"):
        column = result.role(role)
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


def drift_report(
    project: Project,
    result: DriftResult,
    performance: dict[str, float],
    labelled: pd.DataFrame,
    reference: pd.DataFrame | None,
    end: datetime | None,
    number: str,
) -> Any:
    """The Evidently snapshot of one window of version `number`: the drift, and with
    enough `labelled` rows the `performance` scores the run logs, with their plots."""
    from mm_platform.monitoring.drift import build_report
    from mm_platform.monitoring.performance_report import performance_view

    view = None
    if "current_" + project.selection.metric in performance:
        target = target_name(project)
        view = performance_view(
            project.task, project.selection.metric, performance, labelled, reference, target
        )
    # Evidently's snapshot time is naive UTC
    stamp = end.astimezone(timezone.utc).replace(tzinfo=None) if end else None
    return build_report(
        result,
        performance=view,
        timestamp=stamp,
        name=f"{project.name} v{number}",
        metadata={"model": project.name, "version": number},
    )


def add_to_workspace(project: Project, snapshot: Any, result: DriftResult) -> str:
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
        prediction = PanelMetric(
            legend="prediction", metric="MmColumnDrift", metric_labels={"role": "prediction"}
        )
        target.dashboard.add_panel(
            line_plot_panel("Prediction drift score", [prediction]), tab="Drift"
        )
    workspace.add_run(target.id, snapshot)
    return f"snapshot added to Evidently workspace {folder} (project {name})"
