"""The compression methods: pruning, quantization and distillation of a fitted Pipeline.

Each returns a CompressedModel, or raises UnsupportedModel with the reason a variant is
skipped for this model family.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mm_platform.compression.compile import (
    BOOSTED,
    FOREST,
    UnsupportedModel,
    compile_pipeline,
    family,
    tree_list,
)
from mm_platform.modeling.metrics import (
    positive_class,
    score_predictions,
    scores_from_probabilities,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from mm_platform.compression.mm_compressed import CompressedModel
    from mm_platform.project.config import Project, Student

_WEIGHTS = ("coef", "t.value")  # plus every W<i> of an MLP


def _is_weight(name: str) -> bool:
    return name in _WEIGHTS or (name.startswith("W") and name[1:].isdigit())


@dataclass
class Variant:
    """One compression variant to make: which method, its name and its settings."""

    method: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)


def plan(project: Project) -> list[Variant]:
    """Every variant the project's `compression` section asks for, in a stable order."""
    spec = project.compression
    variants: list[Variant] = []
    if spec is None:
        return variants
    if spec.prune is not None:
        for s in spec.prune.sparsities:
            variants.append(Variant("prune", f"prune-{s:g}", {"sparsity": s,
                                    "refit_epochs": spec.prune.refit_epochs}))  # fmt: skip
        for lam in spec.prune.l1_lambdas:
            variants.append(Variant("prune", f"l1-{lam:g}", {"l1_lambda": lam}))
        for k in spec.prune.ensemble_sizes:
            variants.append(Variant("prune", f"trees-{k}", {"n_trees": k}))
    if spec.quantize is not None:
        for bits in spec.quantize.bits:
            for per_channel in spec.quantize.per_channel if bits == 8 else [False]:
                name = "int8" + ("-per-channel" if per_channel else "") if bits == 8 else "float16"
                variants.append(
                    Variant("quantize", name, {"bits": bits, "per_channel": per_channel})
                )
    if spec.distill is not None:
        for student in spec.distill.students:
            variants.append(Variant("distill", f"distill-{student.label}", {"student": student}))
    return variants


@dataclass
class Workspace:
    """What every method may use: the parent, the data splits and the project."""

    project: Project
    parent: Pipeline
    X_train: pd.DataFrame
    y_train: pd.Series
    X_val: pd.DataFrame
    y_val: pd.Series


def make(variant: Variant, ws: Workspace) -> CompressedModel:
    """Build one variant; UnsupportedModel says why the parent's family cannot have it."""
    p = variant.params
    if variant.method == "quantize":
        return quantize(ws.parent, p["bits"], p["per_channel"])
    if variant.method == "distill":
        return distill(ws, p["student"])
    if "sparsity" in p:
        return magnitude_prune(ws, p["sparsity"], p["refit_epochs"])
    if "l1_lambda" in p:
        return l1_prune(ws.parent, p["l1_lambda"])
    return prune_ensemble(ws, p["n_trees"])


# --- quantization ---------------------------------------------------------------------------


def quantize(parent: Pipeline, bits: int, per_channel: bool) -> CompressedModel:
    """int8 (symmetric; per tensor or per output channel) or float16 weights / leaf values."""
    _require(parent, ("linear", "mlp", "forest", "boosted"), "quantization")
    weight = ("int8c" if per_channel else "int8") if bits == 8 else "f16"
    # biases and intercepts stay float32: few values, and a regression intercept can exceed
    # float16's range
    try:
        return compile_pipeline(parent, codec=lambda name: weight if _is_weight(name) else "f32")
    except OverflowError as exc:
        raise UnsupportedModel(f"float16 cannot hold this model: {exc}") from exc


# --- pruning --------------------------------------------------------------------------------


def _magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """True for the weights kept: all but the `sparsity` fraction smallest in magnitude."""
    n_drop = int(np.floor(sparsity * weights.size))
    mask = np.ones(weights.shape, dtype=bool)
    if n_drop:
        order = np.argsort(np.abs(weights), axis=None, kind="stable")
        mask.flat[order[:n_drop]] = False
    return mask


