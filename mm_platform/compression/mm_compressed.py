"""Runtime of compressed models: numpy inference over integer/float16/sparse weight arrays.

This file is shipped inside every compressed model artifact (MLflow `code_paths`) and is
its pyfunc `loader_module`, so a compressed version loads wherever numpy and pandas do,
without mm_platform installed. It must import nothing but numpy, pandas and the standard
library.

An artifact folder holds `spec.json` (structure, codecs, array index) and `arrays.bin`
(every stored array in one deflate-compressed buffer). Prediction uses the arrays exactly
as stored: int8 tensors are dequantized as `q * scale` once at load; nothing else of the
original model survives.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMAT = "mm-compressed/1"
CODECS = ("f64", "f32", "f16", "int8", "int8c")


# --- tensor codecs ------------------------------------------------------------------------


def encode(name: str, array: np.ndarray, codec: str, axis: int = -1) -> dict[str, np.ndarray]:
    """Store `array` with `codec`: raw floats, float16, or symmetric int8 with its scale.

    "int8" has one scale per tensor; "int8c" one per output channel (`axis` indexes the
    outputs). Zero stays exactly zero under every codec, so pruned weights stay pruned.
    """
    array = np.asarray(array, dtype=np.float64)
    if codec == "f64":
        return {name: array}
    if codec == "f32":
        return {name: array.astype(np.float32)}
    if codec == "f16":
        peak = float(np.abs(array).max(initial=0.0))
        if peak > float(np.finfo(np.float16).max):
            raise OverflowError(f"{name} holds {peak:.4g}, beyond float16's range (65504)")
        return {name: array.astype(np.float16)}
    if codec not in ("int8", "int8c"):
        raise ValueError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    if codec == "int8" or array.ndim == 0:
        peak = np.abs(array).max(initial=0.0)
    else:
        other = tuple(i for i in range(array.ndim) if i != axis % array.ndim)
        peak = np.abs(array).max(axis=other, keepdims=True, initial=0.0)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.rint(array / scale), -127, 127).astype(np.int8)
    return {name: q, f"{name}.scale": np.asarray(scale, dtype=np.float32)}


def decode(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The float64 values a stored tensor stands for."""
    values = arrays[name]
    scale = arrays.get(f"{name}.scale")
    if scale is not None:
        return values.astype(np.float64) * scale.astype(np.float64)
    return values.astype(np.float64)


# --- the model ----------------------------------------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": _sigmoid,
}


