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
    return pip_requirements_for((*_RUNTIME_PACKAGES, *extra))


def _trusted_types(model: Any) -> list[str]:
    """The types skops must be told to trust to load `model` (trees, MLP optimisers, ...)."""
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def log_sklearn_model(
    model: Any,
    X_sample: pd.DataFrame,
    *,
    name: str = "model",
    method: str = "predict",
    model_id: str | None = None,
    run_id: str | None = None,
) -> ModelInfo:
    """Log a fitted sklearn model with signature and input example: to the active run (or
    `run_id`), or as the files of the existing logged model `model_id`."""
    return mlflow.sklearn.log_model(
        model,
        name=name,
        model_id=model_id,
        run_id=run_id,
        **_sklearn_options(model, X_sample, method),
    )


def save_sklearn_model(
    model: Any, X_sample: pd.DataFrame, path: str, *, method: str = "predict"
) -> None:
    """Save a fitted sklearn model as an MLflow model folder, as `log_sklearn_model` logs it."""
    mlflow.sklearn.save_model(model, path, **_sklearn_options(model, X_sample, method))


def _sklearn_options(model: Any, X_sample: pd.DataFrame, method: str) -> dict[str, Any]:
    output = getattr(model, method)(X_sample)
    return {
        "signature": infer_signature(X_sample, output),
        "input_example": X_sample.head(5),
        "pip_requirements": pip_requirements(),
        "skops_trusted_types": _trusted_types(model),
        "pyfunc_predict_fn": method,
    }


def log_compressed_model(
    model: Any, X_sample: pd.DataFrame, *, name: str = "model", model_id: str | None = None
) -> ModelInfo:
    """Log a CompressedModel as a pyfunc whose loader is the runtime file shipped beside it.

    The model's class brings its own loader: the file that defines it is that runtime, so
    tracking needs no import of compression (which sits above it)."""
    import inspect
    import tempfile
    from pathlib import Path

    runtime = Path(inspect.getfile(type(model)))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        model.save(data)
        output = model.predict(X_sample)
        return mlflow.pyfunc.log_model(
            name=name,
            model_id=model_id,
            loader_module=runtime.stem,
            data_path=str(data),
            code_paths=[str(runtime)],
            signature=infer_signature(X_sample, output),
            input_example=X_sample.head(5),
            pip_requirements=pip_requirements_for(("mlflow", "numpy", "pandas")),
        )


def pip_requirements_for(packages: tuple[str, ...]) -> list[str]:
    """Pinned requirements of just these installed packages."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def artifact_size(model_uri: str) -> int:
    """Bytes of a logged model's files as the artifact store holds them (all files summed)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return sum(p.stat().st_size for p in Path(local).rglob("*") if p.is_file())


def load_sklearn_model(model_uri: str) -> Any:
    """The sklearn object of a version logged with the sklearn flavor."""
    return mlflow.sklearn.load_model(model_uri)


def model_flavors(model_uri: str) -> list[str]:
    """The flavors a logged model offers (`sklearn`, `python_function`, ...)."""
    from mlflow.models import Model

    with_files = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri}/MLmodel")
    return list(Model.load(with_files).flavors)


def load_pyfunc(model_uri: str) -> Any:
    """Any logged model (sklearn or compressed) as an MLflow pyfunc."""
    return mlflow.pyfunc.load_model(model_uri)


def input_columns(pyfunc_model: Any) -> list[str]:
    """The input column names of a pyfunc model's signature."""
    signature = pyfunc_model.metadata.signature
    return signature.inputs.input_names() if signature is not None else []


def model_input_schema(pyfunc_model: Any) -> list[tuple[str, str]]:
    """(column, MLflow type) of a loaded pyfunc model's input signature; [] without one."""
    signature = pyfunc_model.metadata.signature
    return [] if signature is None else signature_pairs(signature)


def signature_pairs(signature: Any) -> list[tuple[str, str]]:
    """(column, MLflow type) of a model signature's inputs."""
    return [
        (spec.name, getattr(getattr(spec, "type", None), "name", str(getattr(spec, "type", ""))))
        for spec in signature.inputs.inputs
    ]


def input_schema(model_uri: str) -> list[tuple[str, str]]:
    """(column, MLflow type) of a logged model's input signature, read from its MLmodel file
    without loading the model; [] when it has no signature."""
    from mlflow.models import Model

    with_files = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri}/MLmodel")
    signature = Model.load(with_files).signature
    return [] if signature is None else signature_pairs(signature)


def save_wrapper_model(
    model_uri: str, dest: str, *, loader_module: str, config: dict[str, Any]
) -> str:
    """Save at `dest` a pyfunc model whose loader is `loader_module` (its `_load_pyfunc`
    gets the data folder): the model at `model_uri` under `data/inner`, `config` as
    `data/config.json`. No signature: the loader conforms its input itself."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="mm-wrapper-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if Path(model_uri).is_dir():
            shutil.copytree(model_uri, data / "inner")
        else:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
            shutil.move(local, data / "inner")
        (data / "config.json").write_text(json.dumps(config))
        mlflow.pyfunc.save_model(
            dest, loader_module=loader_module, data_path=str(data),
            pip_requirements=pip_requirements(),
        )  # fmt: skip
    return dest


def spark_udf(spark: Any, model_uri: str, result_type: Any = None) -> Any:
    """MLflow's Spark UDF of the pyfunc at `model_uri` (`mlflow.pyfunc.spark_udf`), run in
    this Python environment (`env_manager="local"`: executors use the driver's packages,
    as on local[N] or a cluster built from the same image). `result_type` is a Spark type
    or DDL string; a struct takes the columns of a pyfunc that returns a frame."""
    return mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type, env_manager="local")
