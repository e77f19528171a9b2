"""What a training run keeps beside its metrics: size counts, learning curves, the holdout
figure, frames as Parquet bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mm_platform.modeling.metrics import class_scores

if TYPE_CHECKING:
    import pandas as pd

    from mm_platform.project.config import Project


def size_metrics(pipeline: Any) -> dict[str, float]:
    """`n_params` and `n_nonzero` as compression counts them, where the family has them."""
    # training sits above compression, so it may ask compression how it counts
    from mm_platform.compression.compile import compile_pipeline

    try:
        compiled = compile_pipeline(pipeline)
    except Exception:  # no compressed form (UnsupportedModel) or a bug: counting must never
        return {}  # fail a training run
    return {"n_params": float(compiled.n_params()), "n_nonzero": float(compiled.n_nonzero())}


def learning_curve(pipeline: Any) -> dict[str, list[float]]:
    """Per-iteration curves the fitted model kept (loss per epoch, ...), as plain floats."""
    model = pipeline.named_steps["model"]
    history: dict[str, Any] = {}
    if getattr(model, "loss_curve_", None) is not None:
        history["train_loss"] = model.loss_curve_
    if getattr(model, "validation_scores_", None) is not None:
        history["validation_score"] = model.validation_scores_
    train_score = getattr(model, "train_score_", None)
    if train_score is not None and len(train_score):
        if type(model).__name__.startswith("HistGradientBoosting"):
            # scores (higher is better; with scoring="loss" the negated loss), per iteration
            history["train_score"] = train_score
            if len(getattr(model, "validation_score_", [])):
                history["validation_score"] = model.validation_score_
        else:  # GradientBoosting: the training loss (deviance) after each stage
            history["train_loss"] = train_score
    return {k: [float(v) for v in values] for k, values in history.items()}


def holdout_figure(
    project: Project, pipeline: Any, X: pd.DataFrame, y: pd.Series
) -> tuple[str, bytes]:
    """The holdout figure as (artifact path, PNG bytes)."""
    import io

    import matplotlib.pyplot as plt

    from mm_platform.modeling import figures

    title = f"{project.name}: holdout"
    y_pred = pipeline.predict(X)
    if project.task == "regression":
        fig = figures.predicted_vs_actual(y, y_pred, title)
        path = "figures/predicted_vs_actual.png"
    else:
        classes = list(pipeline.classes_)
        scores = class_scores(pipeline, X, project.task)
        fig = figures.roc_and_confusion(y, y_pred, scores, classes, title)
        path = "figures/roc_confusion.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return path, buffer.getvalue()


def reference_artifacts(project: Project, reference: pd.DataFrame) -> dict[str, bytes]:
    """The run artifacts of the reference sample and of the performance estimator fitted on
    it (CBPE, DLE), side by side."""
    from mm_platform.modeling.estimation import estimator_artifacts
    from mm_platform.modeling.reference import REFERENCE_ARTIFACT

    return {REFERENCE_ARTIFACT: parquet_bytes(reference), **estimator_artifacts(project, reference)}


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """`frame` as the bytes of a Parquet file (without its index)."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
