"""Compression methods on real fitted models, and their round trip through MLflow."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from sklearn import datasets
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor

from mm_platform.compression import methods
from mm_platform.compression.compile import UnsupportedModel, compile_pipeline
from mm_platform.compression.mm_compressed import CompressedModel
from mm_platform.errors import ProjectConfigError, TrackingError
from mm_platform.modeling.features import build_pipeline
from mm_platform.project.config import Features, load_project
from tests.support import SEED_LINEAR, free_port, mm, write_project


def _frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])


REG_X, REG_Y = datasets.make_friedman1(500, random_state=0)
REG_X = _frame(REG_X)
CLF_X, CLF_Y = datasets.make_classification(500, 6, n_informative=4, n_classes=3, random_state=0)
CLF_X = _frame(CLF_X)

ESTIMATORS = [
    ("regression", Ridge()),
    ("regression", MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0)),
    ("regression", RandomForestRegressor(n_estimators=8, random_state=0)),
    ("regression", GradientBoostingRegressor(n_estimators=15, random_state=0)),
    ("multiclass", LogisticRegression(max_iter=500)),
    ("multiclass", MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0)),
    ("multiclass", RandomForestClassifier(n_estimators=8, random_state=0)),
    ("multiclass", GradientBoostingClassifier(n_estimators=5, random_state=0)),
]


def _fit(task: str, estimator, features: Features | None = None):
    X, y = (REG_X, REG_Y) if task == "regression" else (CLF_X, CLF_Y)
    features = features or Features(polynomial_degree=2 if "Ridge" in str(estimator) else 1)
    return build_pipeline(features, list(X.columns), estimator, task).fit(X, y), X, y


@pytest.mark.parametrize(("task", "estimator"), ESTIMATORS, ids=lambda e: type(e).__name__)
def test_uncompressed_runtime_reproduces_sklearn(task: str, estimator) -> None:
    pipeline, X, _ = _fit(task, estimator)
    compiled = compile_pipeline(pipeline)
    if task == "regression":
        np.testing.assert_allclose(compiled.predict(X), pipeline.predict(X), rtol=1e-9, atol=1e-9)
    else:
        np.testing.assert_array_equal(compiled.predict(X), pipeline.predict(X))
        np.testing.assert_allclose(compiled.predict_proba(X), pipeline.predict_proba(X), atol=1e-9)


def _messy_frame(n: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    """Missing numbers, an all-missing column, a categorical column with None and NaN."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "empty": np.full(n, np.nan),
            "city": rng.choice(np.array(["Paris", "Lyon", None, np.nan], dtype=object), n),
        }
    )
    y = X["a"] * 3 + (X["city"] == "Paris") * 2 + rng.normal(0, 0.1, n)
    X.loc[rng.choice(n, 40, replace=False), "a"] = np.nan
    return X, y.to_numpy()


