"""Offline scoring (`mm predict`) and ground-truth ingestion (`mm labels`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mm_platform.errors import DataError
from mm_platform.serving.predlog import PredictionLogWriter, read_dataset, write_partition

if TYPE_CHECKING:
    from mm_platform.config import Project


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file (by suffix) as a frame, with file-named errors."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except Exception as exc:
        raise DataError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from exc


def check_columns(path: Path, frame: pd.DataFrame, expected: list[str]) -> pd.DataFrame:
    """The frame's columns in the model's order; missing or extra columns are errors."""
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"not in the model {extra}")
        raise DataError(
            f"{path}: columns do not match the model's signature {expected}: {'; '.join(parts)}"
        )
    if len(frame) == 0:
        raise DataError(f"{path}: no rows to score")
    return frame[expected]


@dataclass
class BatchResult:
    """What `mm predict` scored and where it went."""

    rows: int
    version: str
    output: Path
    log_root: str


def predict_file(
    project: Project, path: Path, *, version: str, model: object, columns: list[str],
    log_root: str, output: Path | None = None,
) -> BatchResult:  # fmt: skip
    """Score a file with the loaded model, log every row, and write predictions + request ids."""
    frame = check_columns(path, read_table(path), columns)
    try:
        predictions = model.predict(frame)
    except Exception as exc:  # MLflow's schema enforcement names the column and the type
        message = str(getattr(exc, "message", exc)).splitlines()[0]
        raise DataError(f"{path}: the model refuses this data: {message}") from exc
    writer = PredictionLogWriter(log_root, project.name, version)
    try:
        ids = writer.append(frame.assign(prediction=predictions))
    finally:
        writer.close()
    output = output or path.with_name(f"{path.stem}.predictions.csv")
    result = frame.copy()
    result.insert(0, "request_id", ids)
    result["prediction"] = list(predictions)
    try:
        result.to_csv(output, index=False)
    except OSError as exc:
        raise DataError(
            f"{output}: cannot write the predictions ({exc.strerror}); the rows are logged, "
            "with request ids, in the prediction log"
        ) from exc
    return BatchResult(len(frame), version, output, log_root)


@dataclass
class LabelResult:
    """What `mm labels` ingested, and what it could not match."""

    ingested: int
    unknown: int
    duplicates: int
    unknown_examples: list[str] = field(default_factory=list)
    path: str | None = None
    missing: int = 0  # rows without a label value, not stored


def ingest_labels(project: Project, path: Path, *, log_root: str) -> LabelResult:
    """Store labels whose request ids are in the prediction log; count the others."""
    frame = read_table(path)
    target = target_name(project)
    label_column = "label" if "label" in frame.columns else target
    if "request_id" not in frame.columns or label_column not in frame.columns:
        raise DataError(
            f"{path}: a labels file needs columns 'request_id' and 'label' (or '{target}'); "
            f"it has {list(frame.columns)}"
        )
    frame = frame[["request_id", label_column]].rename(columns={label_column: "label"})
    frame["request_id"] = frame["request_id"].astype(str)
    missing = int(frame["label"].isna().sum())
    frame = frame[frame["label"].notna()]
    duplicates = int(frame["request_id"].duplicated(keep="last").sum())
    frame = frame.drop_duplicates("request_id", keep="last")
    logged = read_dataset(log_root, "predictions", project.name)
    known_ids = set(logged["request_id"]) if len(logged) else set()
    known = frame[frame["request_id"].isin(known_ids)]
    unknown = frame[~frame["request_id"].isin(known_ids)]
    written = None
    if len(known):
        known = known.assign(labelled_at=pd.Timestamp.now(tz="UTC"))
        written = write_partition(log_root, "labels", project.name, known)
    return LabelResult(
        len(known),
        len(unknown),
        duplicates,
        list(unknown["request_id"].head(5)),
        written,
        missing,
    )


def target_name(project: Project) -> str:
    """The target column's name in this project's data (`y`, `target` or the file's)."""
    dataset = project.dataset
    if dataset.source == "file":
        return dataset.target
    return "y" if dataset.source == "synthetic" else "target"


EVALUATION_SHARE = 5  # one labelled production row in 5 is kept out of fine-tuning


def is_evaluation_row(request_id: str) -> bool:
    """A fixed, seed-free split of labelled production rows by request id: the gate scores
    on these, fine-tuning never trains on them."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % EVALUATION_SHARE == 0


def labelled_production(
    project: Project, log_root: str, since: object = None, part: str | None = None
) -> pd.DataFrame:
    """Logged features joined with their labels (latest label per request), since `since`;
    `part` "fit" or "evaluation" keeps only that side of the split by request id."""
    logged = read_dataset(log_root, "predictions", project.name, start=since)
    labels = read_dataset(log_root, "labels", project.name)
    if not len(logged) or not len(labels):
        return pd.DataFrame()
    labels = labels.sort_values("labelled_at").drop_duplicates("request_id", keep="last")
    labels = labels[["request_id", "label"]].rename(columns={"label": "__label"})
    joined = logged.merge(labels, on="request_id", how="inner")
    if part is not None:
        held_out = joined["request_id"].map(is_evaluation_row)
        joined = joined[held_out if part == "evaluation" else ~held_out]
    return joined.rename(columns={"__label": target_name(project)}).reset_index(drop=True)
