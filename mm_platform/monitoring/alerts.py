"""The drift alert: a JSON summary of a flagged window POSTed to the configured webhook."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mm_platform.monitoring.job import DriftOutcome
    from mm_platform.project.config import Project


def post_alert(project: Project, outcome: DriftOutcome) -> str:
    """POST a JSON summary to the configured webhook; a failure is reported, not raised."""
    url = project.monitoring.webhook or ""
    body = {
        "project": project.name,
        "model_version": outcome.version,
        "alias": outcome.alias,
        "status": outcome.status,
        "window_start": outcome.start.isoformat() if outcome.start else None,
        "window_end": outcome.end.isoformat() if outcome.end else None,
        "drift_share": outcome.metrics.get("drift_share"),
        "drifted_columns": outcome.drifted_columns,
        "prediction_drift_score": outcome.metrics.get("prediction_drift_score"),
        "message": outcome.message,
        "mlflow_run_id": outcome.run_id,
        "report": outcome.report_uri,
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    for attempt in range(3):
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return f"alert sent to {url} (HTTP {answer.status})"
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            error = exc
            time.sleep(0.5 * (attempt + 1))
    return f"alert to {url} failed: {error}"
