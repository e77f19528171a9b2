"""The monitored pyfunc: the registered model, plus a prediction-log record per request.

`mm serve` saves a small pyfunc model whose `loader_module` is this module and whose data
folder holds `monitor.json` and the registered version's files (`inner/`). The scoring
server loads it with `_load_pyfunc`; every `predict` conforms the request to the inner
model's signature (a value that does not fit is a 400 naming the column and the value),
scores it, appends exactly what the model saw (plus the request's id columns, the
prediction and the class probabilities) to the prediction log, and answers with the
predictions, probabilities and a request id per row. A request the log cannot make
durable is refused with 503, so an answer always means a logged record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from mm_platform.serving.inputs import InputError, InputSpec, conform
from mm_platform.serving.predlog.writer import LogUnavailable, PredictionLogWriter
from mm_platform.serving.scoring import log_record, raw_model, score

MONITOR_FILE = "monitor.json"

NOT_DURABLE = (
    "the prediction log cannot make this request durable right now (is its disk full?); "
    "nothing was logged, retry later"
)


def _refusal(exc: Any, message: str) -> Any:
    """`exc` carrying the message a client should see: MLflow's scoring server prefixes an
    error with a repr of the request's data, which mm's app must not send back."""
    exc.mm_message = message
    return exc


class MonitoredModel:
    """Scores with the inner model and records every request in the prediction log."""

    def __init__(self, inner: Any, writer: PredictionLogWriter, spec: InputSpec) -> None:
        self.inner = inner
        self.raw = raw_model(inner)
        self.writer = writer
        self.spec = spec
        self._shutdown_hooked = False

    def get_raw_model(self) -> MonitoredModel:
        """This object (MLflow's PyFuncModel.get_raw_model reaches the served model)."""
        return self

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """{"prediction": [...], "request_id": [...]} (+ "probabilities" for classifiers)."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

        try:
            features, ids = conform(self._frame(model_input), self.spec)
        except InputError as exc:
            raise _refusal(MlflowException.invalid_parameter_value(str(exc)), str(exc)) from None
        scores = score(self.inner, self.raw, features)
        if not self._shutdown_hooked:
            self._hook_shutdown()
        record = log_record(features, ids, scores)
        try:
            request_ids = self.writer.append(record)
        except LogUnavailable:
            # the reason (with server paths) is in the server's log, written by the writer
            # when it starts refusing; the client learns that nothing was logged
            raise _refusal(
                MlflowException(NOT_DURABLE, error_code=TEMPORARILY_UNAVAILABLE), NOT_DURABLE
            ) from None
        return {**scores.response(), "request_id": request_ids}

    def _frame(self, model_input: Any) -> pd.DataFrame:
        """The request as a frame: named columns as sent (so that conform checks them),
        rows without names (`instances` as lists) in the signature's order."""
        if isinstance(model_input, pd.DataFrame):
            return model_input
        try:
            if isinstance(model_input, dict):  # columnar `inputs`: {"age": [...], ...}
                return pd.DataFrame(model_input)
            return pd.DataFrame(model_input, columns=self.spec.columns)
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"rows without column names must give the model's {len(self.spec.columns)} "
                f"columns in order {self.spec.columns} ({exc})"
            ) from None

    def status(self) -> dict[str, Any]:
        """The prediction log's state (healthy, dead letters, ...), for /ping and /status."""
        return self.writer.status()

    def _hook_shutdown(self) -> None:
        """Flush the log in MLflow's own scoring server's shutdown (`mlflow models serve`
        on this model folder), before the process exits.

        uvicorn re-raises SIGTERM after a graceful shutdown, which ends the process without
        running atexit handlers; the app's shutdown handlers do run first. `mm serve`'s app
        registers the same handler itself.
        """
        self._shutdown_hooked = True
        app_module = sys.modules.get("mlflow.pyfunc.scoring_server.app")
        router = getattr(getattr(app_module, "app", None), "router", None)
        if router is not None and hasattr(router, "on_shutdown"):
            router.on_shutdown.append(self.writer.close)


def _load_pyfunc(data_path: str) -> MonitoredModel:
    """MLflow pyfunc entry point (`loader_module`)."""
    import mlflow.pyfunc

    folder = Path(data_path)
    config = json.loads((folder / MONITOR_FILE).read_text())
    inner = mlflow.pyfunc.load_model(str(folder / "inner"))
    writer = PredictionLogWriter(config["log_root"], config["model_name"], config["model_version"])
    spec = InputSpec.build(
        [tuple(pair) for pair in config["schema"]], config.get("ids", ()), config.get("ignored", ())
    )
    return MonitoredModel(inner, writer, spec)