def magnitude_prune(ws: Workspace, sparsity: float, refit_epochs: int) -> CompressedModel:
    """Zero the smallest weights of each layer (linear coefficients, MLP weight matrices).

    For MLPs with `refit_epochs`, the surviving weights are then re-fit for that many
    epochs with the mask held fixed (projected gradient: the mask is re-applied after
    every epoch).
    """
    kind = _require(ws.parent, ("linear", "mlp"), "magnitude pruning")
    model = copy.deepcopy(ws.parent.named_steps["model"])
    if kind == "linear":
        mask = _magnitude_mask(np.atleast_2d(model.coef_), sparsity).reshape(model.coef_.shape)
        model.coef_ = np.where(mask, model.coef_, 0.0)
        return compile_pipeline(ws.parent, model=model)
    masks = [_magnitude_mask(W, sparsity) for W in model.coefs_]
    model.coefs_ = [np.where(m, W, 0.0) for W, m in zip(model.coefs_, masks, strict=True)]
    if refit_epochs:
        model.early_stopping = False  # partial_fit cannot hold out a validation fraction
        if getattr(model, "best_loss_", None) is None:  # trained with early stopping
            model.best_loss_ = np.inf
        Z = ws.parent[:-1].transform(ws.X_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(refit_epochs):
                model.partial_fit(Z, ws.y_train)
                model.coefs_ = [
                    np.where(m, W, 0.0) for W, m in zip(model.coefs_, masks, strict=True)
                ]
    return compile_pipeline(ws.parent, model=model)


def l1_prune(parent: Pipeline, lam: float) -> CompressedModel:
    """The seed's proximal step: argmin ‖θ − θ*‖² + λ‖θ‖₁ = soft-threshold θ* at λ/2."""
    _require(parent, ("linear",), "L1 proximal pruning")
    model = copy.deepcopy(parent.named_steps["model"])
    coef = np.asarray(model.coef_, dtype=np.float64)
    model.coef_ = np.sign(coef) * np.maximum(np.abs(coef) - lam / 2.0, 0.0)
    return compile_pipeline(parent, model=model)


def prune_ensemble(ws: Workspace, k: int) -> CompressedModel:
    """Keep k trees: greedy forward selection on validation data for forests (the tree that
    best preserves the validation score joins next); the first k stages for boosting."""
    _require(ws.parent, ("forest", "boosted"), "ensemble pruning")
    model = ws.parent.named_steps["model"]
    if isinstance(model, BOOSTED):
        n_stages = model.estimators_.shape[0]
        if k >= n_stages:
            raise UnsupportedModel(f"the ensemble has {n_stages} stages; nothing to prune at {k}")
        keep = [t for t in model.estimators_[:k].ravel()]
        return compile_pipeline(ws.parent, trees=keep)
    if not isinstance(model, FOREST) or not hasattr(model, "estimators_"):
        raise UnsupportedModel(f"{type(model).__name__} is a single tree; nothing to prune")
    trees = [t for t, _ in tree_list(model)]
    if k >= len(trees):
        raise UnsupportedModel(f"the ensemble has {len(trees)} trees; nothing to prune at {k}")
    Z = ws.parent[:-1].transform(ws.X_val).astype(np.float32)
    task = ws.project.task
    outputs = np.stack([_tree_output(t, Z, task) for t in trees])  # trees x rows (x classes)
    metric = ws.project.selection.metric
    from mm_platform.project.catalog import METRICS

    larger_is_better = METRICS[metric][1]
    chosen: list[int] = []
    total = np.zeros_like(outputs[0])
    for _ in range(k):
        best_i, best_score = -1, None
        for i in range(len(trees)):
            if i in chosen:
                continue
            mean = (total + outputs[i]) / (len(chosen) + 1)
            score = _score(task, metric, ws.y_val, mean, model)
            if best_score is None or (
                score > best_score if larger_is_better else score < best_score
            ):
                best_i, best_score = i, score
        chosen.append(best_i)
        total = total + outputs[best_i]
    return compile_pipeline(ws.parent, trees=[trees[i] for i in sorted(chosen)])


def _tree_output(tree: Any, Z: np.ndarray, task: str) -> np.ndarray:
    return tree.predict(Z) if task == "regression" else tree.predict_proba(Z)


def _score(task: str, metric: str, y: pd.Series, output: np.ndarray, model: Any) -> float:
    if task == "regression":
        return score_predictions(task, y, output)[metric]
    y_pred = model.classes_[np.argmax(output, axis=1)]
    y_score = scores_from_probabilities(output, task)
    pos_label = positive_class(list(model.classes_), task)
    return score_predictions(task, y, y_pred, y_score, pos_label=pos_label)[metric]


# --- distillation ---------------------------------------------------------------------------


def jittered_inputs(ws: Workspace, copies: int, scale: float) -> pd.DataFrame:
    """The training inputs plus `copies` copies with Gaussian noise of `scale` x each
    numeric column's standard deviation (categorical columns are copied as they are)."""
    rng = np.random.default_rng(ws.project.seed)
    frames = [ws.X_train]
    numeric = [c for c in ws.X_train.columns if c not in ws.project.features.categorical]
    std = ws.X_train[numeric].std(ddof=0).to_numpy()
    for _ in range(copies):
        copy_ = ws.X_train.copy()
        noise = rng.normal(0.0, 1.0, (len(copy_), len(numeric))) * (scale * std)
        copy_[numeric] = copy_[numeric].to_numpy() + noise
        frames.append(copy_)
    return pd.concat(frames, ignore_index=True)


def student_pipeline(ws: Workspace, student: Student) -> Pipeline:
    """An unfitted student: the project's preprocessing, then the student estimator."""
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from mm_platform.modeling.features import build_pipeline

    regression = ws.project.task == "regression"
    features = ws.project.features
    seed = ws.project.seed
    if student.kind == "boosting":
        cls = GradientBoostingRegressor if regression else GradientBoostingClassifier
        estimator = cls(n_estimators=student.n_estimators, max_depth=student.max_depth,
                        learning_rate=student.learning_rate, random_state=seed)  # fmt: skip
    elif student.kind == "mlp":
        cls = MLPRegressor if regression else MLPClassifier
        estimator = cls(
            hidden_layer_sizes=tuple(student.hidden_layer_sizes),
            max_iter=student.max_iter,
            early_stopping=True,
            random_state=seed,
        )
    else:
        features = features.model_copy(update={"polynomial_degree": student.degree})
        if regression:
            estimator = Ridge(alpha=student.alpha)
        else:
            estimator = LogisticRegression(C=1.0 / max(student.alpha, 1e-12), max_iter=5000)
    return build_pipeline(features, list(ws.X_train.columns), estimator, ws.project.task)


def distill(ws: Workspace, student: Student) -> CompressedModel:
    """Fit `student` to the teacher's predictions on the training inputs and jittered copies."""
    compression = ws.project.compression
    assert compression is not None and compression.distill is not None, "distill is configured"
    spec = compression.distill
    X = jittered_inputs(ws, spec.n_jitter_copies, spec.jitter_scale)
    y = ws.parent.predict(X)
    pipeline = student_pipeline(ws, student)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(X, y)
    return compile_pipeline(pipeline)


def _require(parent: Pipeline, families: tuple[str, ...], what: str) -> str:
    estimator = parent.named_steps["model"]
    kind = family(estimator)
    if kind not in families:
        allowed = {"linear": "linear models", "mlp": "MLPs", "forest": "tree forests",
                   "boosted": "gradient boosting"}  # fmt: skip
        raise UnsupportedModel(
            f"{what} applies to {', '.join(allowed[f] for f in families)}; "
            f"the parent is {type(estimator).__name__}"
        )
    return kind
