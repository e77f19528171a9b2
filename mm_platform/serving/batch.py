"""Offline scoring (`mm predict`) and ground-truth ingestion (`mm labels`)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mm_platform.data.columns import target_name
from mm_platform.data.tables import read_table, write_frame
from mm_platform.errors import DataError
from mm_platform.serving.inputs import InputError, InputSpec, as_text, conform
from mm_platform.serving.predlog.journal import recover
from mm_platform.serving.predlog.reader import read_window
from mm_platform.serving.predlog.records import request_ids as request_id_list
from mm_platform.serving.predlog.writer import (
    LogUnavailable,
    PredictionLogWriter,
    write_partition,
)
from mm_platform.serving.scoring import log_record, raw_model, score

if TYPE_CHECKING:
    from mm_platform.project.config import Project


def input_spec(project: Project, schema: list[tuple[str, str]]) -> InputSpec:
    """What the project's model takes (its signature), carries (the dropped columns, ids)
    and ignores (the target)."""
    return InputSpec.build(schema, project.features.drop, (target_name(project),))


def conform_file(
    path: Path, frame: pd.DataFrame, spec: InputSpec
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """`conform` with the file named in its errors."""
    try:
        return conform(frame, spec)
    except InputError as exc:
        raise DataError(f"{path}: {exc}") from exc


@dataclass
class BatchResult:
    """What `mm predict` scored and where it went."""

    rows: int
    version: str
    output: Path
    log_root: str


def predict_file(
    project: Project, path: Path, *, version: str, model: object,
    schema: list[tuple[str, str]], log_root: str, output: Path | None = None,
    log: bool = True,
) -> BatchResult:  # fmt: skip
    """Score a file (or a folder of Parquet parts) with the loaded model, log every row
    (unless `log` is False), and write predictions + request ids (with the file's id
    columns) to `output`: CSV, or Parquet for a .parquet name or an existing folder."""
    features, ids = conform_file(path, read_table(path), input_spec(project, schema))
    try:
        scores = score(model, raw_model(model), features)
    except Exception as exc:  # MLflow's schema enforcement names the column and the type
        message = str(getattr(exc, "message", exc)).splitlines()[0]
        raise DataError(f"{path}: the model refuses this data: {message}") from exc
    record = log_record(features, ids, scores)
    if log:
        request_ids = _append_to_log(project, path, version, record, log_root)
    else:
        request_ids = request_id_list(uuid.uuid4().hex, len(record))[0]
    output = output or path.with_name(f"{path.stem}.predictions.csv")
    result = record[[*ids, *features.columns, *scores.columns()]]
    result.insert(0, "request_id", request_ids)
    try:
        output = write_frame(result, output)
    except OSError as exc:
        kept = (
            "the rows are logged, with request ids, in the prediction log"
            if log
            else "nothing was logged (--no-log); fix the output path and run again"
        )
        raise DataError(f"{output}: cannot write the predictions ({exc.strerror}); {kept}") from exc
    return BatchResult(len(features), version, output, log_root)


def _append_to_log(
    project: Project, path: Path, version: str, record: pd.DataFrame, log_root: str
) -> list[str]:
    """Append the scored rows to the prediction log; their request ids."""
    writer = PredictionLogWriter(log_root, project.name, version)
    try:
        return writer.append(record)
    except LogUnavailable as exc:
        raise DataError(
            f"{path}: the prediction log {log_root} cannot take these rows ({exc.reason}); "
            "nothing was scored into it: free space or fix the folder's permissions"
        ) from exc
    finally:
        writer.close()


@dataclass
class LabelResult:
    """What `mm labels` ingested, and what it could not match."""

    ingested: int
    unknown: int
    duplicates: int
    unknown_examples: list[str] = field(default_factory=list)
    path: str | None = None
    missing: int = 0  # rows without a label value, not stored
    key: str = "request_id"  # the column labels were matched on


def ingest_labels(project: Project, path: Path, *, log_root: str) -> LabelResult:
    """Store labels whose request ids (or id column values, e.g. customer_id) are in the
    prediction log; count the others. A label matched by an id column goes to the latest
    logged prediction with that id."""
    frame = read_table(path)
    target = target_name(project)
    label_column = "label" if "label" in frame.columns else target
    keys = ["request_id", *project.features.drop]
    key = next((k for k in keys if k in frame.columns), None)
    if key is None or label_column not in frame.columns:
        raise DataError(
            f"{path}: a labels file needs a key column ({' or '.join(repr(k) for k in keys)}) "
            f"and 'label' (or '{target}'); it has {list(frame.columns)}"
        )
    frame = frame[[key, label_column]].rename(columns={label_column: "label"})
    frame[key] = as_text(frame[key]).to_numpy()
    missing = int(frame["label"].isna().sum())
    frame = frame[frame["label"].notna() & frame[key].notna()]
    duplicates = int(frame[key].duplicated(keep="last").sum())
    frame = frame.drop_duplicates(key, keep="last")
    wanted = ["request_id"] if key == "request_id" else ["request_id", "timestamp", key]
    recover(log_root, project.name)  # labels may be for requests still in a journal
    logged = read_window(log_root, "predictions", project.name, columns=wanted)
    if key == "request_id":
        known_keys = set(logged["request_id"]) if len(logged) else set()
        matched = frame[frame[key].isin(known_keys)]
    else:
        latest = _latest_by(logged, key)
        matched = frame.merge(latest, on=key, how="inner")
    unknown = frame[~frame[key].isin(matched[key])]
    written = None
    if len(matched):
        matched = matched.assign(labelled_at=pd.Timestamp.now(tz="UTC"))
        columns = ["request_id", "label", "labelled_at"] + ([key] if key != "request_id" else [])
        written = write_partition(log_root, "labels", project.name, matched[columns])
    return LabelResult(
        len(matched), len(unknown), duplicates, list(unknown[key].head(5)), written, missing, key
    )


def _latest_by(logged: pd.DataFrame, key: str) -> pd.DataFrame:
    """(key, request_id) of the latest logged prediction for each value of id column `key`."""
    if not len(logged) or key not in logged.columns:
        return pd.DataFrame({key: pd.Series(dtype=object), "request_id": pd.Series(dtype=object)})
    rows = logged[logged[key].notna()].sort_values("timestamp", kind="stable")
    latest = rows.drop_duplicates(key, keep="last")[[key, "request_id"]]
    return latest.assign(**{key: latest[key].astype(str)})


def join_labels(logged: pd.DataFrame, labels: pd.DataFrame, target: str) -> pd.DataFrame:
    """`logged` with the latest label of each request as column `target` (NaN: none yet)."""
    logged = logged.drop(columns=[target], errors="ignore")
    if not len(labels):
        return logged.assign(**{target: pd.Series(np.nan, index=logged.index, dtype=object)})
    labels = labels.sort_values("labelled_at", kind="stable").drop_duplicates(
        "request_id", keep="last"
    )
    labels = labels[["request_id", "label"]].rename(columns={"label": target})
    return logged.merge(labels, on="request_id", how="left")


EVALUATION_SHARE = 5  # one labelled production row in 5 is kept out of fine-tuning


def is_evaluation_row(request_id: str) -> bool:
    """A fixed, seed-free split of labelled production rows by request id: the gate scores
    on these, fine-tuning never trains on them."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % EVALUATION_SHARE == 0


def logged_with_labels(
    project: Project,
    log_root: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """The logged predictions from `start` to `end`, with the latest label of each request
    as the target column where labels were ingested (none at all: no target column)."""
    recover(log_root, project.name)  # killed writers' acknowledged requests belong to it
    logged = read_window(log_root, "predictions", project.name, start=start, end=end)
    if not len(logged):
        return logged
    labels = read_window(log_root, "labels", project.name)
    if not len(labels):
        return logged
    return join_labels(logged, labels, target_name(project))


def labelled_production(
    project: Project, log_root: str, since: datetime | None = None, part: str | None = None
) -> pd.DataFrame:
    """Logged features joined with their labels (latest label per request), since `since`;
    `part` "fit" or "evaluation" keeps only that side of the split by request id."""
    joined = logged_with_labels(project, log_root, start=since)
    target = target_name(project)
    if not len(joined) or target not in joined.columns:
        return pd.DataFrame()
    joined = joined[joined[target].notna()]
    if part is not None:
        held_out = joined["request_id"].map(is_evaluation_row)
        joined = joined[held_out if part == "evaluation" else ~held_out]
    return joined.reset_index(drop=True)
