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
import os
import pickle
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

    def start_compute(self, reference: Any, current: Any, specs: Any, **kwargs: Any) -> None:
        """`compute`, its result collected by `compute_result` (here: computed at once)."""
        self.compute(reference, current, specs, **kwargs)

    def compute_result(self) -> DriftResult:
        if self._result is None:
            raise RuntimeError("compute_result() before start_compute()")
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
    """`Local`'s work in a child Python (`python -m mm_platform.monitoring.worker`) that
    starts importing Evidently at once; requests and results are pickles over its stdin
    and stdout. A plain subprocess rather than multiprocessing's spawn, which would re-run
    the caller's main script in the child. If it cannot start or dies, the work falls back
    to `Local` in this process."""

    def __init__(self) -> None:
        self._fallback: Local | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pending: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})
        self._sent = False
        try:
            self._process = subprocess.Popen(
                # -P: not the working directory first on sys.path (a local pandas.py or old
                # checkout must not shadow what this process imported)
                [sys.executable, "-P", "-m", "mm_platform.monitoring.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "DO_NOT_TRACK": "1"},
                start_new_session=True,  # Ctrl-C is the job's to handle; close() ends it
            )
        except OSError:
            self._fallback = Local()

    def compute(self, reference: Any, current: Any, specs: Any, **kwargs: Any) -> DriftResult:
        self.start_compute(reference, current, specs, **kwargs)
        return self.compute_result()

    def start_compute(self, reference: Any, current: Any, specs: Any, **kwargs: Any) -> None:
        """Hand the drift to the worker and return at once: this process goes on (scores,
        estimates) while the worker tests the columns; `compute_result` collects it."""
        self._pending = ((reference, current, specs), kwargs)
        if self._fallback is None and self._process is not None:
            self._sent = self._send("compute", *self._pending)

    def compute_result(self) -> DriftResult:
        args, kwargs = self._pending
        if self._sent:
            self._sent = False
            try:
                ok, value = self._receive()
            except Exception:  # it died, or sent what cannot be read: compute here
                self.close()
                return self._local().compute(*args, **kwargs)
            if not ok:
                raise value
            result: DriftResult = value
            return result
        result = self._call("compute", args, kwargs)
        return result

    def report(self, *args: Any, result: DriftResult | None = None, **kwargs: Any) -> Rendered:
        if result is not None:  # results from elsewhere carry Evidently objects: render here
            return self._local().report(*args, result=result, **kwargs)
        html, snapshot_json = self._call("report", args, kwargs)
        return Rendered(html, snapshot_json)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        process = self._process
        if self._fallback is not None or process is None:
            return getattr(self._local(), name)(*args, **kwargs)
        try:
            if not self._send(name, args, kwargs):
                raise EOFError
            ok, value = self._receive()
        except Exception:  # it died (e.g. out of memory) or sent what cannot be read
            self.close()
            if name == "report":  # its computed result died with it: compute it again here
                drift_args, drift_kwargs = self._pending
                self._local().compute(*drift_args, **drift_kwargs)
            return getattr(self._local(), name)(*args, **kwargs)
        if not ok:
            raise value
        return value

    def _send(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Send one request; False when the worker is gone."""
        process = self._process
        if process is None or process.stdin is None:
            return False
        try:
            pickle.dump((name, args, kwargs), process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
        except OSError:  # a broken pipe: it died
            self.close()
            return False
        return True

    def _receive(self) -> tuple[bool, Any]:
        process = self._process
        if process is None or process.stdout is None:
            raise EOFError
        reply: tuple[bool, Any] = pickle.load(process.stdout)
        return reply

    def _local(self) -> Local:
        if self._fallback is None:
            self._fallback = Local()
        return self._fallback

    def close(self) -> None:
        """Stop the worker. Its replies are all in, so it is killed rather than left to tear
        down Evidently's modules (seconds of interpreter shutdown the job would wait for)."""
        process, self._process = self._process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        process.kill()
        process.wait()


def serve() -> None:
    """The worker's loop: import Evidently, then compute and render until input ends."""
    import warnings

    # the protocol owns the real stdout; anything a library prints goes to stderr
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    warnings.simplefilter("ignore")  # the parent shows what a user needs to see
    import mm_platform.monitoring.drift  # the slow import, while the parent works
    import mm_platform.monitoring.report  # noqa: F401

    local = Local()
    while True:
        try:
            name, args, kwargs = pickle.load(requests)
        except EOFError:
            return
        try:
            if name == "compute":
                value: Any = _without_evidently(local.compute(*args, **kwargs))
            else:
                rendered = local.report(*args, **kwargs)
                value = (rendered.html, rendered.snapshot_json)
            reply: tuple[bool, Any] = (True, value)
        except Exception as exc:  # the parent raises it (e.g. a misconfigured method)
            reply = (False, exc)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)  # what the parent cannot rebuild it gets as a plain error
        except Exception:
            error = reply[1] if not reply[0] else None
            text = f"{type(error).__name__}: {error}" if error else "an unpicklable result"
            data = pickle.dumps((False, RuntimeError(text)), protocol=pickle.HIGHEST_PROTOCOL)
        channel.write(data)
        channel.flush()


def _without_evidently(result: DriftResult) -> DriftResult:
    """`result` without the Evidently objects kept for the report (they stay here)."""
    columns = [dataclasses.replace(c, evidently=None) for c in result.columns]
    return dataclasses.replace(result, columns=columns)


if __name__ == "__main__":
    serve()
