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

from mm_platform.faults import pause_point
from mm_platform.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    create_version,
    ensure_registered_model,
)
from mm_platform.tracking.runs import _PARAM_LIMIT, end_stale_run

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


_GONE_STATUS = (429, 502, 503, 504)  # a proxy with no server behind it, or "come back later"
_BUSY_STATUS = (408, 500)  # an answer, possibly transient (a locked SQLite store): retried
_BUSY_PASSES = 3  # ... this many times, then reported as the server's answer
_NO_CONNECTION = re.compile(
    r"failed with (timeout )?exception|Max retries exceeded|Connection (refused|reset|aborted)"
    r"|RemoteDisconnected"
)


def unreachable(exc: BaseException) -> str | None:
    """A short reason when `exc` says the server could not be reached, is restarting or
    asks to come back later (connection errors, 429, 502, 503, 504); None otherwise."""
    found = transient(exc)
    return found[0] if found is not None and found[1] else None


def transient(exc: BaseException) -> tuple[str, bool] | None:
    """(reason, gone) when `exc` may pass if tried again: gone=True when the server could
    not be reached (see `unreachable`), False for a 408 or 500 answer; None otherwise."""
    import requests

    seen: BaseException | None = exc
    for _ in range(10):  # the chain of causes, not forever
        if seen is None:
            return None
        if isinstance(seen, (requests.ConnectionError, requests.Timeout)):
            return type(seen).__name__, True
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(seen, requests.HTTPError) and status is not None:
            return _by_status(status)
        text = str(getattr(seen, "message", seen))
        if isinstance(seen, MlflowException):
            answered = re.search(r"too many (\d{3}) error responses|error code (\d{3})", text)
            if answered:
                return _by_status(int(answered.group(1) or answered.group(2)))
            if _NO_CONNECTION.search(text):
                for reason in ("Connection refused", "Connection reset", "RemoteDisconnected"):
                    if reason in text:
                        return reason, True
                return ("no answer" if "timeout" in text else "connection failed"), True
        seen = seen.__cause__ or seen.__context__
    return None


def _by_status(status: int) -> tuple[str, bool] | None:
    if status in _GONE_STATUS:
        return f"HTTP {status}", True
    if status in _BUSY_STATUS:
        return f"HTTP {status}", False
    return None


@contextmanager
def no_transport_retries(budget_s: float | None = None) -> Iterator[None]:
    """MLflow's HTTP retries off (and its request timeout within `budget_s`, 10 s at least)."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    if budget_s is not None:
        timeout = int(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or 120)
        settings["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(10, min(timeout, int(budget_s))))
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    run it again, for at most `budget_s` seconds from the first failure on. `step()` names
    what the attempt was trying to do, for the messages. Raises ServerGone when the budget
    runs out; other errors pass through."""
    say = notify or (lambda line: print(line, file=sys.stderr, flush=True))
    uri = mlflow.get_tracking_uri()
    lost_since = deadline = 0.0  # the budget runs from the first failure on
    busy = passes = 0
    lost_at = ""  # the step the outage was first met at: later passes stop sooner
    with no_transport_retries(budget_s):
        while True:
            try:
                return attempt()
            except Exception as exc:
                found = transient(exc)
                if found is None or not uri.startswith(("http://", "https://")):
                    raise
                reason, gone = found
                if not lost_at:
                    lost_at, lost_since = step(), time.monotonic()
                    deadline = lost_since + budget_s
                busy += not gone
                if busy > _BUSY_PASSES:
                    raise  # the server keeps answering 500: its answer is the error
                pause = min(10.0, 0.5 * 2**passes)  # never hammer a server that is struggling
                passes += 1
                left = deadline - time.monotonic()
                if left <= pause:
                    if gone:
                        raise ServerGone(reason, time.monotonic() - lost_since, lost_at) from exc
                    raise
                from mm_platform.tracking.store import redact_uri

                what = "unreachable" if gone else "answered"
                say(
                    f"tracking server {redact_uri(uri)} {what} while trying to {step()} "
                    f"({reason}); retrying for up to {left:.0f} s more"
                )
                time.sleep(pause)
                _wait_for_server(uri, deadline)
                if gone and time.monotonic() < deadline:
                    say(f"tracking server {redact_uri(uri)} is back; resuming where it stopped")


