"""Performance without labels in a drift job: the estimator logged with the version (CBPE
for a classifier, DLE for a regressor; `mm_platform.modeling.estimation`) applied to the
window's rows, logged as `estimated_current_<metric>` with `_lower` and `_upper`, beside
the realised `current_<metric>` (and `estimation_error_<metric>`, estimate minus realised)
where the window has labels.

A version logged without an estimator (a compressed one, whose reference is its
ancestor's rescored with its own predictions, or one trained before estimators were
logged) gets one fitted here on that reference, and the run says so. On Spark the window's
rows reach the driver up to `ESTIMATION_ROWS`, a seeded sample beyond, and the run says so.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from mm_platform.data.columns import target_name
from mm_platform.errors import DataError
from mm_platform.modeling.estimation import (
    ESTIMATOR_ARTIFACT,
    Estimate,
    estimator_from_bytes,
    fit_estimator,
)
from mm_platform.modeling.metrics import relative_change
from mm_platform.project.monitoring import NOT_ESTIMATED
from mm_platform.tracking import tags

if TYPE_CHECKING:
    from mm_platform.modeling.cbpe import CBPE
    from mm_platform.modeling.dle import DLE
    from mm_platform.monitoring.window import Inputs
    from mm_platform.project.config import Project

_log = logging.getLogger(__name__)

ESTIMATION_ROWS = 200_000  # window rows brought to the driver on Spark, at most


def estimated_performance(
    project: Project, number: str, inputs: Inputs, performance: dict[str, float]
) -> tuple[dict[str, float], list[str]]:
    """The estimate metrics of the window (see the module doc) and `estimated_performance_drop`
    of the selection metric against its realised value on the reference; notes for the
    run's message (why there is no estimate, when there is none)."""
    try:
        estimator, notes = _estimator(project, number, inputs)
        rows, sampled = _window_rows(project, inputs, estimator.columns)
        estimates = estimator.estimate(rows)
    except DataError as exc:
        return {}, [f"no performance estimate: {exc}"]
    except Exception as exc:  # e.g. an unreadable estimator file: the drift still stands
        _log.debug("performance estimate failed", exc_info=True)
        return {}, [f"no performance estimate: {type(exc).__name__}: {_first_line(exc)}"]
    metrics = {"estimation_rows": float(len(rows))}
    for name, estimate in estimates.items():
        if math.isfinite(estimate.value):
            metrics.update(estimate_metrics(name, estimate, performance))
    metric = project.selection.metric
    if f"estimated_current_{metric}" in metrics and metric in estimator.reference_:
        before = estimator.reference_[metric]
        after = metrics[f"estimated_current_{metric}"]
        metrics["estimated_performance_drop"] = relative_change(metric, before, after)
        notes.append(f"estimated {metric} {after:.4g} (reference {before:.4g})")
    notes += sampled
    notes += [f"{m} not estimated: {why}" for m, why in NOT_ESTIMATED.items()
              if project.task == "regression" and m in _metrics_of(project)]  # fmt: skip
    return metrics, notes


def estimate_metrics(
    name: str, estimate: Estimate, performance: dict[str, float]
) -> dict[str, float]:
    """`estimated_current_<name>`, its `_lower` and `_upper`, and `estimation_error_<name>`
    when `performance` holds the realised `current_<name>`."""
    key = f"estimated_current_{name}"
    out = {key: estimate.value, f"{key}_lower": estimate.lower, f"{key}_upper": estimate.upper}
    realised = performance.get(f"current_{name}")
    if realised is not None:
        out[f"estimation_error_{name}"] = estimate.value - realised
    return out


def _metrics_of(project: Project) -> list[str]:
    from mm_platform.project.catalog import metrics_for

    return list(metrics_for(project.task))


def _estimator(project: Project, number: str, inputs: Inputs) -> tuple[CBPE | DLE, list[str]]:
    """The estimator logged with version `number`, or one fitted now on the job's reference."""
    from mm_platform import tracking

    model = tracking.resolve_version(project.name, version=number)
    if model.tags.get(tags.REFERENCE_ARTIFACT):  # its own reference: its estimator beside it
        data = tracking.load_artifact_bytes(model.run_id, ESTIMATOR_ARTIFACT)
        if data is not None:
            return estimator_from_bytes(data), []
    reference, target = inputs.reference, target_name(project)
    if reference is None or target not in reference.columns:
        raise DataError(
            f"version {number} has no estimator logged ({ESTIMATOR_ARTIFACT}) and the "
            f"reference has no '{target}' to fit one on"
        )
    fitted = fit_estimator(project.task, reference, target, project.seed)
    return fitted, [f"estimator fitted on the reference by this job (version {number} has "
                    "none logged)"]  # fmt: skip


def _window_rows(
    project: Project, inputs: Inputs, columns: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """The window's rows the estimator reads: all of them on pandas; on Spark up to
    ESTIMATION_ROWS, a seeded sample beyond (said in the notes)."""
    if inputs.spark is None:
        assert inputs.current is not None  # the pandas engine's rows
        return inputs.current, []
    from mm_platform.monitoring.spark_job import run_spark

    frame = inputs.spark.current
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"the window has no column(s) {missing}")
    selected = frame.select(*[f"`{c}`" for c in columns])
    total = int(run_spark(selected.count, "the window"))
    if total > ESTIMATION_ROWS:
        share = min(1.0, 1.1 * ESTIMATION_ROWS / total)
        selected = selected.sample(fraction=share, seed=project.seed).limit(ESTIMATION_ROWS)
    rows: Any = run_spark(selected.toPandas, "the window")
    if len(rows) == total:
        return rows, []
    return rows, [f"performance estimated on a sample of {len(rows)} of {total} rows"]


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""
