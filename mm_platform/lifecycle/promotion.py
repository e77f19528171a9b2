"""`mm promote` and `mm rollback`: the champion alias moves only through a recorded gate."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from mm_platform.data.sources import load_dataset
from mm_platform.data.splits import split_holdout
from mm_platform.errors import RegistryError
from mm_platform.modeling.metrics import (
    align_labels,
    class_scores,
    latency_ms_per_1k_rows,
    model_classes,
    relative_loss,
    score_predictions,
)
from mm_platform.project.catalog import METRICS
from mm_platform.serving.batch import labelled_production, target_name

if TYPE_CHECKING:
    from mm_platform.project.config import Project

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


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
            y_prod = production[target].rename(y_hold.name)
            if project.task != "regression":  # Parquet may give "True" for True, 1.0 for 1
                y_prod = align_labels(y_prod, pd.unique(y_hold))
            n_prod = len(production)
            X_hold = pd.concat([X_hold, X_prod], ignore_index=True)
            y_hold = pd.concat([y_hold.reset_index(drop=True), y_prod], ignore_index=True)
    return X_hold, y_hold, len(X_hold) - n_prod, n_prod


def _metrics(project: Project, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    classes = model_classes(model)
    binary = project.task == "binary" and classes is not None and len(classes) == 2
    scores = class_scores(model, X, project.task)
    return score_predictions(
        project.task, y, model.predict(X), scores, pos_label=classes[1] if binary else None
    )


def gate(project: Project, champion: dict[str, float], challenger: dict[str, float]) -> list[str]:
    """Why the challenger may not replace the champion (empty: it passes)."""
    rules = project.promotion
    primary = project.selection.metric
    reasons = []
    if primary not in champion or primary not in challenger:
        return [f"{primary} cannot be computed for both models on this data (no class scores?)"]
    gain = -relative_loss(primary, champion[primary], challenger[primary])
    if gain < rules.min_improvement:
        reasons.append(
            f"{primary} improves by {gain:+.2%}, below the required {rules.min_improvement:+.2%}"
        )
    for metric in champion:
        if metric == primary or metric not in challenger or metric not in METRICS:
            continue
        loss = relative_loss(metric, champion[metric], challenger[metric])
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
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M")
    tags = {"mm.champion_version": champion, "mm.challenger_version": challenger}
    with tracking.tracked_run("promote", project.name, f"promote/{stamp}", tags=tags) as run:
        tracking.log_params({**project.promotion.model_dump(), "n_holdout_rows": n_hold,
                             "n_production_rows": n_prod})  # fmt: skip
        tracking.log_metrics(
            {f"{role}_{k}": v for role, m in figures.items() for k, v in m.items()}
        )
        if promoted:
            moves = {PREVIOUS: champion, CHAMPION: challenger, CHALLENGER: None}
            _move_or_restore(project.name, moves)
        # recorded only once the aliases are where the decision says
        tracking.set_tags({
            "mm.decision": "promoted" if promoted else "refused",
            "mm.reason": "; ".join(reasons) if reasons else "passed every rule of the gate",
        })  # fmt: skip
    return PromotionResult(project.name, champion, challenger, promoted, reasons,
                           figures[CHAMPION], figures[CHALLENGER], n_hold, n_prod,
                           run.info.run_id)  # fmt: skip


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
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M")
    tags = {"mm.from_version": current or "", "mm.to_version": previous}
    with tracking.tracked_run("rollback", project.name, f"rollback/{stamp}", tags=tags):
        moves: dict[str, str | None] = {CHAMPION: previous}
        if current is not None:
            moves[PREVIOUS] = current
        _move_or_restore(project.name, moves)
    return current or "", previous


def _move_or_restore(name: str, moves: dict[str, str | None]) -> None:
    """Set (or, for None, delete) several aliases; if one move fails, put all back."""
    from mm_platform import tracking

    before = {alias: tracking.get_alias_version(name, alias) for alias in moves}
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