class Attempt:
    """One attempt's runs, found again by their tags on every replay."""

    def __init__(self, key: str, experiment_id: str) -> None:
        self.key = key
        self.experiment_id = experiment_id
        self.client = MlflowClient()
        found = self.client.search_runs(  # a run deleted meanwhile is written anew
            [experiment_id],
            f"tags.`{ATTEMPT_TAG}` = '{key}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=50_000,
        )
        self.runs = {r.data.tags.get(PART_TAG): r for r in found}
        self.version: str | None = None  # the model version, once found or created
        self.alias: str | None = None  # its alias, once set

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
            pause_point(f"run:{spec.part}")
        run_id = run.info.run_id
        if "mm.error" in run.data.tags and "mm.error" not in spec.tags:
            self.client.delete_tag(run_id, "mm.error")  # left by a pass that failed for good
        self.client.log_batch(
            run_id,
            metrics=_metrics(spec.metrics, spec.end_ms)
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
            metrics=_metrics(metrics or {}, spec.end_ms),
            tags=[RunTag(k, str(v)[:_PARAM_LIMIT]) for k, v in (tags or {}).items()],
            synchronous=True,
        )

    def write_model(
        self, run_id: str, params: Mapping[str, str], log: Callable[[str, str | None], Any]
    ) -> tuple[str, str]:
        """The logged model of run `run_id`: created once, linked once, uploaded until READY.

        `log(model_id, run_id)` uploads the files (`mlflow.sklearn.log_model(..., model_id=,
        run_id=)`); given a run id, MLflow also links the model to the run and copies the
        run's metrics onto it, so it gets one only while the model is not linked yet.
        Returns (model URI, model id).
        """
        client = self.client
        found = client.search_logged_models(
            [self.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        model = found[0] if found else None
        if model is None:
            from mlflow.tracking.context.registry import resolve_tags

            model = client.create_logged_model(
                self.experiment_id,
                name="model",
                source_run_id=run_id,
                tags=resolve_tags({ATTEMPT_TAG: self.key}),
                params={k: str(v)[:_PARAM_LIMIT] for k, v in params.items()},
            )
            pause_point("logged-model")
        outputs = client.get_run(run_id).outputs
        linked = model.model_id in {o.model_id for o in (outputs.model_outputs if outputs else [])}
        if model.status != LoggedModelStatus.READY:
            # in a thread of its own: MLflow would link the model to a run active in this one
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                pool.submit(log, model.model_id, None if linked else run_id).result()
        elif not linked:
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
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
        started_ms: int,
    ) -> tuple[str, str | None]:
        """The version of `name` made from run `run_id`, created once; then its alias:
        champion when the model has none, else challenger (an alias it already has stays;
        none when @challenger is on a model whose run started after `started_ms`, as after
        a late `mm relog`)."""
        client = self.client
        ensure_registered_model(client, name, description)
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if found:
            number = str(found[0].version)
        else:
            number = create_version(client, name, model_uri, run_id, model_id, tags, description)
            pause_point("model-version")
        self.version = number
        aliases = {a: str(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
        for alias in (CHAMPION, CHALLENGER):
            if aliases.get(alias) == number:
                self.alias = alias
                return number, alias
        alias = CHALLENGER if CHAMPION in aliases else CHAMPION
        if alias == CHALLENGER and self._newer(name, aliases.get(CHALLENGER), started_ms):
            self.alias = ""  # a late re-log: @challenger stays on the newer model
            return number, None
        client.set_registered_model_alias(name, alias, number)
        self.alias = alias
        return number, alias

    def _newer(self, name: str, version: str | None, started_ms: int) -> bool:
        """Whether `version` of `name` comes from a run that started after `started_ms`."""
        if version is None:
            return False
        run_id = self.client.get_model_version(name, version).run_id
        return bool(run_id) and self.client.get_run(run_id).info.start_time > started_ms

    def end_open_runs(self, status: str, error: str) -> None:
        """End this attempt's unfinished runs as `status` (best effort: the store may be gone,
        so no MLflow retries either)."""
        with no_transport_retries():
            for run in self.runs.values():
                try:
                    if self.client.get_run(run.info.run_id).info.status == "RUNNING":
                        end_stale_run(run.info.run_id, status, {"mm.error": error})
                except Exception:
                    return


def _metrics(values: Mapping[str, float], timestamp: int) -> list[Metric]:
    """Step-0 metrics at `timestamp`; None and NaN (a score that could not be computed) are
    left out, as MLflow's UI would show them as missing anyway."""
    return [
        Metric(k, float(v), timestamp, 0) for k, v in values.items() if v is not None and v == v
    ]


def _upload(client: MlflowClient, run_id: str, artifacts: Mapping[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for artifact, content in artifacts.items():
            path = Path(tmp) / artifact
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            folder = str(Path(artifact).parent)
            client.log_artifact(run_id, str(path), None if folder == "." else folder)
