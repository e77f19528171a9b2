"""Logging scikit-learn models: signature, input example, explicit pip requirements."""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.sklearn
from mlflow.models import infer_signature

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

_RUNTIME_PACKAGES = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Pinned requirements of the installed runtime packages.

    Passing these explicitly skips MLflow's requirement inference, which costs 6-10 s a model.
    """
    pins = []
    for package in (*_RUNTIME_PACKAGES, *extra):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def _trusted_types(model: Any) -> list[str]:
    """The types skops must be told to trust to load `model` (trees, MLP optimisers, ...)."""
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def log_sklearn_model(
    model: Any, X_sample: pd.DataFrame, *, name: str = "model", method: str = "predict"
) -> ModelInfo:
    """Log a fitted sklearn model to the active run with signature and input example."""
    example = X_sample.head(5)
    output = getattr(model, method)(X_sample)
    signature = infer_signature(X_sample, output)
    return mlflow.sklearn.log_model(
        model,
        name=name,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
        skops_trusted_types=_trusted_types(model),
        pyfunc_predict_fn=method,
    )
