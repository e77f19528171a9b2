"""Writing a compression: the parent run with its table and Pareto figure, a child run,
logged model and version per variant, through the keyed, outage-proof writer."""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING

import pandas as pd

from mm_platform.clock import from_ms, readable_stamp
from mm_platform.compression.job import (
    Built,
    VariantContext,
    VariantResult,
    row,
    sized,
    summary_rows,
    variant_params,
)
from mm_platform.project.catalog import METRICS
from mm_platform.tracking import tags
from mm_platform.tracking.tags import class_tags

if TYPE_CHECKING:
    from mm_platform.tracking.durable import Attempt, RunSpec

TABLE_ARTIFACT = "compression/variants.json"
PARETO_ARTIFACT = "compression/pareto.png"


def write_compression(
    ctx: VariantContext, built: list[Built], started_ms: int
) -> tuple[str, list[VariantResult]]:
    """Write the parent run and every variant's run, model and version; returns the parent
    run id and one result per variant."""
    from mm_platform.tracking.durable import RunSpec, write_command

    project, number = ctx.project, ctx.lineage[tags.PARENT_MODEL_VERSION]
    common = {tags.RUN_TYPE: "compress", tags.PROJECT: project.name}
    run_tags = {**common, **ctx.lineage}
    for b in built:
        if b.skipped:
            run_tags[f"mm.skipped.{b.variant.name}"] = b.skipped
        elif b.failed:
            run_tags[f"mm.failed.{b.variant.name}"] = b.failed[:5000]
    parent = RunSpec(
        part="parent",
        name=f"compress/{project.name}@v{number} {readable_stamp(from_ms(started_ms))}",
        tags=run_tags,
        start_ms=started_ms,
        end_ms=int(time.time() * 1000),
        params={"parent_version": number, "n_variants": str(len(built))},
        metrics={f"parent_{k}": v for k, v in ctx.parent_metrics.items()},
    )

    def write(log: Attempt) -> tuple[str, list[VariantResult]]:
        parent_id = log.write_run(parent, log.outer_run_id)
        results = [_write_variant(log, ctx, b, parent) for b in built]
        log.step = "log the variants table and the Pareto figure"
        primary = f"holdout_{project.selection.metric}"
        table = json.dumps([{"path": TABLE_ARTIFACT, "type": "table"}])
        log.add(
            parent,
            tags={"mlflow.loggedArtifacts": table},
            artifacts=_summary(ctx, number, primary, results),
        )
        log.step = "finish the compress run"
        log.end_run(parent)
        return parent_id, results

    what = f"the compression of {project.name} version {number}"
    return write_command(project.name, write, what=what)


def _write_variant(log: Attempt, ctx: VariantContext, b: Built, parent: RunSpec) -> VariantResult:
    """One variant's child run (FAILED with the error when it could not be built), its
    logged model and its version, which gets no alias."""
    from mm_platform import tracking
    from mm_platform.tracking.durable import RunSpec

    variant, project = b.variant, ctx.project
    if b.skipped:
        return VariantResult(variant.method, variant.name, skipped=b.skipped)
    inherited = {**parent.tags, tags.METHOD: variant.method, tags.VARIANT: variant.name}
    run_tags = {
        k: v for k, v in inherited.items() if not k.startswith(("mm.skipped.", "mm.failed."))
    }
    spec = RunSpec(f"variant-{variant.name}", f"compress/{variant.name}", run_tags,
                   parent.start_ms, parent.end_ms)  # fmt: skip
    log.step = f"log variant {variant.name}"
    parent_id = log.runs[parent.part].info.run_id
    if b.failed or b.model is None:
        spec.tags[tags.ERROR], spec.status = b.failed or "not built", "FAILED"
        log.write_run(spec, parent_id)
        log.end_run(spec)
        return VariantResult(variant.method, variant.name, failed=b.failed)
    spec.params, spec.metrics = variant_params(variant), b.metrics
    run_id = log.write_run(spec, parent_id)
    model = b.model
    model_uri, model_id = log.write_model(
        run_id, spec.params,
        lambda mid, _rid: tracking.log_compressed_model(model, ctx.ws.X_train, model_id=mid),
    )  # fmt: skip
    metrics = sized(b.metrics, ctx, tracking.artifact_size(model_uri))
    log.add(spec, metrics=metrics)
    kept = {k: f"{v:.6g}" for k, v in metrics.items() if k.startswith("holdout_")}
    kept.update({k: f"{metrics[k]:.6g}" for k in ("size_bytes", "relative_loss")})
    log.step = f"register variant {variant.name}"
    version, _ = log.register(
        project.name,
        run_id=run_id,
        model_uri=model_uri,
        model_id=model_id,
        assign_alias=False,
        tags={
            **run_tags,
            tags.SOURCE_RUN_ID: run_id,
            **class_tags(model),
            **{f"mm.metric.{k}": v for k, v in kept.items()},
        },
        description=_description(ctx, b, metrics),
    )
    log.end_run(spec)
    return VariantResult(variant.method, variant.name, metrics, version, run_id)


def _description(ctx: VariantContext, b: Built, metrics: dict[str, float]) -> str:
    primary = ctx.project.selection.metric
    return (
        f"{b.variant.name} ({b.variant.method}) of {ctx.project.name} version "
        f"{ctx.lineage['mm.parent_model_version']}: {int(metrics['size_bytes'])} bytes "
        f"({metrics['compression_ratio']:.1f}x smaller), "
        f"relative {primary} loss {metrics['relative_loss']:+.2%}"
    )


def _summary(
    ctx: VariantContext, number: str, primary: str, results: list[VariantResult]
) -> dict[str, bytes]:
    """The variants table (as `mlflow.log_table` writes it) and the Pareto figure."""
    import matplotlib.pyplot as plt

    from mm_platform.modeling.figures import pareto

    project, parent_metrics = ctx.project, ctx.parent_metrics
    rows = [row("parent", f"v{number}", parent_metrics, number, primary)]
    rows += summary_rows(results, primary)
    table = pd.DataFrame(rows).to_json(orient="split", index=False, date_format="iso")
    made = [r for r in results if r.made]
    fig = pareto(
        [(r.variant, r.metrics["size_bytes"], r.metrics[primary]) for r in made],
        (f"parent v{number}", parent_metrics["size_bytes"], parent_metrics[primary]),
        metric=primary,
        larger_is_better=METRICS[project.selection.metric][1],
        title=f"{project.name}: compression variants",
    )
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    return {TABLE_ARTIFACT: table.encode(), PARETO_ARTIFACT: image.getvalue()}
