"""Turning a fitted mm_platform Pipeline into the arrays of a CompressedModel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from mm_platform.compression.mm_compressed import FORMAT, CompressedModel, encode

LINEAR = (LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression)
MLP = (MLPRegressor, MLPClassifier)
FOREST = (
    RandomForestRegressor,
    RandomForestClassifier,
    ExtraTreesRegressor,
    ExtraTreesClassifier,
    DecisionTreeRegressor,
    DecisionTreeClassifier,
)
BOOSTED = (GradientBoostingRegressor, GradientBoostingClassifier)

# name of a tensor -> codec ("f64", "f32", "f16", "int8", "int8c")
CodecChoice = Callable[[str], str]


class UnsupportedModel(ValueError):
    """The model family cannot be compressed this way (the variant is skipped, not failed)."""


def family(estimator: Any) -> str:
    """ "linear", "mlp", "forest", "boosted" or "other"."""
    for name, kinds in (("linear", LINEAR), ("mlp", MLP), ("forest", FOREST), ("boosted", BOOSTED)):
        if isinstance(estimator, kinds):
            return name
    return "other"


def compile_pipeline(
    pipeline: Pipeline,
    *,
    codec: CodecChoice = lambda _name: "f64",
    model: Any = None,
    trees: list[Any] | None = None,
) -> CompressedModel:
    """A CompressedModel equal in structure to `pipeline` (or to `model` after its preprocessing).

    `trees` restricts a forest or boosted ensemble to those trees (ensemble pruning).
    """
    estimator = model if model is not None else pipeline.named_steps["model"]
    spec: dict[str, Any] = {"format": FORMAT, "tensors": []}
    arrays: dict[str, np.ndarray] = {}
    spec["preprocess"] = _preprocess(pipeline, arrays)
    kind = family(estimator)
    if kind == "linear":
        spec["model"] = _linear(estimator, arrays, spec, codec)
    elif kind == "mlp":
        spec["model"] = _mlp(estimator, arrays, spec, codec)
    elif kind in ("forest", "boosted"):
        spec["model"] = _trees(estimator, arrays, spec, codec, trees)
    else:
        raise UnsupportedModel(f"{type(estimator).__name__} has no compressed form")
    return CompressedModel(spec, arrays)


def _preprocess(pipeline: Pipeline, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    transformer = pipeline.named_steps["preprocess"]
    spec: dict[str, Any] = {
        "columns": [str(c) for c in transformer.feature_names_in_],
        "numeric": [],
        "categorical": [],
    }
    for name, steps, columns in transformer.transformers_:
        if name == "numeric":
            spec["numeric"] = [str(c) for c in columns]
            for step_name, step in steps.steps:
                if step_name == "impute":
                    fill = np.asarray(step.statistics_, dtype=np.float64)
                    arrays["pre.fill"] = fill
                    if np.isnan(fill).any():  # columns all-missing in training are dropped
                        arrays["pre.keep"] = ~np.isnan(fill)
                elif step_name == "scale":
                    arrays["pre.offset"], arrays["pre.mult"] = _affine(step)
                elif step_name == "poly":
                    arrays["pre.powers"] = step.powers_.astype(np.int8)
        elif name == "categorical":
            spec["categorical"] = [str(c) for c in columns]
            imputer, onehot = steps.named_steps["impute"], steps.named_steps["onehot"]
            arrays["pre.cat_fill"] = np.asarray([str(v) for v in imputer.statistics_])
            for j, categories in enumerate(onehot.categories_):
                arrays[f"pre.cat.{j}"] = np.asarray([str(v) for v in categories])
    if "select" in pipeline.named_steps:
        arrays["pre.select"] = pipeline.named_steps["select"].get_support()
    return spec


def _affine(scaler: Any) -> tuple[np.ndarray, np.ndarray]:
    """(offset, mult) with scaled = (x - offset) * mult."""
    name = type(scaler).__name__
    if name == "StandardScaler":
        return scaler.mean_.astype(np.float64), 1.0 / scaler.scale_
    if name == "MinMaxScaler":
        return -scaler.min_ / scaler.scale_, scaler.scale_.astype(np.float64)
    return scaler.center_.astype(np.float64), 1.0 / scaler.scale_


def _tensor(spec: dict, arrays: dict, name: str, value: np.ndarray, codec: str, axis: int) -> None:
    arrays.update(encode(name, value, codec, axis))
    spec["tensors"].append(name)


def _classes(estimator: Any) -> list[Any] | None:
    if not is_classifier(estimator):
        return None
    return [c.item() if isinstance(c, np.generic) else c for c in estimator.classes_]


def _linear(est: Any, arrays: dict, spec: dict, codec: CodecChoice) -> dict[str, Any]:
    coef = np.atleast_2d(est.coef_).astype(np.float64)
    intercept = np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64))
    _tensor(spec, arrays, "coef", coef, codec("coef"), axis=0)
    _tensor(spec, arrays, "intercept", intercept, codec("intercept"), axis=0)
    classes = _classes(est)
    link = None
    if classes is not None:
        link = "sigmoid" if len(classes) == 2 else "softmax"
    return {"kind": "linear", "classes": classes, "link": link}


def _mlp(est: Any, arrays: dict, spec: dict, codec: CodecChoice) -> dict[str, Any]:
    for i, (W, b) in enumerate(zip(est.coefs_, est.intercepts_, strict=True)):
        _tensor(spec, arrays, f"W{i}", W, codec(f"W{i}"), axis=-1)
        _tensor(spec, arrays, f"b{i}", b, codec(f"b{i}"), axis=-1)
    classes = _classes(est)
    link = None
    if classes is not None:
        link = "sigmoid" if est.out_activation_ == "logistic" else "softmax"
    return {
        "kind": "mlp",
        "n_layers": len(est.coefs_),
        "activation": est.activation,
        "classes": classes,
        "link": link,
    }


def tree_list(est: Any) -> list[tuple[Any, int]]:
    """(sklearn tree, output column) for every tree of the model, in order."""
    if isinstance(est, BOOSTED):
        stages = est.estimators_
        return [(stages[s, k], k if stages.shape[1] > 1 else 0)
                for s in range(stages.shape[0]) for k in range(stages.shape[1])]  # fmt: skip
    if hasattr(est, "estimators_"):
        return [(tree, -1) for tree in est.estimators_]
    return [(est, -1)]


def _round_down_f32(threshold: np.ndarray) -> np.ndarray:
    """float32 thresholds t32 with x <= t32 exactly when x <= t, for every float32 x."""
    t32 = threshold.astype(np.float32)
    above = t32.astype(np.float64) > threshold
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _trees(
    est: Any, arrays: dict, spec: dict, codec: CodecChoice, keep: list[Any] | None
) -> dict[str, Any]:
    boosted = isinstance(est, BOOSTED)
    classes = _classes(est)
    pairs = tree_list(est)
    if keep is not None:
        kept = {id(t) for t in keep}
        pairs = [(t, k) for t, k in pairs if id(t) in kept]
    # boosting: one raw score per class column; forests: one value (or class fraction) each
    n_classes = 1 if classes is None else len(classes)
    n_out = est.estimators_.shape[1] if boosted else n_classes
    lefts, rights, features, thresholds, values, roots, missing = [], [], [], [], [], [], []
    offset = 0
    for tree, column in pairs:
        t = tree.tree_
        left = t.children_left.astype(np.int64)
        right = t.children_right.astype(np.int64)
        is_leaf = left < 0
        lefts.append(np.where(is_leaf, -1, left + offset))
        rights.append(np.where(is_leaf, -1, right + offset))
        features.append(np.where(is_leaf, 0, t.feature))
        missing.append(np.where(is_leaf, 0, t.missing_go_to_left).astype(np.uint8))
        thresholds.append(np.where(is_leaf, 0.0, t.threshold))
        raw = t.value.reshape(t.node_count, -1).astype(np.float64)
        value = np.zeros((t.node_count, n_out))
        if column >= 0:
            value[:, column] = raw[:, 0]
        else:
            value[:, :] = raw[:, :n_out]
        value[~is_leaf] = 0.0  # only leaves are read
        values.append(value)
        roots.append(offset)
        offset += t.node_count
    index_type = np.int32 if offset < 2**31 else np.int64
    arrays["t.left"] = np.concatenate(lefts).astype(index_type)
    arrays["t.right"] = np.concatenate(rights).astype(index_type)
    arrays["t.feature"] = np.concatenate(features).astype(np.int32)
    arrays["t.threshold"] = _round_down_f32(np.concatenate(thresholds))
    arrays["t.missing_left"] = np.concatenate(missing)
    arrays["t.roots"] = np.asarray(roots, dtype=index_type)
    _tensor(spec, arrays, "t.value", np.concatenate(values), codec("t.value"), axis=-1)
    model: dict[str, Any] = {"kind": "trees", "classes": classes}
    if boosted:
        init = np.asarray(est._raw_predict_init(np.zeros((1, est.n_features_in_)))[0])
        _tensor(spec, arrays, "t.init", init, "f64", axis=-1)
        model.update(combine="sum", learning_rate=float(est.learning_rate))
        if classes is not None:
            model["link"] = "sigmoid" if len(classes) == 2 else "softmax"
        else:
            model["link"] = None
    else:
        model.update(combine="mean", link="proba" if classes is not None else None)
    return model