@pytest.mark.parametrize(
    "estimator",
    [
        Ridge(),
        MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0),
        RandomForestRegressor(n_estimators=5, random_state=0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_runtime_matches_sklearn_on_missing_values_and_none_categories(estimator) -> None:
    X, y = _messy_frame()
    features = Features(categorical=["city"])
    pipeline = build_pipeline(features, list(X.columns), estimator, "regression").fit(X, y)
    np.testing.assert_allclose(
        compile_pipeline(pipeline).predict(X), pipeline.predict(X), atol=1e-9
    )


def test_trees_route_missing_values_like_sklearn() -> None:
    X, y = _messy_frame()
    X = X[["a", "b"]]
    features = Features(impute="none")
    forest = RandomForestRegressor(n_estimators=5, random_state=0)
    pipeline = build_pipeline(features, ["a", "b"], forest, "regression").fit(X, y)
    probe = X.assign(b=np.where(np.arange(len(X)) % 3 == 0, np.nan, X["b"]))
    np.testing.assert_allclose(compile_pipeline(pipeline).predict(probe), pipeline.predict(probe))


def test_linear_without_imputation_refuses_missing_values_like_sklearn() -> None:
    X, y = _messy_frame()
    X = X[["b"]].assign(a=np.arange(len(X), dtype=float))
    pipeline = build_pipeline(Features(impute="none"), ["b", "a"], Ridge(), "regression").fit(X, y)
    probe = X.assign(a=np.nan)
    with pytest.raises(ValueError, match="contains NaN"):
        pipeline.predict(probe)
    with pytest.raises(ValueError, match="contains NaN"):
        compile_pipeline(pipeline).predict(probe)


def test_float16_out_of_range_is_a_skip_reason() -> None:
    X, y = REG_X, REG_Y * 1e7
    pipeline = build_pipeline(Features(), list(X.columns), Ridge(), "regression").fit(X, y)
    with pytest.raises(UnsupportedModel, match=r"float16 cannot hold this model: coef holds"):
        methods.quantize(pipeline, 16, per_channel=False)


@pytest.mark.parametrize(
    ("metric", "parent", "value", "expected"),
    [
        ("rmse", 2.0, 2.2, 0.1),
        ("r2", 0.5, 0.6, -0.2),
        ("r2", 0.0, 0.2, -np.inf),
        ("r2", 0.0, -0.2, np.inf),
        ("rmse", 0.0, 0.0, 0.0),
    ],
)
def test_relative_change_is_positive_when_worse(metric, parent, value, expected) -> None:
    from mm_platform.modeling.metrics import relative_change

    assert relative_change(metric, parent, value) == pytest.approx(expected)


def _workspace(pipeline, X, y, **compression) -> methods.Workspace:
    data = copy.deepcopy(SEED_LINEAR)
    data["compression"] = compression
    from mm_platform.project.config import Project

    project = Project.model_validate(data)
    return methods.Workspace(project, pipeline, X, y, X.iloc[:100], pd.Series(y[:100]))


def test_int8_artifact_stores_integers_and_shrinks(tmp_path: Path) -> None:
    pipeline, X, _ = _fit(
        "regression", MLPRegressor(hidden_layer_sizes=(64,), max_iter=300, random_state=0)
    )
    full, q8 = compile_pipeline(pipeline), methods.quantize(pipeline, 8, per_channel=True)
    full.save(tmp_path / "full")
    q8.save(tmp_path / "int8")
    stored = CompressedModel.load(tmp_path / "int8").arrays  # as read back from disk
    assert stored["W0"].dtype == np.int8 and stored["W1"].dtype == np.int8
    assert stored["W0.scale"].shape == (1, 64)  # one scale per output channel
    assert np.abs(stored["W0"]).max() == 127
    weights = ("W0", "W0.scale", "b0", "W1", "W1.scale", "b1")
    assert sum(q8.arrays[k].nbytes for k in weights) < 0.3 * sum(
        full.arrays[k].nbytes for k in weights if k in full.arrays
    )
    # the file also holds preprocessing arrays and zip headers, which do not shrink
    assert (tmp_path / "int8" / "arrays.bin").stat().st_size < 0.5 * (
        tmp_path / "full" / "arrays.bin"
    ).stat().st_size
    loaded = CompressedModel.load(tmp_path / "int8")
    np.testing.assert_array_equal(loaded.predict(X), q8.predict(X))
    # every weight is within half a quantization step of the original
    original = pipeline.named_steps["model"].coefs_[0]
    step = q8.arrays["W0.scale"].astype(np.float64)
    assert np.all(np.abs(loaded._params["W0"] - original) <= step / 2 + 1e-12)


def test_float16_keeps_predictions_close() -> None:
    pipeline, X, _ = _fit(
        "regression", MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0)
    )
    f16 = methods.quantize(pipeline, 16, per_channel=False)
    assert f16.arrays["W0"].dtype == np.float16
    np.testing.assert_allclose(f16.predict(X), pipeline.predict(X), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
@pytest.mark.parametrize("refit_epochs", [0, 3])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_magnitude_pruned_mlp_has_the_stated_sparsity(
    sparsity: float, refit_epochs: int, early_stopping: bool
) -> None:
    mlp = MLPRegressor(
        hidden_layer_sizes=(32,), max_iter=300, random_state=0, early_stopping=early_stopping
    )
    pipeline, X, y = _fit("regression", mlp)
    pruned = methods.magnitude_prune(_workspace(pipeline, X, y), sparsity, refit_epochs)
    for name in ("W0", "W1"):
        weights = pruned._params[name]
        assert (weights == 0).sum() == int(np.floor(sparsity * weights.size))
    # the biases are not pruned, and the kept weights are the largest of the parent's
    original = pipeline.named_steps["model"].coefs_[0]
    kept = pruned._params["W0"] != 0
    if refit_epochs == 0:
        assert np.abs(original[kept]).min() >= np.abs(original[~kept]).max()
    assert pruned.n_nonzero() < pruned.n_params()


def test_l1_proximal_step_is_soft_thresholding_and_minimises_the_objective() -> None:
    pipeline, _, _ = _fit("regression", Ridge(alpha=0.1))
    theta = pipeline.named_steps["model"].coef_
    lam = 2 * float(np.median(np.abs(theta)))  # threshold λ/2 at the median: half become 0
    pruned = methods.l1_prune(pipeline, lam)._params["coef"].ravel()
    np.testing.assert_allclose(pruned, np.sign(theta) * np.maximum(np.abs(theta) - lam / 2, 0))
    assert (pruned == 0).sum() >= len(theta) // 2

    def objective(t: np.ndarray) -> float:
        return float(np.sum((t - theta) ** 2) + lam * np.sum(np.abs(t)))

    rng = np.random.default_rng(0)
    for _ in range(200):
        assert objective(pruned) <= objective(pruned + rng.normal(0, 0.01, len(theta))) + 1e-12


def test_ensemble_pruning_keeps_k_trees_chosen_on_validation() -> None:
    pipeline, X, y = _fit("regression", RandomForestRegressor(n_estimators=20, random_state=0))
    ws = _workspace(pipeline, X, y)
    pruned = methods.prune_ensemble(ws, 5)
    assert len(pruned.arrays["t.roots"]) == 5
    err_pruned = np.mean((pruned.predict(ws.X_val) - ws.y_val) ** 2)
    first_five = compile_pipeline(pipeline, trees=pipeline.named_steps["model"].estimators_[:5])
    assert err_pruned <= np.mean((first_five.predict(ws.X_val) - ws.y_val) ** 2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda ws: methods.l1_prune(ws.parent, 0.1),
            r"L1 proximal pruning applies to linear models; the parent is MLPRegressor",
        ),
        (
            lambda ws: methods.prune_ensemble(ws, 3),
            r"ensemble pruning applies to tree forests, gradient boosting; the parent is MLP",
        ),
    ],
)
def test_unsupported_family_is_a_skip_reason(make, message: str) -> None:
    pipeline, X, y = _fit(
        "regression", MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0)
    )
    with pytest.raises(UnsupportedModel, match=message):
        make(_workspace(pipeline, X, y))


