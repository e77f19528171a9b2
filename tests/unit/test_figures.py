"""The figures logged with runs: what they draw, read back from matplotlib's own objects."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.text import Annotation, Text

from mm_platform.modeling.figures import pareto


def _dominated(point: tuple[float, float], others, larger_is_better: bool) -> bool:
    sign = -1 if larger_is_better else 1
    size, value = point
    return any(
        s <= size and sign * v <= sign * value and (s, v) != (size, value) for s, v in others
    )


@pytest.mark.parametrize("larger_is_better", [False, True])
def test_the_pareto_front_is_a_line_through_exactly_the_non_dominated_points(
    larger_is_better: bool,
) -> None:
    # h ties d on size: only the better of the two can be on the front
    variants = [("a", 100.0, 0.5), ("b", 100.0, 0.7), ("c", 300.0, 0.6), ("d", 50.0, 0.9),
                ("e", 800.0, 0.4), ("f", 800.0, 0.95), ("g", 200.0, 0.55),
                ("h", 50.0, 0.3), ("i", 900.0, 0.1)]  # fmt: skip
    parent = ("parent v1", 1000.0, 0.45)
    fig = pareto(variants, parent, metric="m", larger_is_better=larger_is_better, title="t")
    (line,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "Pareto front"]
    drawn = [tuple(p) for p in line.get_xydata()]
    every = [(s, v) for _, s, v in [*variants, parent]]
    expected = sorted({p for p in every if not _dominated(p, every, larger_is_better)})
    assert drawn == expected  # sorted by size: a line, not a zigzag
    assert line.get_drawstyle() == "steps-post"


def test_labels_of_a_crowded_plot_do_not_overlap() -> None:
    variants = [(f"variant-{i}", 1000.0 * (1 + 0.01 * i), 0.5 + 0.001 * i) for i in range(12)]
    variants += [("far", 10.0, 0.9)]
    fig = pareto(variants, ("parent v1", 5000.0, 0.4), metric="rmse", larger_is_better=False,
                 title="crowded")  # fmt: skip
    fig.canvas.draw()  # the labels where a saved figure has them
    renderer = fig.canvas.get_renderer()
    labels = [a for a in fig.axes[0].texts if isinstance(a, Annotation)]
    assert sorted(a.get_text() for a in labels) == sorted(name for name, _, _ in variants)
    boxes = [Text.get_window_extent(a, renderer) for a in labels]
    overlapping = [
        (labels[i].get_text(), labels[j].get_text())
        for i, j in itertools.combinations(range(len(boxes)), 2)
        if boxes[i].overlaps(boxes[j])
    ]
    assert overlapping == []
