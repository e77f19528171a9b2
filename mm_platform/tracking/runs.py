"""Scoped MLflow runs with the standard tags, and the few ways the project logs into them."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.data.pandas_dataset
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mm_platform.errors import TrackingError
from mm_platform.tracking import tags as keys

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_PARAM_LIMIT = 6000  # MLflow's maximum param value length
# MLflow 3's UI picks its layout from this tag; untagged experiments are often guessed GenAI
KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = {KIND_TAG: "custom_model_development"}


def experiment_id_for(name: str) -> str:
    """The id of experiment `name`, created (tagged as classic ML) if it does not exist yet."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags=EXPERIMENT_KIND)
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment '{name}' is deleted; restore it with "
            f"`mlflow experiments restore --experiment-id {experiment.experiment_id}` "
            "or permanently delete it with `mlflow gc`"
        )
    _mark_classic(client, experiment)
    return experiment.experiment_id


def mark_experiment_classic(experiment_id: str) -> None:
    """Tag experiment `experiment_id` (one mm writes into but may not have made, e.g. the one
    `mlflow run` chose) as classic ML when it says no kind yet."""
    client = MlflowClient()
    _mark_classic(client, client.get_experiment(experiment_id))


def _mark_classic(client: MlflowClient, experiment: Any) -> None:
    # only when missing: a kind someone chose stays, and a tagged experiment costs nothing
    if KIND_TAG in experiment.tags:
        return
    try:
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, EXPERIMENT_KIND[KIND_TAG])
    except MlflowException as exc:  # the layout hint is not worth failing a command for
        logger.debug("could not tag experiment %s: %s", experiment.name, exc)


@contextmanager
def tracked_run(
    run_type: str,
    project: str,
    run_name: str,
    *,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open a run tagged `mm.run_type` and `mm.project`; end it FAILED if the body raises.

    With a run already active the new run nests under it. Under `mlflow run` (which sets
    `MLFLOW_RUN_ID`) the new run nests under MLflow's run. Runs this function did not open
    are never resumed, ended or re-tagged.
    """
    all_tags = {keys.RUN_TYPE: run_type, keys.PROJECT: project, **(tags or {})}
    kwargs: dict[str, Any] = {"run_name": run_name, "tags": all_tags}
    outer_run_id = os.environ.get("MLFLOW_RUN_ID")
    active = mlflow.active_run()
    if active is not None:
        kwargs["nested"] = True
        kwargs["experiment_id"] = active.info.experiment_id
    elif outer_run_id:
        # `mlflow run` opened this run for us; fluent start_run() would resume and later end
        # it, so nest under it instead and leave its lifecycle to MLflow.
        os.environ.pop("MLFLOW_RUN_ID")
        outer = MlflowClient().get_run(outer_run_id)
        kwargs["parent_run_id"] = outer_run_id
        kwargs["experiment_id"] = outer.info.experiment_id
        mark_experiment_classic(outer.info.experiment_id)
    where = experiment or project
    try:
        if "experiment_id" not in kwargs:
            kwargs["experiment_id"] = experiment_id_for(where)
        run = mlflow.start_run(**kwargs)
    except MlflowException as exc:
        raise tracking_error(exc, f"create a run in experiment '{where}'") from exc
    try:
        yield run
    except KeyboardInterrupt:
        _end_quietly("KILLED")
        raise
    except MlflowException as exc:
        _end_quietly("FAILED", exc)
        raise tracking_error(exc) from exc
    except BaseException as exc:
        _end_quietly("FAILED", exc)
        raise
    else:
        mlflow.end_run("FINISHED")


def _end_quietly(status: str, exc: BaseException | None = None) -> None:
    # the store may be the thing that failed; the original error matters more
    if exc is not None:
        with contextlib.suppress(Exception):
            mlflow.set_tag(keys.ERROR, f"{type(exc).__name__}: {exc}"[:_PARAM_LIMIT])
    with contextlib.suppress(Exception):
        mlflow.end_run(status)


def tracking_error(exc: MlflowException, action: str = "do this") -> TrackingError:
    from mm_platform.tracking.store import auth_message, redact_uri

    denied = auth_message(exc, action)
    message = denied or str(exc.message if hasattr(exc, "message") else exc).splitlines()[0]
    return TrackingError(f"MLflow store {redact_uri(mlflow.get_tracking_uri())}: {message}")


def log_params(params: Mapping[str, Any], prefix: str = "") -> None:
    """Log params to the active run, prefixed and cut to MLflow's value limit."""
    mlflow.log_params({f"{prefix}{k}": str(v)[:_PARAM_LIMIT] for k, v in params.items()})


def log_metrics(metrics: Mapping[str, float]) -> None:
    """Log finite metrics to the active run in one call."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and v == v}
    if clean:
        mlflow.log_metrics(clean)


@dataclass(frozen=True)
class DatasetEntry:
    """A frame as MLflow's dataset tracking records it, ready for `log_inputs`."""

    entity: Any
    digest: str


def dataset_entity(frame: pd.DataFrame, *, name: str, source: str, targets: str) -> DatasetEntry:
    """`frame` as a run input MLflow's dataset tracking records (digest, schema, source),
    built without logging it."""
    dataset = mlflow.data.pandas_dataset.from_pandas(
        frame, source=_dataset_source(source), targets=targets, name=name
    )
    return DatasetEntry(dataset._to_mlflow_entity(), dataset.digest)


def dataset_digest(frame: pd.DataFrame, *, targets: str) -> str:
    """The digest MLflow's dataset tracking records for `frame`, without logging anything."""
    return mlflow.data.pandas_dataset.from_pandas(frame, targets=targets).digest


def _dataset_source(source: str) -> Any:
    if os.path.exists(source):
        return str(Path(source).resolve())
    from mlflow.data.code_dataset_source import CodeDatasetSource

    return CodeDatasetSource(tags={keys.GENERATOR: source})


def log_figure(figure: Figure, artifact_file: str) -> None:
    """Log a matplotlib figure as an image artifact and close it."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def log_frame(frame: pd.DataFrame, artifact_file: str) -> None:
    """Log a frame as a Parquet artifact (`reference/reference.parquet`, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_parquet(path, index=False)
        folder = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), None if folder == "." else folder)


