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

import itertools
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
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
from mm_platform.tracking import tags
from mm_platform.tracking.outage import (  # noqa: F401 (re-exported for training and tests)
    ServerGone,
    no_transport_retries,
    replay,
    transient,
    unreachable,
)
from mm_platform.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    create_version,
    ensure_registered_model,
)
from mm_platform.tracking.runs import _PARAM_LIMIT, end_stale_run

ATTEMPT_TAG = tags.ATTEMPT
PART_TAG = tags.ATTEMPT_PART

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


def retry_budget() -> float:
    """How long a command rides out a tracking server that went away: MM_TRACKING_RETRY
    (whole seconds or a duration such as 5m; default 2 min)."""
    from mm_platform.project.config import parse_duration

    text = (os.environ.get("MM_TRACKING_RETRY") or "2m").strip()
    return float(text) if text.isdigit() else float(parse_duration(text))


def write_command(
    experiment: str,
    write: Callable[[Attempt], T],
    *,
    what: str,
    budget_s: float | None = None,
) -> T:
    """Write one command's runs with `write(attempt)` into `experiment`, replayed while the
    tracking server is away (see `replay`; budget: `retry_budget()`).

    When the server stays away, TrackingError says so. On any failure the attempt's open
    runs end FAILED (KILLED on Ctrl-C) and a version left without the alias it was to get
    is deleted, so no model is left half-registered.
    """
    from mm_platform.errors import TrackingError
    from mm_platform.tracking.runs import experiment_id_for, tracking_error
    from mm_platform.tracking.store import outer_run, redact_uri

    key = uuid.uuid4().hex
    passes: list[Attempt] = []
    where: list[tuple[str, str | None]] = []  # (experiment id, outer run id), once known

    def attempt() -> T:
        if not where:  # under `mlflow run` (or an active run) the runs nest under it
            outer = outer_run()
            where.append((outer[1], outer[0]) if outer else (experiment_id_for(experiment), None))
        log = Attempt(key, where[0][0])
        log.outer_run_id = where[0][1]
        if log.outer_run_id is None:  # the runs go to `experiment` itself: say which
            log.step = f"create a run in experiment '{experiment}'"
        if passes:  # what an earlier pass got to
            log.version, log.alias, log.name = passes[-1].version, passes[-1].alias, passes[-1].name
        passes.append(log)
        return write(log)

    def step() -> str:
        return passes[-1].step if passes else f"find or create experiment '{experiment}'"

    budget = retry_budget() if budget_s is None else budget_s
    try:
        return replay(attempt, budget_s=budget, step=step)
    except BaseException as exc:
        log = passes[-1] if passes else None
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        note = log.abandon(status, f"{type(exc).__name__}: {exc}") if log else ""
        if isinstance(exc, ServerGone):
            raise TrackingError(
                f"tracking server {redact_uri(mlflow.get_tracking_uri())} unreachable for "
                f"{exc.waited:.0f} s ({exc.reason}) while trying to {exc.step}; {what} is not "
                f"recorded{note}; run it again once the server is back"
            ) from exc
        if isinstance(exc, MlflowException):
            raise TrackingError(f"{tracking_error(exc, step())}{note}") from exc
        raise


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
        self.alias: str | None = None  # its alias, once set ("" when it is to have none)
        self.name = ""  # the registered model, once a version is made
        self.outer_run_id: str | None = None  # the run a command's runs nest under
        self.step = "create a run"  # what the writer is doing, for the messages

    def _free_name(self, name: str) -> str:
        """`name`, or `name #2`, `#3`, ... when a run of the experiment already has it.

        Only a command's own run needs this (its children's names differ within it), and its
        name already holds the second it started, so the suffix is rare: a re-run of one
        drift window, or two commands started in the same second."""
        if "'" in name and '"' in name:  # cannot be quoted in a filter; the time suffices
            return name
        quote = '"' if "'" in name else "'"
        found = self.client.search_runs(
            [self.experiment_id],
            f"attributes.run_name LIKE {quote}{name}%{quote}",
            max_results=1000,
        )
        taken = {run.info.run_name for run in found}
        names = (name if n == 1 else f"{name} #{n}" for n in itertools.count(1))
        return next(free for free in names if free not in taken)

    def write_run(self, spec: RunSpec, parent_run_id: str | None = None) -> str:
        """Create the run of `spec` unless it exists, then write all of it (idempotent)."""
        run = self.runs.get(spec.part)
        if run is None:
            from mlflow.tracking.context.registry import resolve_tags

            run_tags = {**spec.tags, ATTEMPT_TAG: self.key, PART_TAG: spec.part}
            if parent_run_id:
                run_tags["mlflow.parentRunId"] = parent_run_id
            own = parent_run_id in (None, self.outer_run_id)  # the command's own run
            run = self.client.create_run(
                self.experiment_id,
                start_time=spec.start_ms,
                tags=resolve_tags(run_tags),
                run_name=self._free_name(spec.name) if own else spec.name,
            )
            self.runs[spec.part] = run
            pause_point(f"run:{spec.part}")
        run_id = run.info.run_id
        if tags.ERROR in run.data.tags and tags.ERROR not in spec.tags:
            self.client.delete_tag(run_id, tags.ERROR)  # left by a pass that failed for good
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
        artifacts: Mapping[str, bytes] | None = None,
    ) -> None:
        """More metrics (at the run's end time), tags or artifacts for a run already written."""
        run_id = self.runs[spec.part].info.run_id
        self.client.log_batch(
            run_id,
            metrics=_metrics(metrics or {}, spec.end_ms),
            tags=[RunTag(k, str(v)[:_PARAM_LIMIT]) for k, v in (tags or {}).items()],
            synchronous=True,
        )
        if artifacts:
            _upload(self.client, run_id, artifacts)

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
            outputs = client.get_run(run_id).outputs  # a flavor without run_id links nothing
            done = outputs.model_outputs if outputs else []
            linked = model.model_id in {o.model_id for o in done or []}
        if not linked:
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
        started_ms: int = 0,
        alias: str | None = None,
        assign_alias: bool = True,
    ) -> tuple[str, str | None]:
        """The version of `name` made from run `run_id`, created once; then its alias:
        `alias` when given, none with `assign_alias=False`, else champion when the model has
        none, challenger otherwise (an alias it already has stays; none when @challenger is
        on a model whose run started after `started_ms`, as after a late `mm relog`)."""
        client = self.client
        ensure_registered_model(client, name, description)
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if found:
            number = str(found[0].version)
        else:
            number = create_version(client, name, model_uri, run_id, model_id, tags, description)
            pause_point("model-version")
        self.version, self.name = number, name
        if not assign_alias:
            self.alias = ""  # none wanted: the version is complete without one
            return number, None
        aliases = {a: str(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
        if alias is not None:  # a fixed alias moves onto this version
            if aliases.get(alias) != number:
                client.set_registered_model_alias(name, alias, number)
            self.alias = alias
            return number, alias
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
        if not run_id:
            return False
        return self.client.get_run(run_id).info.start_time > started_ms

    def abandon(self, status: str, error: str) -> str:
        """End the open runs as `status`; delete a version that did not get the alias it
        was to have. Returns a sentence for the error message ("" when nothing to say)."""
        self.end_open_runs(status, error)
        if self.version is None or self.alias is not None:
            return ""
        try:
            with no_transport_retries():
                self.client.delete_model_version(self.name, self.version)
        except Exception:
            return f" (version {self.version} has no alias: delete it or run again)"
        return f" (version {self.version}, left without its alias, was deleted)"

    def end_open_runs(self, status: str, error: str) -> None:
        """End this attempt's unfinished runs as `status` (best effort: the store may be gone,
        so no MLflow retries either)."""
        with no_transport_retries():
            for run in self.runs.values():
                try:
                    if self.client.get_run(run.info.run_id).info.status == "RUNNING":
                        end_stale_run(run.info.run_id, status, {tags.ERROR: error})
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