class CompressedModel:
    """Preprocessing and one model stage (linear, mlp or trees) evaluated with numpy."""

    def __init__(self, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if spec.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} model: format={spec.get('format')!r}")
        self.spec = spec
        self.arrays = arrays
        self._pre = spec["preprocess"]
        self._model = spec["model"]
        self._classes = np.asarray(self._model["classes"]) if self._model.get("classes") else None
        self._params = {name: decode(arrays, name) for name in spec["tensors"]}

    # -- persistence

    def save(self, folder: str | Path) -> None:
        """Write spec.json (with the array index) and arrays.bin into `folder`.

        All arrays go into one deflate-compressed buffer: per-array containers such as .npz
        cost a few hundred bytes of headers each, more than a small model's weights.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index, chunks, offset = {}, [], 0
        for name, array in self.arrays.items():
            array = np.ascontiguousarray(array)
            index[name] = [array.dtype.str, list(array.shape), offset]
            chunks.append(array.tobytes())
            offset += array.nbytes
        spec = {**self.spec, "arrays": index}
        (folder / "spec.json").write_text(json.dumps(spec, separators=(",", ":")))
        (folder / "arrays.bin").write_bytes(zlib.compress(b"".join(chunks), 9))

    @classmethod
    def load(cls, folder: str | Path) -> CompressedModel:
        """Read a model written by `save`."""
        folder = Path(folder)
        spec = json.loads((folder / "spec.json").read_text())
        blob = zlib.decompress((folder / "arrays.bin").read_bytes())
        arrays = {}
        for name, (dtype, shape, offset) in spec.pop("arrays").items():
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            flat = np.frombuffer(blob, dtype=dt, count=count, offset=offset)
            arrays[name] = flat.reshape(shape).copy()
        return cls(spec, arrays)

    # -- inference

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The preprocessed feature matrix the model stage sees."""
        pre, a = self._pre, self.arrays
        blocks = []
        if pre["numeric"]:
            num = X[pre["numeric"]].to_numpy(dtype=np.float64, copy=True)
            if "pre.fill" in a:
                missing = np.isnan(num)
                if missing.any():
                    num[missing] = np.take(a["pre.fill"], np.nonzero(missing)[1])
                if "pre.keep" in a:  # the imputer drops columns that were all missing in training
                    num = num[:, a["pre.keep"]]
            if self._model["kind"] != "trees" and np.isnan(num).any():
                # as sklearn: without imputation only trees accept missing values
                raise ValueError("Input X contains NaN; this model was trained without imputation")
            if "pre.offset" in a:
                num = (num - a["pre.offset"]) * a["pre.mult"]
            if "pre.powers" in a:
                powers = a["pre.powers"]
                num = np.stack([np.prod(num**p, axis=1) for p in powers], axis=1)
            blocks.append(num)
        for j, column in enumerate(pre["categorical"]):
            # as sklearn's SimpleImputer: only float NaN is missing; None is a category
            fill = str(a["pre.cat_fill"][j])
            values = np.asarray(
                [fill if isinstance(v, float) and v != v else str(v) for v in X[column]],
                dtype=str,
            )
            categories = a[f"pre.cat.{j}"]
            blocks.append((values[:, None] == categories[None, :]).astype(np.float64))
        matrix = np.hstack(blocks) if len(blocks) > 1 else blocks[0]
        if "pre.select" in a:
            matrix = matrix[:, a["pre.select"]]
        return matrix

    def raw(self, X: pd.DataFrame) -> np.ndarray:
        """Model-stage outputs before the final link (2-D: rows x outputs)."""
        Z = self.transform(X)
        kind = self._model["kind"]
        if kind == "linear":
            return Z @ self._params["coef"].T + self._params["intercept"]
        if kind == "mlp":
            act = _ACTIVATIONS[self._model["activation"]]
            n_layers = self._model["n_layers"]
            for i in range(n_layers):
                Z = Z @ self._params[f"W{i}"] + self._params[f"b{i}"]
                if i < n_layers - 1:
                    Z = act(Z)
            return Z
        if kind == "trees":
            return self._trees(Z)
        raise ValueError(f"unknown model kind {kind!r}")

    def _trees(self, Z: np.ndarray) -> np.ndarray:
        a = self.arrays
        left, right = a["t.left"].astype(np.int64), a["t.right"].astype(np.int64)
        feature, threshold = a["t.feature"].astype(np.int64), a["t.threshold"]
        missing_left = a["t.missing_left"].astype(bool)
        values = self._params["t.value"]
        roots = a["t.roots"].astype(np.int64)
        leaf = left < 0
        X32 = Z.astype(np.float32)  # sklearn trees compare float32 inputs
        chunks = []
        for start in range(0, len(X32), 10_000):  # bounds memory: trees x rows indices
            X = X32[start : start + 10_000]
            rows = np.arange(len(X))[None, :]
            nodes = np.repeat(roots[:, None], len(X), axis=1)
            active = ~leaf[nodes]
            while active.any():
                x = X[rows, feature[nodes]]
                go_left = (x <= threshold[nodes]) | (np.isnan(x) & missing_left[nodes])
                nxt = np.where(go_left, left[nodes], right[nodes])
                nodes = np.where(active, nxt, nodes)
                active = ~leaf[nodes]
            leaf_values = values[nodes]  # trees x rows x outputs
            if self._model["combine"] == "mean":
                chunks.append(leaf_values.mean(axis=0))
            else:
                lr = self._model["learning_rate"]
                chunks.append(self._params["t.init"] + lr * leaf_values.sum(axis=0))
        return np.vstack(chunks) if chunks else np.zeros((0, values.shape[1]))

    @property
    def classes_(self) -> np.ndarray | None:
        """A classifier's class labels in its probability columns' order (None: regressor)."""
        return self._classes

    def get_raw_model(self) -> CompressedModel:
        """This object: MLflow's PyFuncModel.get_raw_model reaches it (for predict_proba)."""
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Class probabilities (classifiers only)."""
        out = self.raw(X)
        link = self._model["link"]
        if link == "proba":
            return out
        if link == "sigmoid":
            p = _sigmoid(out[:, 0])
            return np.column_stack([1.0 - p, p])
        if link == "softmax":
            return _softmax(out)
        raise ValueError("predict_proba is for classifiers; this model is a regressor")

    def predict(self, X: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Predictions: values for regressors, class labels for classifiers."""
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X, columns=self._pre["columns"])
        if self._classes is None:
            out = self.raw(X)
            return out[:, 0] if out.shape[1] == 1 else out
        return self._classes[np.argmax(self.predict_proba(X), axis=1)]

    # -- sizes

    def n_params(self) -> int:
        """Number of parameters of the model stage (tree nodes for trees)."""
        if self._model["kind"] == "trees":
            return int(self.arrays["t.left"].size)
        return int(sum(self._params[name].size for name in self.spec["tensors"]))

    def n_nonzero(self) -> int:
        """Parameters of the model stage that are not zero (split nodes + nonzero leaves)."""
        if self._model["kind"] == "trees":
            split = int((self.arrays["t.left"] >= 0).sum())
            leaves = self.arrays["t.left"] < 0
            return split + int(np.any(self._params["t.value"][leaves] != 0, axis=1).sum())
        return int(sum(np.count_nonzero(self._params[name]) for name in self.spec["tensors"]))


def _load_pyfunc(data_path: str) -> CompressedModel:
    """MLflow pyfunc entry point (`loader_module`)."""
    return CompressedModel.load(data_path)
