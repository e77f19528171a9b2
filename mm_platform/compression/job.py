"""`mm compress`: every configured variant of a registered model, as runs and versions."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
from sklearn.model_selection import train_test_split

from mm_platform.compression.compile import UnsupportedModel
from mm_platform.compression.methods import Variant, Workspace, make, plan
from mm_platform.data.sources import load_dataset
from mm_platform.data.splits import split_holdout
from mm_platform.errors import DataError, MmError, ProjectConfigError, TrackingError
from mm_platform.modeling.metrics import (
    holdout_metrics,
    latency_ms_per_1k_rows,
    relative_change,
)
from mm_platform.progress import Progress
from mm_platform.tracking import tags

if TYPE_CHECKING:
    from mm_platform.compression.mm_compressed import CompressedModel
    from mm_platform.project.config import Project

MODEL_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)@(?P<alias>[A-Za-z0-9_-]+)$")


@dataclass
class VariantResult:
    """One row of the compression table."""

    method: str
    variant: str
    metrics: dict[str, float] = field(default_factory=dict)
    version: str | None = None
    run_id: str | None = None
    skipped: str | None = None  # the model family cannot have this variant
    failed: str | None = None  # building or logging it raised

    @property
    def made(self) -> bool:
        """True when the variant was built, logged and registered."""
        return not (self.skipped or self.failed)


@dataclass
class CompressResult:
    """The parent that was compressed and what became of each variant."""

    project: str
    parent_version: str
    parent_metrics: dict[str, float]
    primary: str
    run_id: str
    variants: list[VariantResult]


def parse_model_ref(ref: str, project: Project) -> str:
    """The alias in `NAME@alias`, checking NAME is the project's registered model."""
    match = MODEL_REF.match(ref)
    if not match:
        raise ProjectConfigError(
            f"--model {ref!r} is not of the form NAME@alias (e.g. {project.name}@champion)"
        )
    if match["name"] != project.name:
        raise ProjectConfigError(
            f"--model {ref}: {project.label} registers its models as '{project.name}', "
            f"not '{match['name']}'; use {project.name}@{match['alias']}"
        )
    return match["alias"]


@dataclass(frozen=True)
class VariantContext:
    """What every variant is built from and measured against: the methods' workspace, the
    holdout, the parent's metrics, the lineage tags and the latency repeats."""

    ws: Workspace
    X_hold: pd.DataFrame
    y_hold: pd.Series
    parent_metrics: dict[str, float]
    lineage: dict[str, str]
    repeats: int

    @property
    def project(self) -> Project:
        return self.ws.project


@dataclass
class Built:
    """One variant after building and scoring, before anything is written: the model and
    its size-independent metrics, or why there is none."""

    variant: Variant
    model: CompressedModel | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None  # the model family cannot have this variant
    failed: str | None = None  # building or scoring it raised


def compress_project(
    project: Project,
    *,
    alias: str | None = None,
    version: str | None = None,
    progress: Progress | None = None,
) -> CompressResult:
    """Make and score every configured variant of the parent version, then log and register
    them through the outage-proof writer."""
    from mm_platform.compression.record import write_compression

    if project.compression is None:
        raise ProjectConfigError(
            f"{project.label}: has no compression section; add one with prune, quantize "
            "and/or distill (README, 'Compression')"
        )
    variants = plan(project)
    started = int(time.time() * 1000)
    ctx = _context(project, alias, version)
    report = progress or (lambda _d, _i, _n: None)
    built: list[Built] = []
    for i, variant in enumerate(variants):
        report(f"{project.name}: {variant.name}", i, len(variants))
        built.append(build(variant, ctx))
    report(f"{project.name}: done", len(variants), len(variants))
    run_id, results = write_compression(ctx, built, started)
    number = ctx.lineage[tags.PARENT_MODEL_VERSION]
    primary = f"holdout_{project.selection.metric}"
    return CompressResult(project.name, number, ctx.parent_metrics, primary, run_id, results)


