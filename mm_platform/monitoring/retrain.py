"""The retrain policy: after N of the last M windows were flagged, fine-tune on labelled
production data and (optionally) hand the challenger to the promotion gate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mm_platform.errors import MmError
from mm_platform.project.config import monitoring_experiment
from mm_platform.tracking import tags

if TYPE_CHECKING:
    from mm_platform.monitoring.job import DriftOutcome
    from mm_platform.project.config import Project


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
    """Whether a window's run is flagged by one of the policy's `on` reasons: drift found,
    or a relative drop of the selection metric beyond `max_performance_drop`, measured on
    labelled rows (`performance`) or estimated without labels (`estimated_performance`)."""
    if "drift" in policy.on and run.data.tags.get(tags.STATUS) == "drift":
        return True
    drops = {
        "performance": "performance_drop",
        "estimated_performance": "estimated_performance_drop",
    }
    for reason, key in drops.items():
        drop = run.data.metrics.get(key)
        if reason in policy.on and drop is not None and drop > policy.max_performance_drop:
            return True
    return False
