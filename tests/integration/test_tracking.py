"""The tracking layer against a real SQLite-backed MLflow store."""

from __future__ import annotations

import pytest

from mm_platform import tracking
from mm_platform.errors import TrackingError
from tests.support import free_port


def test_run_ends_failed_on_exception_and_keeps_standard_tags(store: str) -> None:
    import mlflow

    with (
        pytest.raises(RuntimeError, match="boom"),
        tracking.tracked_run("train", "demo", "train/demo"),
    ):
        run_id = mlflow.active_run().info.run_id
        raise RuntimeError("boom")
    run = mlflow.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mm.error"] == "RuntimeError: boom"
    assert run.data.tags["mm.run_type"] == "train"
    assert run.data.tags["mm.project"] == "demo"
    assert mlflow.get_experiment(run.info.experiment_id).name == "demo"
    assert mlflow.active_run() is None


def test_nested_run_shares_parent_experiment_and_outer_run_is_not_touched(store: str) -> None:
    import mlflow

    with mlflow.start_run() as outer:  # opened by the user, not by mm_platform
        with (
            tracking.tracked_run("train", "demo", "train/demo") as parent,
            tracking.tracked_run("train", "demo", "child") as child,
        ):
            pass
        assert mlflow.active_run().info.run_id == outer.info.run_id
        assert mlflow.get_run(outer.info.run_id).info.status == "RUNNING"
    child_run = mlflow.get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child_run.info.experiment_id == parent.info.experiment_id == outer.info.experiment_id


def test_run_opened_by_mlflow_run_is_parent_and_left_running(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment("projects-run")
    outer = client.create_run(experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", outer.info.run_id)
    with tracking.tracked_run("train", "demo", "train/demo") as run:
        pass
    mine = client.get_run(run.info.run_id)
    assert mine.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert mine.info.experiment_id == experiment_id
    assert mine.info.status == "FINISHED"
    assert client.get_run(outer.info.run_id).info.status == "RUNNING"


def test_unreachable_server_names_uri_and_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(
        TrackingError,
        match=rf"cannot reach the MLflow tracking server at {uri} .*MLFLOW_TRACKING_URI",
    ):
        tracking.connect()


def test_failed_alias_undoes_the_version(store: str) -> None:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    model = LinearRegression().fit(X, [1.0, 3.0, 5.0, 7.0])
    with tracking.tracked_run("train", "demo", "reg") as run:
        info = tracking.log_sklearn_model(model, X)
        # "v1" is reserved by the registry, so setting it fails after the version exists
        with pytest.raises(
            TrackingError, match=r"registering demo version 1 failed and was undone"
        ):
            tracking.register_with_alias(
                "demo", model_uri=info.model_uri, run_id=run.info.run_id,
                model_id=info.model_id, tags={}, alias="v1",
            )  # fmt: skip
    assert MlflowClient().search_model_versions("name='demo'") == []
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"


def test_an_experiment_mm_writes_into_is_tagged_classic_ml_unless_it_has_a_kind(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    kind = "mlflow.experimentKind"
    client = MlflowClient()
    chosen = client.create_experiment("chosen-by-mlflow-run")  # as `mlflow run` makes it
    genai = client.create_experiment("demo", tags={kind: "genai_development"})
    monkeypatch.setenv("MLFLOW_RUN_ID", client.create_run(chosen).info.run_id)
    with tracking.tracked_run("train", "demo", "train/demo"):
        pass
    assert client.get_experiment(chosen).tags[kind] == "custom_model_development"
    tracking.experiment_id_for("demo")
    assert client.get_experiment(genai).tags[kind] == "genai_development"  # a choice stays