def set_tags(tags: Mapping[str, str]) -> None:
    """Set tags on the active run."""
    mlflow.set_tags(dict(tags))


def log_text(text: str, artifact_file: str) -> str:
    """Log text as an artifact of the active run; return where the artifact store keeps it."""
    mlflow.log_text(text, artifact_file)
    return mlflow.get_artifact_uri(artifact_file)


def load_frame(run_id: str, artifact_file: str) -> pd.DataFrame:
    """A Parquet artifact of run `run_id` as a frame."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_file, dst_path=tmp
        )
        return pd.read_parquet(local)


def load_artifact_bytes(run_id: str, artifact_file: str) -> bytes | None:
    """The bytes of an artifact of run `run_id`, or None when the run has no such file."""
    folder = artifact_file.rpartition("/")[0] or None
    listed = MlflowClient().list_artifacts(run_id, folder)
    if not any(item.path == artifact_file and not item.is_dir for item in listed):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_file, dst_path=tmp
        )
        return Path(local).read_bytes()


def recent_runs(experiment: str, filter_string: str, max_results: int) -> list[Any]:
    """The newest runs of `experiment` matching `filter_string` (newest first)."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(
        client.search_runs(
            [found.experiment_id],
            filter_string=filter_string,
            max_results=max_results,
            order_by=["attributes.start_time DESC"],
        )
    )


def set_run_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """Set tags on a run that is not active (e.g. a finished drift run)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value)[:_PARAM_LIMIT])


def end_stale_run(run_id: str, status: str, tags: Mapping[str, str]) -> None:
    """End a run some other process left open (it was killed) as `status`, with tags."""
    set_run_tags(run_id, tags)
    MlflowClient().set_terminated(run_id, status=status)
