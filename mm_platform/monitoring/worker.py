"""Evidently's side of a drift job: in this process, or in a second one started early.

Importing Evidently costs 4-9 s of one core (its package `__init__` builds hundreds of
pydantic classes), as long as the rest of a 300,000-row job. A job on the pandas engine
therefore starts `Worker` first: a spawned process that imports Evidently while this one
imports MLflow, loads the version and scores the window, on the other core. The frames
then go to it through a pipe (tens of MB: a fraction of a second), it computes the drift
and renders the report, and sends back the results, the HTML and the snapshot. This
process never imports Evidently. `Local` does the same work in this process: the Spark
engine (which computes in Spark and needs Evidently's tests here), a run with an Evidently
workspace (which needs the snapshot object), and the fallback when the worker cannot
start or dies.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from mm_platform.monitoring.results import DriftResult


@dataclasses.dataclass
class Rendered:
    """A window's report: the HTML and snapshot bytes the run logs, and the snapshot object
    itself where it was rendered in this process (None from the worker)."""

    html: bytes
    snapshot_json: bytes
    snapshot: Any = None


class Local:
    """Drift and report in this process; Evidently is imported on first use."""

    def __init__(self) -> None:
        self._result: DriftResult | None = None

    def compute(self, reference: Any, current: Any, specs: Any, **kwargs: Any) -> DriftResult:
        from mm_platform.monitoring.drift import compute

        self._result = compute(reference, current, specs, **kwargs)
        return self._result

    def report(self, *args: Any, result: DriftResult | None = None, **kwargs: Any) -> Rendered:
        """`report.drift_report(project, result, ...)` of `result`, by default the last one
        `compute` returned."""
        from mm_platform.monitoring.report import drift_report

        project, *rest = args
        chosen = result if result is not None else self._result
        if chosen is None:
            raise RuntimeError("report() before compute(): no drift result to render")
        snapshot = drift_report(project, chosen, *rest, **kwargs)
        html = snapshot.get_html_str(as_iframe=False).encode()
        return Rendered(html, snapshot.dumps().encode(), snapshot)

    def close(self) -> None:
        self._result = None


class Worker:
    """`Local`'s work in a spawned process that starts importing Evidently at once. If it
    cannot start or dies, the work falls back to `Local` in this process."""

    def __init__(self) -> None:
        self._fallback: Local | None = None
        self._process: Any = None
        try:
            context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
            self._conn, child = context.Pipe()
            self._process = context.Process(
                target=_serve, args=(child,), name="mm-evidently", daemon=True
            )
            self._process.start()
            child.close()
        except OSError:
            self._fallback = Local()

    def compute(self, reference: Any, current: Any, specs: Any, **kwargs: Any) -> DriftResult:
        result: DriftResult = self._call("compute", (reference, current, specs), kwargs)
        return result

    def report(self, *args: Any, result: DriftResult | None = None, **kwargs: Any) -> Rendered:
        if result is not None:  # results from elsewhere carry Evidently objects: render here
            return self._local().report(*args, result=result, **kwargs)
        html, snapshot_json = self._call("report", args, kwargs)
        return Rendered(html, snapshot_json)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._fallback is not None:
            return getattr(self._fallback, name)(*args, **kwargs)
        try:
            self._conn.send((name, args, kwargs))
            ok, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):  # the worker died (e.g. out of memory)
            self.close()
            self._fallback = Local()
            if name == "report":  # its computed result died with it: compute again here
                raise RuntimeError("the Evidently worker process died") from None
            return getattr(self._fallback, name)(*args, **kwargs)
        if not ok:
            raise value
        return value

    def _local(self) -> Local:
        if self._fallback is None:
            self._fallback = Local()
        return self._fallback

    def close(self) -> None:
        """Stop the worker process (it is a daemon: it never outlives this one either)."""
        process = self._process
        if process is None:
            return
        try:
            self._conn.send(None)
            self._conn.close()
        except OSError:
            pass
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
        self._process = None


def _serve(conn: Connection) -> None:
    """The worker: import Evidently, then compute and render until told to stop."""
    import warnings

    warnings.simplefilter("ignore")  # the parent shows what a user needs to see
    import mm_platform.monitoring.drift
    import mm_platform.monitoring.report  # noqa: F401

    local = Local()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        name, args, kwargs = task
        try:
            if name == "compute":
                result = local.compute(*args, **kwargs)
                value: Any = _without_evidently(result)
            else:
                rendered = local.report(*args, **kwargs)
                value = (rendered.html, rendered.snapshot_json)
            conn.send((True, value))
        except Exception as exc:  # the parent raises it (e.g. a misconfigured method)
            conn.send((False, exc))


def _without_evidently(result: DriftResult) -> DriftResult:
    """`result` without the Evidently objects kept for the report (they stay here)."""
    columns = [dataclasses.replace(c, evidently=None) for c in result.columns]
    return dataclasses.replace(result, columns=columns)
