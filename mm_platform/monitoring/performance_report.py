"""The performance section of a drift report, drawn from what mm already computed.

Evidently's `RegressionPreset` and `ClassificationPreset` validate every labelled row
through pydantic v1 models before drawing anything: at 300,000 rows that is about 20 s,
where the scores themselves take milliseconds. Here the scores are the ones the run logs
(`performance.performance_metrics`), and the plots are binned on the labelled rows once
with numpy (error histograms and predicted-against-actual counts for a regressor,
confusion matrices for a classifier), so the report costs the same at any window size.
The widgets are Evidently's own (counter, table, plotly figure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric

ERROR_BINS = 50
GRID_BINS = 40
MAX_CLASSES = 30  # beyond this a confusion matrix is unreadable: the table alone stands


@dataclass
class PerformanceView:
    """What the performance section shows: the logged scores, the selection metric, and
    the binned rows (regression: error histograms over shared edges and a predicted
    against actual grid; classification: confusion matrices over shared labels)."""

    task: str
    metric: str
    scores: dict[str, float]
    n_labelled: int
    error_edges: np.ndarray | None = None
    errors: dict[str, np.ndarray] = field(default_factory=dict)  # side -> counts
    grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # counts, x edges, y edges
    labels: list[str] = field(default_factory=list)
    confusion: dict[str, np.ndarray] = field(default_factory=dict)  # side -> counts


def performance_view(
    task: str,
    metric: str,
    scores: dict[str, float],
    current: pd.DataFrame,
    reference: pd.DataFrame | None,
    target: str,
) -> PerformanceView:
    """The view of labelled `current` rows (and of the reference when it has the target),
    both holding `target` and `prediction`."""
    sides = {"current": current}
    if reference is not None and target in reference.columns:
        sides["reference"] = reference[reference[target].notna()]
    view = PerformanceView(task, metric, scores, len(current))
    if task == "regression":
        _bin_errors(view, sides, target)
    else:
        _confusions(view, sides, target)
    return view


def _bin_errors(view: PerformanceView, sides: dict[str, pd.DataFrame], target: str) -> None:
    """Error histograms of both sides over one set of edges, and the current side's
    predicted-against-actual counts."""
    errors, finite = {}, {}
    for side, frame in sides.items():
        y = frame[target].to_numpy(dtype="float64")
        p = frame["prediction"].to_numpy(dtype="float64")
        keep = np.isfinite(y) & np.isfinite(p)
        finite[side] = (y[keep], p[keep])
        errors[side] = p[keep] - y[keep]
    pooled = [e for e in errors.values() if e.size]
    if not pooled:
        return
    low = min(float(e.min()) for e in pooled)
    high = max(float(e.max()) for e in pooled)
    view.error_edges = np.linspace(low, high if high > low else low + 1.0, ERROR_BINS + 1)
    view.errors = {s: np.histogram(e, view.error_edges)[0] for s, e in errors.items()}
    y, p = finite["current"]
    if y.size:
        counts, x_edges, y_edges = np.histogram2d(y, p, bins=GRID_BINS)
        view.grid = (counts, x_edges, y_edges)


def _confusions(view: PerformanceView, sides: dict[str, pd.DataFrame], target: str) -> None:
    """Confusion matrices (rows: actual, columns: predicted) over the labels of both."""
    values = pd.concat([f[c] for f in sides.values() for c in (target, "prediction")])
    labels = sorted({str(v) for v in pd.unique(values.dropna())})
    if len(labels) > MAX_CLASSES:
        return
    view.labels = labels
    index = {label: i for i, label in enumerate(labels)}
    for side, frame in sides.items():
        actual = frame[target].astype(str).map(index).to_numpy()
        predicted = frame["prediction"].astype(str).map(index).to_numpy()
        keep = ~(pd.isna(actual) | pd.isna(predicted))
        flat = actual[keep].astype("int64") * len(labels) + predicted[keep].astype("int64")
        counts = np.bincount(flat, minlength=len(labels) ** 2)
        view.confusion[side] = counts.reshape(len(labels), len(labels))


# --- the report's metric ------------------------------------------------------------------

_PENDING: dict[str, PerformanceView] = {}  # views handed to the report, by report token


class MmPerformance(SingleValueMetric):
    """The window's performance on its labelled rows, as the run logs it; its value is the
    selection metric on the current rows. Reloading a snapshot needs this module imported."""

    metric: str
    token: str = ""


class MmPerformanceCalculation(SingleValueCalculation[MmPerformance]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        view = _PENDING[self.metric.token]
        result = self.result(view.scores.get(f"current_{view.metric}", float("nan")))
        result.widget = widgets(view)
        return result

    def display_name(self) -> str:
        return f"Model performance ({self.metric.metric})"


def widgets(view: PerformanceView) -> list[Any]:
    """Evidently widgets of the view: counters, the score table and the binned plots."""
    from evidently.legacy.renderers.html_widgets import CounterData, counter, table_data

    current = view.scores.get(f"current_{view.metric}")
    shown = [
        CounterData("labelled rows", f"{view.n_labelled:,}"),
        CounterData(f"current {view.metric}", "-" if current is None else f"{current:.4g}"),
    ]
    reference = view.scores.get(f"reference_{view.metric}")
    if reference is not None:
        shown.append(CounterData(f"reference {view.metric}", f"{reference:.4g}"))
    out = [counter(counters=shown, title="Model performance on the labelled rows")]
    names = sorted({k[len("current_") :] for k in view.scores if k.startswith("current_")})
    rows = []
    for name in names:
        cur, ref = view.scores.get(f"current_{name}"), view.scores.get(f"reference_{name}")
        change = "" if ref is None or cur is None else f"{cur - ref:+.4g}"
        rows.append([name, "" if ref is None else f"{ref:.4g}", f"{cur:.4g}", change])
    out.append(table_data(column_names=["metric", "reference", "current", "change"], data=rows,
                          title="Scores (as logged to MLflow)"))  # fmt: skip
    out.extend(_plots(view))
    return out


def _plots(view: PerformanceView) -> list[Any]:
    import plotly.graph_objects as go
    from evidently.legacy.renderers.html_widgets import WidgetSize, plotly_figure

    out = []
    if view.error_edges is not None:
        mids = (view.error_edges[:-1] + view.error_edges[1:]) / 2
        figure = go.Figure()
        for side, counts in view.errors.items():
            share = counts / max(int(counts.sum()), 1)
            figure.add_trace(go.Bar(x=mids, y=share, name=side, opacity=0.6))
        figure.update_layout(barmode="overlay", xaxis_title="prediction - actual",
                             yaxis_title="share of rows")  # fmt: skip
        out.append(plotly_figure(title="Error distribution", figure=figure, size=WidgetSize.HALF))
    if view.grid is not None:
        counts, x_edges, y_edges = view.grid
        figure = go.Figure(go.Heatmap(
            z=counts.T, x=(x_edges[:-1] + x_edges[1:]) / 2, y=(y_edges[:-1] + y_edges[1:]) / 2,
            colorscale="Blues", colorbar={"title": "rows"},
        ))  # fmt: skip
        low, high = float(min(x_edges[0], y_edges[0])), float(max(x_edges[-1], y_edges[-1]))
        figure.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines",
                                    name="prediction = actual", line={"dash": "dash"}))  # fmt: skip
        figure.update_layout(xaxis_title="actual", yaxis_title="prediction")
        title = f"Predicted against actual ({GRID_BINS}x{GRID_BINS} bins, current)"
        out.append(plotly_figure(title=title, figure=figure, size=WidgetSize.HALF))
    for side, matrix in view.confusion.items():
        figure = go.Figure(go.Heatmap(
            z=matrix, x=view.labels, y=view.labels, colorscale="Blues", text=matrix,
            texttemplate="%{text}", colorbar={"title": "rows"},
        ))  # fmt: skip
        figure.update_layout(xaxis_title="predicted", yaxis_title="actual",
                             yaxis={"autorange": "reversed"})  # fmt: skip
        out.append(plotly_figure(title=f"Confusion matrix ({side})", figure=figure,
                                 size=WidgetSize.HALF))  # fmt: skip
    return out


def pending(view: PerformanceView, token: str) -> MmPerformance:
    """The report metric showing `view`; `release(token)` once the report has run."""
    _PENDING[token] = view
    return MmPerformance(metric=view.metric, token=token)


def release(token: str) -> None:
    _PENDING.pop(token, None)
