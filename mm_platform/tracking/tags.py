"""Every `mm.*` tag key and registry alias, defined once so runs and versions line up.

Plain constants, no MLflow: any layer may read the names, only tracking/ writes them.
"""

from __future__ import annotations

from typing import Any

# registry aliases
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"

# what a run is and whose
RUN_TYPE = "mm.run_type"
ENGINE = "mm.engine"  # where the work ran: pandas (this process) or spark
PROJECT = "mm.project"
ERROR = "mm.error"
STATUS = "mm.status"
MESSAGE = "mm.message"
REASON = "mm.reason"

# the data a run saw
DATASET_DIGEST = "mm.dataset_digest"
HOLDOUT_DIGEST = "mm.holdout_digest"
REFERENCE_ARTIFACT = "mm.reference_artifact"
CLASSES = "mm.classes"
LABEL_TYPE = "mm.label_type"

# training
CANDIDATE = "mm.candidate"
TRIAL = "mm.trial"
BEST_CHILD_RUN_ID = "mm.best_child_run_id"

# an outage-proof attempt's runs (see tracking/durable.py)
ATTEMPT = "mm.attempt"
ATTEMPT_PART = "mm.attempt_part"
COMPACTED_SOURCES = "mm.compacted_sources"

# the registered version a run made or used, and lineage
MODEL_NAME = "mm.model_name"
MODEL_VERSION = "mm.model_version"
MODEL_ALIAS = "mm.model_alias"
ALIAS = "mm.alias"
SOURCE_RUN_ID = "mm.source_run_id"
PARENT_RUN_ID = "mm.parent_run_id"
PARENT_MODEL_VERSION = "mm.parent_model_version"
FILES_SHA256 = "mm.files_sha256"  # the model's files as registered, see verify_model_files

# compression
METHOD = "mm.method"
VARIANT = "mm.variant"

# promotion and alias moves
CHAMPION_VERSION = "mm.champion_version"
CHALLENGER_VERSION = "mm.challenger_version"
DECISION = "mm.decision"
DECISIONS = "mm.decisions"
FROM_VERSION = "mm.from_version"
TO_VERSION = "mm.to_version"
SUPERSEDED_BY = "mm.superseded_by"
GENERATOR = "mm.generator"

# drift windows
WINDOW_START = "mm.window_start"
WINDOW_END = "mm.window_end"
SOURCE = "mm.source"

METRIC_PREFIX = "mm.metric."  # a version's headline metrics: mm.metric.<name>


def metric_tag(name: str) -> str:
    """The version tag that carries metric `name` (`mm.metric.holdout_rmse`)."""
    return f"{METRIC_PREFIX}{name}"


def class_tags(model: Any) -> dict[str, str]:
    """Registry tags for a classifier's labels: `mm.classes` (JSON list of str(label) in
    `classes_` order) and `mm.label_type` (str, int, float or bool), so readers of Parquet
    can cast labels back; empty for a regressor."""
    import json

    import numpy as np

    from mm_platform.modeling.metrics import model_classes

    classes = model_classes(model)
    if classes is None:
        return {}
    values = np.asarray(classes)
    if values.dtype.kind == "b":
        kind = "bool"
    elif values.dtype.kind in "iu":
        kind = "int"
    elif values.dtype.kind == "f":
        kind = "float"
    else:
        kind = "str"
    return {CLASSES: json.dumps([str(c) for c in classes]), LABEL_TYPE: kind}
