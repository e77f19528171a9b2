"""The report's performance section (drawn from the logged scores and binned rows) and the
Evidently worker process the pandas drift job renders in."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mm_platform.monitoring.performance_report import performance_view
from mm_platform.monitoring.results import ColumnSpec
from mm_platform.monitoring.worker import Local, Worker


def _regression(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return pd.DataFrame({"x": rng.normal(size=n), "y": y, "prediction": y + rng.normal(0, 0.3, n)})


def test_regression_view_bins_every_labelled_row_once() -> None:
    current, reference = _regression(30_000, 1), _regression(2_000, 2)
    scores = {"current_rmse": 0.3, "reference_rmse": 0.29}
    view = performance_view("regression", "rmse", scores, current, reference, "y")
    assert view.n_labelled == 30_000
    assert int(view.errors["current"].sum()) == 30_000
    assert int(view.errors["reference"].sum()) == 2_000
    assert view.grid is not None and int(view.grid[0].sum()) == 30_000


def test_confusion_matrices_count_labels_of_any_type() -> None:
    current = pd.DataFrame({"t": ["a", "b", "b", "c"], "prediction": ["a", "b", "c", "c"]})
    reference = pd.DataFrame({"t": ["a", "a", None], "prediction": ["a", "b", "b"]})
    view = performance_view("multiclass", "f1", {"current_f1": 0.7}, current, reference, "t")
    assert view.labels == ["a", "b", "c"]
    assert view.confusion["current"].tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert view.confusion["reference"].tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_report_shows_the_logged_scores_and_reloads() -> None:
    from evidently.core.report import Snapshot

    from mm_platform.monitoring.drift import build_report, compute

    current, reference = _regression(5_000, 3), _regression(1_500, 4)
    specs = [ColumnSpec("x", "num"), ColumnSpec("prediction", "num", "prediction")]
    result = compute(reference, current, specs)
    scores = {"current_rmse": 0.31234, "reference_rmse": 0.29876, "current_r2": 0.9}
    view = performance_view("regression", "rmse", scores, current, reference, "y")
    snapshot = build_report(result, performance=view, name="t")
    html = snapshot.get_html_str(as_iframe=False)
    assert "Model performance" in html and "0.3123" in html and "0.2988" in html
    reloaded = Snapshot.loads(snapshot.dumps())
    assert len(reloaded.dict()["metrics"]) == len(snapshot.dict()["metrics"])


def test_the_worker_computes_what_this_process_computes_and_survives_its_death() -> None:
    current, reference = _regression(3_000, 5), _regression(800, 6)
    specs = [ColumnSpec("x", "num"), ColumnSpec("y", "num", "target")]
    here = Local().compute(reference, current, specs)
    worker = Worker()
    try:
        there = worker.compute(reference, current, specs)
        assert [(c.method, c.score) for c in there.columns] == [
            (c.method, c.score) for c in here.columns
        ]
        assert all(c.evidently is None for c in there.columns)  # kept in the worker
        rendered = worker.report(_Project(), {}, current[:0], None, None, "1")
        assert rendered.html.startswith(b"\n    <!DOCTYPE html>")
        assert (
            b"MmColumnDrift" in rendered.snapshot_json
            and b'"column": "x"' in rendered.snapshot_json
        )
        assert worker._process is not None
        worker._process.kill()  # e.g. the kernel's OOM killer
        worker._process.wait()
        again = worker.compute(reference, current, specs)  # falls back to this process
        assert [c.score for c in again.columns] == [c.score for c in here.columns]
    finally:
        worker.close()


def _Project() -> SimpleNamespace:
    """What `drift_report` reads of a project; plain types, so the worker unpickles it."""
    return SimpleNamespace(
        name="t",
        task="regression",
        monitoring=SimpleNamespace(min_rows=30),
        selection=SimpleNamespace(metric="rmse"),
    )


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", "1")