@pytest.mark.parametrize("kind", ["boosting", "mlp", "linear_poly"])
def test_distilled_student_follows_the_teacher(kind: str) -> None:
    pipeline, X, y = _fit("regression", RandomForestRegressor(n_estimators=30, random_state=0))
    ws = _workspace(pipeline, X, y, distill={"students": [{"kind": kind}], "n_jitter_copies": 1})
    student = methods.distill(ws, ws.project.compression.distill.students[0])
    teacher = pipeline.predict(X)
    agreement = 1 - np.mean((student.predict(X) - teacher) ** 2) / np.var(teacher)
    assert agreement > 0.6
    assert (
        student.spec["model"]["kind"]
        == {"boosting": "trees", "mlp": "mlp", "linear_poly": "linear"}[kind]
    )


# --- through MLflow ------------------------------------------------------------------------

COMPRESSIBLE = {
    **copy.deepcopy(SEED_LINEAR),
    "candidates": [
        {
            "estimator": "mlp",
            "params": {"hidden_layer_sizes": [[16]], "learning_rate_init": 0.01, "max_iter": 500},
        }
    ],
    "compression": {
        "prune": {"sparsities": [0.5], "l1_lambdas": [0.1], "ensemble_sizes": [3]},
        "quantize": {"bits": [8, 16]},
        "distill": {"students": [{"kind": "linear_poly"}], "n_jitter_copies": 1},
    },
}


def test_compress_logs_runs_registers_versions_with_lineage(store: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from mm_platform.compression.job import compress_project
    from mm_platform.training.search import train_project

    project = load_project(write_project(tmp_path, COMPRESSIBLE))
    trained = train_project(project)
    result = compress_project(project)
    client = MlflowClient()

    made = {v.variant: v for v in result.variants if v.made}
    skipped = {v.variant: v.skipped for v in result.variants if v.skipped}
    assert set(made) == {"prune-0.5", "int8", "float16", "distill-linear_poly"}
    assert set(skipped) == {"l1-0.1", "trees-3"}
    parent_run = client.get_run(result.run_id)
    assert parent_run.data.tags["mm.run_type"] == "compress"
    assert "linear models" in parent_run.data.tags["mm.skipped.l1-0.1"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "compression")}
    assert {"compression/pareto.png", "compression/variants.json"} <= artifacts

    for name, variant in made.items():
        run = client.get_run(variant.run_id)
        assert run.data.tags["mlflow.parentRunId"] == result.run_id
        assert run.data.tags["mm.method"] == variant.method
        assert run.data.tags["mm.parent_model_version"] == trained.version
        assert run.data.tags["mm.parent_run_id"] == trained.run_id
        for metric in ("holdout_rmse", "holdout_mae", "holdout_r2", "size_bytes", "n_params",
                       "n_nonzero", "compression_ratio", "latency_ms_per_1k_rows", "speedup",
                       "delta_holdout_rmse", "relative_loss"):  # fmt: skip
            assert metric in run.data.metrics, (name, metric)
        version = client.get_model_version("tiny", variant.version)
        assert version.tags["mm.run_type"] == "compress"
        assert version.tags["mm.parent_model_version"] == trained.version
        assert version.tags["mm.method"] == variant.method
        assert f"of tiny version {trained.version}" in version.description
        assert client.get_registered_model("tiny").aliases == {"champion": trained.version} or (
            client.get_model_version_by_alias("tiny", "champion").version == int(trained.version)
        )
    assert made["int8"].metrics["size_bytes"] < result.parent_metrics["size_bytes"]

    # round trip: register -> load by version -> predict equals the in-memory variant
    X = pd.DataFrame({"x": np.linspace(0, 10, 50)})
    loaded = mlflow.pyfunc.load_model(f"models:/tiny/{made['int8'].version}")
    parent = mlflow.sklearn.load_model(f"models:/tiny/{trained.version}")
    in_memory = methods.quantize(parent, 8, per_channel=False)
    np.testing.assert_array_equal(loaded.predict(X), in_memory.predict(X))

    # the lineage tree, from registry tags alone
    tree = mm("lineage", str(project.source_path), cwd=tmp_path)
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    root = next(line for line in lines if f"v{trained.version}  train" in line)
    assert "@champion" in root and "holdout_rmse=" in root and " B" in root
    int8_line = next(line for line in lines if "compress  int8" in line)
    assert int8_line.index("v") > root.index("v")  # indented under its parent
    assert f"v{made['int8'].version}" in int8_line


