"""The scoring server `mm serve` runs: MLflow's own scoring app, behind request limits.

`uvicorn mm_platform.serving.app:app` loads the model folder named by MM_SERVE_MODEL and
builds MLflow's scoring app for it (`mlflow.pyfunc.scoring_server.init`: the same request
formats, the same answers). Three routes are answered here instead:

- `POST /invocations` reads the body under a byte limit and counts its rows against a row
  limit (413 either way, MM_SERVE_MAX_BYTES / MM_SERVE_MAX_ROWS); a missing or unknown
  Content-Type is a 415 and JSON that does not parse or nests too deep is a 400, neither
  echoing the body; then MLflow's `invocations` parses the scoring protocol and calls the
  model. Its errors come back without the request data they quote.
- `GET /ping` and `/health` answer 503 while the prediction log cannot make records
  durable (a full disk): a load balancer stops sending until it recovers.
- `GET /status` gives the log's state for operators: counters (dead letters, buffered
  rows) and the reason it is unhealthy, server paths included.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from typing import Any

from fastapi import Request  # resolved by name when FastAPI reads the route's signature

ENV_MODEL = "MM_SERVE_MODEL"
ENV_MAX_BYTES = "MM_SERVE_MAX_BYTES"
ENV_MAX_ROWS = "MM_SERVE_MAX_ROWS"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ROWS = 100_000
_MESSAGE_LIMIT = 500

_log = logging.getLogger(__name__)


class Refused(Exception):
    """A request answered with `status` and a one-line message, before the model sees it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def count_rows(parsed: Any) -> int:
    """Rows in a decoded JSON body of MLflow's scoring protocol (0 when it has no format)."""
    for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        if key not in parsed:
            continue
        value = parsed[key]
        if key == "dataframe_split":
            value = value.get("data", []) if isinstance(value, dict) else value
        if isinstance(value, dict):  # columnar instances/inputs: {"x": [..], ...}
            lengths = [len(v) for v in value.values() if isinstance(v, list)]
            return max(lengths, default=1)
        return len(value) if isinstance(value, list) else 1
    return 0


