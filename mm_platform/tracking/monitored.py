"""The monitored pyfunc: the registered model, plus a prediction-log record per request.

`mm serve` saves a small pyfunc model whose `loader_module` is this module and whose data
folder holds `monitor.json` and the registered version's files (`inner/`). MLflow's
scoring server loads it with `_load_pyfunc`; every `predict` scores with the inner model,
appends inputs, predictions, model name and version, a request id per row and a UTC
timestamp to the prediction log, and returns the predictions with their request ids.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from mm_platform.serving.predlog import PredictionLogWriter


class MonitoredModel:
    """Scores with the inner model and records every request in the prediction log."""

    def __init__(self, inner: Any, writer: PredictionLogWriter, columns: list[str]) -> None:
        self.inner = inner
        self.writer = writer
        self.columns = columns
        self._shutdown_hooked = False

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """Predictions and request ids: {"prediction": [...], "request_id": [...]}."""
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input, columns=self.columns)
        extra = [c for c in model_input.columns if c not in self.columns]
        if extra:
            from mlflow.exceptions import MlflowException

            # MLflow's schema enforcement ignores extra columns; a client sending them has
            # the wrong schema, so refuse (400) rather than log a request it did not mean
            raise MlflowException.invalid_parameter_value(
                f"Model does not take inputs {extra}; its signature is {self.columns}."
            )
        # the inner model enforces its signature: missing or mistyped columns raise (400)
        predictions = self.inner.predict(model_input)
        if not self._shutdown_hooked:
            self._hook_shutdown()
        if list(model_input.columns) != self.columns:  # a copy only when the order differs
            model_input = model_input[self.columns]
        ids = self.writer.append(model_input.assign(prediction=predictions))
        # columns, not records: a dict of two lists serialises far faster than a frame
        return {"prediction": predictions, "request_id": ids}

    def _hook_shutdown(self) -> None:
        """Flush the log in the scoring server's shutdown, before the process exits.

        uvicorn re-raises SIGTERM after a graceful shutdown, which ends the process without
        running atexit handlers; the app's shutdown handlers do run first.
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
    config = json.loads((folder / "monitor.json").read_text())
    inner = mlflow.pyfunc.load_model(str(folder / "inner"))
    writer = PredictionLogWriter(config["log_root"], config["model_name"], config["model_version"])
    return MonitoredModel(inner, writer, config["columns"])