def _context(project: Project, alias: str | None, version: str | None) -> VariantContext:
    """The parent version (checked to be a trained model of this very data), the splits
    and the parent's own metrics."""
    from mm_platform import tracking

    assert project.compression is not None
    data = load_dataset(project)
    X_train, X_hold, y_train, y_hold = split_holdout(project, data)
    tracking.connect()
    parent_version = tracking.resolve_version(
        project.name, alias=alias, version=version, source=project.label
    )
    number = str(parent_version.version)
    uri = f"models:/{project.name}/{number}"
    if "sklearn" not in tracking.model_flavors(uri):
        raise TrackingError(
            f"{project.name} version {number} is not a trained sklearn model (it is "
            f"{parent_version.tags.get('mm.run_type', 'unknown')}); compress a version made by "
            "mm train"
        )
    target = str(data.y.name)
    digest = tracking.dataset_digest(pd.concat([X_train, y_train], axis=1), targets=target)
    trained_on = parent_version.tags.get(tags.DATASET_DIGEST)
    if trained_on and trained_on != digest:
        raise DataError(
            f"{project.label}: the training data is not what {project.name} version {number} "
            f"was trained on (digest {digest}, version has {trained_on}), so its holdout "
            f"would not compare; retrain first: mm train {project.label}"
        )
    parent = tracking.load_sklearn_model(tracking.verify_model_files(project.name, number))
    stratify = y_train if project.task != "regression" and project.split.stratify else None
    # validation rows for ensemble pruning come from the training split (the holdout stays
    # untouched for scoring); the parent has seen them, which favours in-sample fits
    _, X_val, _, y_val = train_test_split(
        X_train, y_train, test_size=0.2, random_state=project.seed, stratify=stratify
    )
    repeats = project.compression.latency_repeats
    parent_metrics = holdout_metrics(project.task, parent, X_hold, y_hold)
    parent_metrics["size_bytes"] = tracking.artifact_size(uri)
    parent_metrics["latency_ms_per_1k_rows"] = latency_ms_per_1k_rows(parent, X_hold, repeats)
    lineage = {
        tags.PARENT_MODEL_VERSION: number,
        tags.PARENT_RUN_ID: parent_version.run_id or "",
        tags.DATASET_DIGEST: digest,
    }
    ws = Workspace(project, parent, X_train, y_train, X_val, y_val)
    return VariantContext(ws, X_hold, y_hold, parent_metrics, lineage, repeats)


def build(variant: Variant, ctx: VariantContext) -> Built:
    """Build and score one variant; a failure fails only this variant."""
    try:
        model = make(variant, ctx.ws)
    except UnsupportedModel as exc:
        return Built(variant, skipped=str(exc))
    except MmError:
        raise  # the store or the project is unusable: stop
    except Exception as exc:  # a numerical or library failure while building it
        return Built(variant, failed=f"{type(exc).__name__}: {exc}")
    try:
        return Built(variant, model, variant_metrics(model, ctx))
    except MmError:
        raise
    except Exception as exc:
        return Built(variant, failed=f"{type(exc).__name__}: {exc}")


def variant_params(variant: Variant) -> dict[str, Any]:
    """The variant's settings as run params (a student flattened to `student.<field>`)."""
    params = {k: (v.label if k == "student" else v) for k, v in variant.params.items()}
    if "student" in variant.params:
        params.update(
            {f"student.{k}": v for k, v in variant.params["student"].model_dump().items()}
        )
    return {"method": variant.method, "variant": variant.name, **params}


def variant_metrics(model: CompressedModel, ctx: VariantContext) -> dict[str, float]:
    """Holdout scores, speed and how they compare with the parent's (the size comes when
    the model is logged: `sized`)."""
    parent_metrics = ctx.parent_metrics
    metrics = holdout_metrics(ctx.project.task, model, ctx.X_hold, ctx.y_hold)
    latency = latency_ms_per_1k_rows(model, ctx.X_hold, ctx.repeats)
    metrics.update(
        n_params=model.n_params(),
        n_nonzero=model.n_nonzero(),
        latency_ms_per_1k_rows=latency,
        speedup=parent_metrics["latency_ms_per_1k_rows"] / latency,
    )
    for name in [k for k in metrics if k.startswith("holdout_")]:
        metrics[f"delta_{name}"] = metrics[name] - parent_metrics[name]
    primary = ctx.project.selection.metric
    metrics["relative_loss"] = relative_change(
        primary, parent_metrics[f"holdout_{primary}"], metrics[f"holdout_{primary}"]
    )
    return metrics


def sized(metrics: dict[str, float], ctx: VariantContext, size: int) -> dict[str, float]:
    """`metrics` with the logged model's size and its ratio to the parent's."""
    ratio = ctx.parent_metrics["size_bytes"] / size
    return {**metrics, "size_bytes": size, "compression_ratio": ratio}


def row(method: str, variant: str, m: dict[str, float], version: str | None, primary: str) -> dict:
    return {
        "method": method,
        "variant": variant,
        "version": version,
        "size_bytes": m.get("size_bytes"),
        "compression_ratio": m.get("compression_ratio", 1.0),
        "speedup": m.get("speedup", 1.0),
        primary: m.get(primary),
        "relative_loss": m.get("relative_loss", 0.0),
        "note": "",
    }


def summary_rows(results: list[VariantResult], primary: str) -> list[dict[str, Any]]:
    """Rows for a table: method, variant, size, ratio, speedup, metric, loss, version;
    skipped and failed variants carry only their reason."""
    rows = []
    for r in results:
        if r.made:
            rows.append(row(r.method, r.variant, r.metrics, r.version, primary))
        else:
            reason = f"skipped: {r.skipped}" if r.skipped else f"failed: {r.failed}"
            rows.append({"method": r.method, "variant": r.variant, "note": reason})
    return rows
