"""`mm promote` and `mm rollback`: the champion alias moves only through a recorded gate."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from mm_platform.clock import readable_stamp, utc_now
from mm_platform.data.sources import load_dataset
from mm_platform.data.splits import split_holdout
from mm_platform.errors import RegistryError
from mm_platform.modeling.metrics import (
    align_labels,
    class_scores,
    latency_ms_per_1k_rows,
    model_classes,
    positive_class,
    relative_change,
    score_predictions,
)
from mm_platform.project.catalog import METRICS
from mm_platform.serving.batch import labelled_production, target_name
from mm_platform.tracking import tags
from mm_platform.tracking.tags import CHALLENGER, CHAMPION, PREVIOUS

if TYPE_CHECKING:
    from mm_platform.project.config import Project


@dataclass
class PromotionResult:
    """The gate's decision, its reasons and both models' figures."""

    project: str
    champion: str
    challenger: str
    promoted: bool
    reasons: list[str]
    champion_metrics: dict[str, float] = field(default_factory=dict)
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    n_holdout: int = 0
    n_production: int = 0
    run_id: str = ""


def evaluation_data(project: Project, log_root: str) -> tuple[pd.DataFrame, pd.Series, int, int]:
    """The original holdout, plus labelled production rows when configured and present."""
    data = load_dataset(project)
    _, X_hold, _, y_hold = split_holdout(project, data)
    n_prod = 0
    if project.promotion.use_production:
        production = labelled_production(project, log_root, part="evaluation")
        if len(production):
            target = target_name(project)
            X_prod = production[list(X_hold.columns)]
            y_prod = production[target].copy()
            y_prod.name = y_hold.name
            if project.task != "regression":  # Parquet may give "True" for True, 1.0 for 1
                y_prod = align_labels(y_prod, pd.unique(y_hold))
            n_prod = len(production)
            X_hold = pd.concat([X_hold, X_prod], ignore_index=True)
            y_hold = pd.concat([y_hold.reset_index(drop=True), y_prod], ignore_index=True)
    return X_hold, y_hold, len(X_hold) - n_prod, n_prod


def _metrics(project: Project, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    scores = class_scores(model, X, project.task)
    pos_label = positive_class(model_classes(model), project.task)
    return score_predictions(project.task, y, model.predict(X), scores, pos_label=pos_label)


def gate(project: Project, champion: dict[str, float], challenger: dict[str, float]) -> list[str]:
    """Why the challenger may not replace the champion (empty: it passes)."""
    rules = project.promotion
    primary = project.selection.metric
    reasons = []
    if primary not in champion or primary not in challenger:
        return [f"{primary} cannot be computed for both models on this data (no class scores?)"]
    gain = -relative_change(primary, champion[primary], challenger[primary])
    if gain < rules.min_improvement:
        reasons.append(
            f"{primary} improves by {gain:+.2%}, below the required {rules.min_improvement:+.2%}"
        )
    for metric in champion:
        if metric == primary or metric not in challenger or metric not in METRICS:
            continue
        loss = relative_change(metric, champion[metric], challenger[metric])
        if loss > rules.max_regression:
            reasons.append(
                f"{metric} regresses by {loss:.2%}, above the allowed {rules.max_regression:.2%}"
            )
    size = challenger.get("size_bytes")
    if rules.max_size_bytes is not None and size is not None and size > rules.max_size_bytes:
        reasons.append(f"size {size:,.0f} B exceeds the budget {rules.max_size_bytes:,} B")
    latency = challenger.get("latency_ms_per_1k_rows")
    if rules.max_latency_ms is not None and latency is not None and latency > rules.max_latency_ms:
        reasons.append(
            f"latency {latency:.2f} ms per 1000 rows exceeds the budget {rules.max_latency_ms} ms"
        )
    return reasons


def promote_project(project: Project, *, log_root: str) -> PromotionResult:
    """Compare challenger and champion on the same data; move `champion` only if the gate passes."""
    from mm_platform import tracking

    tracking.connect()
    champion = tracking.get_alias_version(project.name, CHAMPION)
    challenger = tracking.get_alias_version(project.name, CHALLENGER)
    if champion is None:
        raise RegistryError(
            f"{project.name} has no champion; train one first: mm train {project.label}"
        )
    if challenger is None:
        raise RegistryError(
            f"{project.name} has no challenger to promote; make one with mm train or "
            f"mm finetune {project.label}"
        )
    X, y, n_hold, n_prod = evaluation_data(project, log_root)
    figures: dict[str, dict[str, float]] = {}
    for role, version in ((CHAMPION, champion), (CHALLENGER, challenger)):
        uri = f"models:/{project.name}/{version}"
        model = tracking.load_pyfunc(tracking.verify_model_files(project.name, version))
        metrics = _metrics(project, model, X, y)
        metrics["size_bytes"] = float(tracking.artifact_size(uri))
        metrics["latency_ms_per_1k_rows"] = latency_ms_per_1k_rows(model, X)
        figures[role] = metrics
    reasons = gate(project, figures[CHAMPION], figures[CHALLENGER])
    promoted = not reasons and champion != challenger
    if champion == challenger:
        reasons.append(f"the challenger is the champion already (version {champion})")
    params = {**project.promotion.model_dump(), "n_holdout_rows": n_hold,
              "n_production_rows": n_prod}  # fmt: skip
    spec = _spec(project, "promote", {tags.CHAMPION_VERSION: champion,
                                      tags.CHALLENGER_VERSION: challenger})  # fmt: skip
    spec.params = params
    spec.metrics = {f"{role}_{k}": v for role, m in figures.items() for k, v in m.items()}
    moves = {PREVIOUS: champion, CHAMPION: challenger, CHALLENGER: None} if promoted else {}
    decision = {
        tags.DECISION: "promoted" if promoted else "refused",
        tags.REASON: "; ".join(reasons) if reasons else "passed every rule of the gate",
    }
    run_id = _write(project, spec, moves, decision, "the promotion decision")
    return PromotionResult(project.name, champion, challenger, promoted, reasons,
                           figures[CHAMPION], figures[CHALLENGER], n_hold, n_prod,
                           run_id)  # fmt: skip


def rollback_project(project: Project) -> tuple[str, str]:
    """Point `champion` back at `previous` (and `previous` at the demoted one); return both."""
    from mm_platform import tracking

    tracking.connect()
    previous = tracking.get_alias_version(project.name, PREVIOUS)
    current = tracking.get_alias_version(project.name, CHAMPION)
    if previous is None:
        raise RegistryError(
            f"{project.name} has no previous champion to roll back to (alias @previous is set "
            "by mm promote)"
        )
    spec = _spec(project, "rollback", {tags.FROM_VERSION: current or "",
                                       tags.TO_VERSION: previous})  # fmt: skip
    moves: dict[str, str | None] = {CHAMPION: previous}
    if current is not None:
        moves[PREVIOUS] = current
    _write(project, spec, moves, {}, "the rollback")
    return current or "", previous


def _spec(project: Project, run_type: str, extra: dict[str, str]) -> Any:
    """The RunSpec of a promote or rollback run, named `<run type>/<UTC second>`."""
    from mm_platform.tracking.durable import RunSpec

    now = utc_now()
    stamp = int(now.timestamp() * 1000)
    run_tags = {tags.RUN_TYPE: run_type, tags.PROJECT: project.name, **extra}
    return RunSpec(run_type, f"{run_type}/{readable_stamp(now)}", run_tags, stamp, stamp)


def _write(
    project: Project,
    spec: Any,
    moves: dict[str, str | None],
    decision: dict[str, str],
    what: str,
) -> str:
    """Write the run, move the aliases, then record `decision` (only once the aliases are
    where it says), through the outage-proof writer; returns the run id."""
    from mm_platform import tracking
    from mm_platform.tracking.durable import write_command

    before = {alias: tracking.get_alias_version(project.name, alias) for alias in moves}

    def write(log: Any) -> str:
        run_id = log.write_run(spec, log.outer_run_id)
        log.step = f"move the aliases of model '{project.name}'"
        _move_or_restore(project.name, moves, before)
        log.step = "finish the run"
        if decision:
            log.add(spec, tags=decision)
        log.end_run(spec)
        return run_id

    return write_command(project.name, write, what=what)


def _move_or_restore(
    name: str, moves: dict[str, str | None], before: dict[str, str | None]
) -> None:
    """Set (or, for None, delete) several aliases; if one move fails, put all back where
    they were `before` the command."""
    from mm_platform import tracking

    try:
        for alias, version in moves.items():
            if version is None:
                tracking.delete_alias(name, alias)
            else:
                tracking.move_alias(name, alias, version)
    except BaseException:
        for alias, version in before.items():
            with contextlib.suppress(Exception):
                if version is None:
                    tracking.delete_alias(name, alias)
                else:
                    tracking.move_alias(name, alias, version)
        raise
