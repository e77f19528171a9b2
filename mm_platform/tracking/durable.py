"""Logging that survives the tracking server going away and coming back.

Every write of one attempt is keyed: runs carry `mm.attempt` and `mm.attempt_part` tags,
the logged model is found by its source run, the model version by its run, and metrics
carry the timestamps of the attempt, not of the write. Replaying the whole attempt after a
failure therefore finds what already landed and writes only the rest: one set of runs,
one logged model, one version, however many times the server died in between.

MLflow's own HTTP retries re-send POSTs, which can create a run twice when the server
committed it but died before answering; while an attempt is replayed they are turned off
and `replay` retries the whole attempt instead.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.entities import (
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunTag,
    ViewType,
)
from mlflow.exceptions import MlflowException

from mm_platform.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    create_version,
    ensure_registered_model,
)
from mm_platform.tracking.runs import _PARAM_LIMIT

ATTEMPT_TAG = "mm.attempt"
PART_TAG = "mm.attempt_part"

T = TypeVar("T")


@dataclass
class RunSpec:
    """Everything one run of an attempt holds; `part` names it uniquely within the attempt."""

    part: str
    name: str
    tags: dict[str, str]
    start_ms: int
    end_ms: int
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    datasets: list[tuple[Any, str]] = field(default_factory=list)  # (MLflow Dataset, context)
    artifacts: dict[str, bytes] = field(default_factory=dict)  # artifact path -> content
    status: str = "FINISHED"


class ServerGone(Exception):
    """The tracking server stayed unreachable for the whole retry budget."""

    def __init__(self, reason: str, waited: float, step: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.waited = waited
        self.step = step


_UNREACHABLE = re.compile(
    r"failed with (timeout )?exception|Max retries exceeded|Connection (refused|reset|aborted)"
    r"|RemoteDisconnected|error code (502|503|504)\b"
)


def unreachable(exc: BaseException) -> str | None:
    """A short reason when `exc` says the server could not be reached or is restarting."""
    import requests

    seen: BaseException | None = exc
    for _ in range(10):  # the chain of causes, not forever
        if seen is None:
            return None
        if isinstance(seen, (requests.ConnectionError, requests.Timeout)):
            return type(seen).__name__
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(seen, requests.HTTPError) and status in (502, 503, 504):
            return f"HTTP {status}"
        text = str(getattr(seen, "message", seen))
        if isinstance(seen, MlflowException) and _UNREACHABLE.search(text):
            answered = re.search(r"too many (\d{3}) error responses|error code (\d{3})", text)
            if answered:
                return f"HTTP {answered.group(1) or answered.group(2)}"
            for reason in ("Connection refused", "Connection reset", "RemoteDisconnected"):
                if reason in text:
                    return reason
            return "no answer" if "timeout" in text else "connection failed"
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def _no_transport_retries() -> Iterator[None]:
    key = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    before = os.environ.get(key)
    os.environ[key] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _wait_for_server(uri: str, deadline: float) -> None:
    import requests

    while time.monotonic() < deadline:
        try:  # any answer but a 5xx: the server is up (an auth app may answer 401)
            if requests.get(f"{uri.rstrip('/')}/health", timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def replay(
    attempt: Callable[[], T],
    *,
    budget_s: float,
    step: Callable[[], str] = lambda: "logging",
    notify: Callable[[str], None] | None = None,
) -> T:
    """Run `attempt` until it succeeds; while the server is unreachable, wait for it and
    run it again, for at most `budget_s` seconds in all. `step()` names what the attempt
    was trying to do, for the messages. Raises ServerGone when the budget runs out; other
    errors pass through."""
    say = notify or (lambda line: print(line, file=sys.stderr, flush=True))
    uri = mlflow.get_tracking_uri()
    started = time.monotonic()
    deadline = started + budget_s
    with _no_transport_retries():
        while True:
            try:
                return attempt()
            except Exception as exc:
                reason = unreachable(exc)
                if reason is None or not uri.startswith(("http://", "https://")):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerGone(reason, time.monotonic() - started, step()) from exc
                from mm_platform.tracking.store import redact_uri

                say(
                    f"tracking server {redact_uri(uri)} unreachable while trying to {step()} "
                    f"({reason}); retrying for up to {left:.0f} s more"
                )
                _wait_for_server(uri, deadline)
                if time.monotonic() < deadline:
                    say(f"tracking server {redact_uri(uri)} is back; resuming where it stopped")


class Attempt:
    """One attempt's runs, found again by their tags on every replay."""

    def __init__(self, key: str, experiment_id: str) -> None:
        self.key = key
        self.experiment_id = experiment_id
        self.client = MlflowClient()
        found = self.client.search_runs(
            [experiment_id],
            f"tags.`{ATTEMPT_TAG}` = '{key}'",
            run_view_type=ViewType.ALL,
            max_results=50_000,
        )
        self.runs = {r.data.tags.get(PART_TAG): r for r in found}

    def write_run(self, spec: RunSpec, parent_run_id: str | None = None) -> str:
        """Create the run of `spec` unless it exists, then write all of it (idempotent)."""
        run = self.runs.get(spec.part)
        if run is None:
            from mlflow.tracking.context.registry import resolve_tags

            tags = {**spec.tags, ATTEMPT_TAG: self.key, PART_TAG: spec.part}
            if parent_run_id:
                tags["mlflow.parentRunId"] = parent_run_id
            run = self.client.create_run(
                self.experiment_id,
                start_time=spec.start_ms,
                tags=resolve_tags(tags),
                run_name=spec.name,
            )
            self.runs[spec.part] = run
        run_id = run.info.run_id
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), spec.end_ms, 0) for k, v in spec.metrics.items()]
            + [
                Metric(k, float(v), spec.end_ms, step)
                for k, values in spec.history.items()
                for step, v in enumerate(values)
            ],
            params=[Param(k, str(v)[:_PARAM_LIMIT]) for k, v in spec.params.items()],
            tags=[RunTag(k, str(v)[:_PARAM_LIMIT]) for k, v in spec.tags.items()],
            synchronous=True,
        )
        if spec.datasets:
            self.client.log_inputs(
                run_id,
                [
                    DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
                    for dataset, context in spec.datasets
                ],
            )
        if spec.artifacts:
            _upload(self.client, run_id, spec.artifacts)
        return run_id

    def end_run(self, spec: RunSpec) -> None:
        run = self.runs[spec.part]
        self.client.set_terminated(run.info.run_id, spec.status, end_time=spec.end_ms)

    def add(
        self,
        spec: RunSpec,
        *,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """More metrics (at the run's end time) or tags for a run already written."""
        self.client.log_batch(
            self.runs[spec.part].info.run_id,
            metrics=[Metric(k, float(v), spec.end_ms, 0) for k, v in (metrics or {}).items()],
            tags=[RunTag(k, str(v)[:_PARAM_LIMIT]) for k, v in (tags or {}).items()],
            synchronous=True,
        )

    def write_model(
        self, run_id: str, params: Mapping[str, str], log: Callable[[str], Any]
    ) -> tuple[str, str]:
        """The logged model of run `run_id`: created once, linked once, uploaded until READY.

        `log(model_id)` uploads the files (e.g. `mlflow.sklearn.log_model(..., model_id=)`).
        Returns (model URI, model id).
        """
        client = self.client
        found = client.search_logged_models(
            [self.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        model = found[0] if found else None
        if model is None:
            model = client.create_logged_model(
                self.experiment_id,
                name="model",
                source_run_id=run_id,
                tags={ATTEMPT_TAG: self.key},
                params={k: str(v)[:_PARAM_LIMIT] for k, v in params.items()},
            )
        outputs = client.get_run(run_id).outputs
        linked = {o.model_id for o in (outputs.model_outputs if outputs else [])}
        if model.model_id not in linked:
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        if model.status != LoggedModelStatus.READY:
            # in a thread of its own: MLflow would link the model to a run active in this one
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                pool.submit(log, model.model_id).result()
        return f"models:/{model.model_id}", model.model_id

    def register(
        self,
        name: str,
        *,
        run_id: str,
        model_uri: str,
        model_id: str,
        tags: Mapping[str, str],
        description: str,
    ) -> tuple[str, str]:
        """The version of `name` made from run `run_id`, created once; then its alias:
        champion when the model has none, else challenger (an alias it already has stays)."""
        client = self.client
        ensure_registered_model(client, name, description)
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if found:
            number = str(found[0].version)
        else:
            number = create_version(client, name, model_uri, run_id, model_id, tags, description)
        aliases = {a: str(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
        for alias in (CHAMPION, CHALLENGER):
            if aliases.get(alias) == number:
                return number, alias
        alias = CHALLENGER if CHAMPION in aliases else CHAMPION
        client.set_registered_model_alias(name, alias, number)
        return number, alias

    def end_open_runs(self, status: str, error: str) -> None:
        """End this attempt's unfinished runs as `status` (best effort: the store may be gone,
        so no MLflow retries either)."""
        with _no_transport_retries():
            for run in self.runs.values():
                try:
                    current = self.client.get_run(run.info.run_id)
                    if current.info.status == "RUNNING":
                        self.client.set_tag(run.info.run_id, "mm.error", error[:_PARAM_LIMIT])
                        self.client.set_terminated(run.info.run_id, status)
                except Exception:
                    return


def _upload(client: MlflowClient, run_id: str, artifacts: Mapping[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for artifact, content in artifacts.items():
            path = Path(tmp) / artifact
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            folder = str(Path(artifact).parent)
            client.log_artifact(run_id, str(path), None if folder == "." else folder)