def test_each_method_round_trips_through_the_registry(store: str) -> None:
    import mlflow

    from mm_platform import tracking

    pipeline, X, y = _fit("regression", RandomForestRegressor(n_estimators=10, random_state=0))
    ws = _workspace(pipeline, X, y, distill={"students": [{"kind": "mlp", "max_iter": 50}]})
    variants = {
        "int8": methods.quantize(pipeline, 8, per_channel=False),
        "trees": methods.prune_ensemble(ws, 4),
        "distill": methods.distill(ws, ws.project.compression.distill.students[0]),
    }
    with tracking.tracked_run("compress", "rf", "compress/roundtrip") as run:
        for name, model in variants.items():
            info = tracking.log_compressed_model(model, X, name=name)
            version, _ = tracking.register_with_alias(
                "rf", model_uri=info.model_uri, run_id=run.info.run_id,
                model_id=info.model_id, tags={}, assign_alias=False,
            )  # fmt: skip
            loaded = mlflow.pyfunc.load_model(f"models:/rf/{version}")
            np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_no_champion_names_project_and_train_command(store: str, tmp_path: Path) -> None:
    from mm_platform.compression.job import compress_project

    project = load_project(write_project(tmp_path, COMPRESSIBLE))
    with pytest.raises(
        TrackingError,
        match=r"tiny has no champion .*; train one first: mm train .*/project\.yaml",
    ):
        compress_project(project)


def test_project_without_compression_section(tmp_path: Path) -> None:
    from mm_platform.compression.job import compress_project

    with pytest.raises(ProjectConfigError, match=r"has no compression section"):
        compress_project(load_project(write_project(tmp_path, SEED_LINEAR)))


@pytest.mark.slow
def test_compressed_version_serves_with_mlflow_models_serve(store: str, tmp_path: Path) -> None:
    project = write_project(tmp_path, {**COMPRESSIBLE, "compression": {"quantize": {"bits": [8]}}})
    assert mm("train", str(project), cwd=tmp_path).returncode == 0
    result = mm("compress", str(project), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "int8" in result.stdout and "ratio" in result.stdout
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tiny/2",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)
        body = {"dataframe_split": {"columns": ["x"], "data": [[1.0], [5.0]]}}
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert answer.status_code == 200
        import mlflow

        served = answer.json()["predictions"]
        loaded = mlflow.pyfunc.load_model("models:/tiny/2")
        expected = loaded.predict(pd.DataFrame({"x": [1.0, 5.0]}))
        np.testing.assert_allclose(served, expected, rtol=1e-12)
        assert served[1] - served[0] == pytest.approx(12.0, abs=1.5)  # y = 3x + 2
        bad = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": {"columns": ["z"], "data": [[1.0]]}}, timeout=30,
        )  # fmt: skip
        assert bad.status_code == 400
    finally:
        server.terminate()
        server.wait(30)


def test_changed_training_data_refuses_to_compare(store: str, tmp_path: Path) -> None:
    from mm_platform.compression.job import compress_project
    from mm_platform.errors import DataError
    from mm_platform.training.search import train_project

    path = write_project(tmp_path, {**COMPRESSIBLE, "compression": {"quantize": {"bits": [8]}}})
    train_project(load_project(path))
    changed = copy.deepcopy(COMPRESSIBLE)
    changed["dataset"] = {**changed["dataset"], "n_samples": 300}
    changed["compression"] = {"quantize": {"bits": [8]}}
    with pytest.raises(DataError, match=r"not what tiny version 1 was trained on .*retrain first"):
        compress_project(load_project(write_project(tmp_path, changed)))