def decode_json(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body; Refused (400) for anything else, never quoting it."""
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise Refused(400, "the JSON body nests too deeply") from None
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8 text") from None
    except ValueError as exc:
        where = (
            f" at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise Refused(400, f"the body is not valid JSON{where}") from None
    if not isinstance(parsed, dict):
        raise Refused(
            400,
            "the JSON body must be an object with one of dataframe_split, dataframe_records, "
            f"instances or inputs; got a {type(parsed).__name__}",
        )
    return parsed


def body_rows(body: bytes, mime: str, parsed: Any) -> int:
    """Rows in a request body of any accepted type (CSV: lines less the header)."""
    if mime == "text/csv":
        # every line ending a reader accepts (\n, \r\n, a lone \r); quoted ones over-count
        breaks = body.count(b"\n") + body.count(b"\r") - body.count(b"\r\n")
        return max(breaks + (not body.endswith((b"\n", b"\r"))) - 1, 0)
    if mime == "application/vnd.apache.parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(io.BytesIO(body))
        except Exception:  # not Parquet: MLflow's parser says so with a 400
            return 0
        return sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return count_rows(parsed)


def clean_message(exc: Any) -> str:
    """An MLflow error's message for a client: the served model's own words where it gave
    them (MLflow prefixes them with a repr of the request's data), else MLflow's without
    the data it quotes; one bounded line."""
    message = getattr(exc, "mm_message", None) or str(getattr(exc, "message", exc))
    if message.startswith("Failed to predict data") and ". \nError: " in message:
        message = message.rsplit(". \nError: ", 1)[1]  # the data can hold the separator too
    if "\nInput: " in message:
        message = message.split("\nInput: ", 1)[0]
    line = " ".join(message.split())
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 3] + "..."


def build_app(model: Any, *, max_bytes: int, max_rows: int) -> Any:
    """MLflow's scoring app for `model` with this module's /invocations, /ping, /health and
    /status."""
    from fastapi.responses import Response
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    from mm_platform.serving.scoring import raw_model

    app = scoring_server.init(model)
    ours = {"/invocations", "/ping", "/health"}
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in ours]
    served = raw_model(model)
    if served is not None and hasattr(served, "writer"):
        app.router.on_shutdown.append(served.writer.close)
    input_schema = model.metadata.get_input_schema()

    def answer(status: int, message: str, code: str = "BAD_REQUEST") -> Response:
        body = json.dumps({"error_code": code, "message": message})
        return Response(content=body, status_code=status, media_type="application/json")

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        try:
            mime, body, parsed = await _read(request, max_bytes)
            rows = body_rows(body, mime, parsed)
            if rows > max_rows:
                raise Refused(
                    413, f"{rows} rows is over this server's limit of {max_rows} (--max-rows); "
                    "send them in several requests",
                )  # fmt: skip
        except Refused as refused:
            code = {413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}
            return answer(refused.status, str(refused), code.get(refused.status, "BAD_REQUEST"))
        content_type = request.headers["content-type"]
        data: Any = parsed if parsed is not None else body
        try:
            result = await asyncio.to_thread(
                scoring_server.invocations, data, content_type, model, input_schema
            )
        except MlflowException as exc:
            if exc.get_http_status_code() >= 500 or "unexpected error" in exc.message:
                # the model's words and the stack, not MLflow's repr of the request's data
                trace = getattr(exc, "json_kwargs", {}).get("stack_trace") or ""
                _log.warning("scoring failed: %s\n%s", clean_message(exc), trace)
            return answer(exc.get_http_status_code(), clean_message(exc), exc.error_code)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
            # raised while MLflow turns the payload into a frame (the model's own errors
            # come back as MlflowException); logged in case it was not the payload's fault
            _log.warning("request refused: %s: %s", type(exc).__name__, str(exc)[:200])
            kind = type(exc).__name__
            return answer(400, f"the body does not follow MLflow's scoring protocol ({kind})")
        return Response(content=result.response, status_code=result.status,
                        media_type=result.mimetype)  # fmt: skip

    _add_health_routes(app, served)
    return app


def _add_health_routes(app: Any, served: Any) -> None:
    """/ping and /health: 503 while the log cannot make records durable (the details, server
    paths included, are in /status and the server's log); /status: the log's counters."""
    from fastapi.responses import Response

    def state() -> dict[str, Any]:
        return served.status() if served is not None and hasattr(served, "status") else {}

    async def ping() -> Response:
        if state().get("healthy", True):
            return Response(content="\n", status_code=200, media_type="application/json")
        body = json.dumps({"status": "unhealthy", "reason": "the prediction log cannot make "
                           "records durable; see /status"})  # fmt: skip
        return Response(content=body, status_code=503, media_type="application/json")

    async def status() -> Response:
        return Response(content=json.dumps(state(), default=str), media_type="application/json")

    app.get("/ping")(ping)
    app.get("/health")(ping)
    app.get("/status")(status)


async def _read(request: Request, max_bytes: int) -> tuple[str, bytes, Any]:
    """(mime type, body, decoded JSON or None), refusing what the server cannot take."""
    content_type = request.headers.get("content-type")
    if not content_type:
        raise Refused(
            415, "the request has no Content-Type; send application/json, text/csv or "
            "application/vnd.apache.parquet",
        )  # fmt: skip
    mime = content_type.split(";")[0].strip().lower()
    if mime not in ("application/json", "text/csv", "application/vnd.apache.parquet"):
        raise Refused(
            415, f"Content-Type '{mime[:80]}' is not accepted; send application/json, text/csv "
            "or application/vnd.apache.parquet",
        )  # fmt: skip
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise Refused(413, _too_big(int(declared), max_bytes))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Refused(413, _too_big(size, max_bytes, at_least=True))
        chunks.append(chunk)
    body = b"".join(chunks)
    return mime, body, decode_json(body) if mime == "application/json" else None


def _too_big(size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (
        f"the body has {more}{size} bytes, over this server's limit of {limit} (--max-bytes); "
        "send the rows in several requests"
    )


def _create() -> Any:
    """The app for the model folder in MM_SERVE_MODEL (what uvicorn imports)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(os.environ[ENV_MODEL])
    return build_app(
        model,
        max_bytes=int(os.environ.get(ENV_MAX_BYTES, DEFAULT_MAX_BYTES)),
        max_rows=int(os.environ.get(ENV_MAX_ROWS, DEFAULT_MAX_ROWS)),
    )


def __getattr__(name: str) -> Any:
    # `uvicorn mm_platform.serving.app:app` builds the app on first access, so importing
    # this module (tests, docs) loads no model
    if name == "app":
        globals()["app"] = _create()
        return globals()["app"]
    raise AttributeError(name)
