"""The accuracy-vs-seconds figure: the accuracy axis is ticked 0-100 % (no 104 % tick) with room for a
marker at 100 % to be drawn whole, the legend sits outside the data, and methods that land on the same
point stay visible (own hollow marker shape each, drawn side by side at one cost while their data stay
exact, one legend entry per method). Read from the figure's artists, not its pixels."""

import matplotlib
import pytest

matplotlib.use("Agg")

from matplotlib.lines import Line2D  # noqa: E402

from harness import resultfiles  # noqa: E402
from harness.report import figures  # noqa: E402
from test_report_tables import make_row, write_run  # noqa: E402


def coincident_rows(tmp_path):
    """zeroshot and ensemble both 100 % at the same cost on two tasks (the smoke run's picture); apm at 50 %."""
    rows = [make_row(t, m, i, True, seconds=0.02) for m in ("zeroshot", "ensemble") for t in ("synthetic", "other")
            for i in range(4)]
    rows += [make_row("synthetic", "apm", i, i % 2 == 0, seconds=1.0) for i in range(4)]
    return resultfiles.read_rows([write_run(tmp_path, rows)])


def mean_markers(ax) -> list[Line2D]:
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_accuracy_axis_is_ticked_0_to_100_with_room_for_a_whole_marker(tmp_path):
    fig = figures.accuracy_figure(coincident_rows(tmp_path))
    ax = fig.axes[0]
    fig.draw_without_rendering()  # layout, ticks and sizes as drawn
    low, high = ax.get_ylim()
    shown = [t for t in ax.get_yticks() if low <= t <= high]
    assert max(shown) == 100 and min(shown) == 0
    per_pixel = (high - low) / ax.get_window_extent().height
    for line in mean_markers(ax):  # the largest marker at 100 % ends inside the axes, not cut by its edge
        radius = line.get_markersize() * fig.dpi / 72 / 2 + line.get_markeredgewidth()
        assert 100 + radius * per_pixel <= high and low <= 0 - radius * per_pixel


def test_coincident_methods_stay_visible_with_a_legend_entry_each(tmp_path):
    fig = figures.accuracy_figure(coincident_rows(tmp_path))
    ax = fig.axes[0]
    means = mean_markers(ax)
    assert [m.get_label() for m in means] == ["CLIP", "Ensemble", "APM"]  # one teacher: named in the title
    assert "teacher ViT-B/16" in ax.get_title()
    zeroshot, ensemble = means[0], means[1]
    point = (zeroshot.get_xdata()[0], zeroshot.get_ydata()[0])
    assert point == (ensemble.get_xdata()[0], ensemble.get_ydata()[0])  # the data stay exact
    drawn = [m.get_transform().transform(point)[0] for m in (zeroshot, ensemble)]
    assert abs(drawn[1] - drawn[0]) == pytest.approx(figures.DODGE * fig.dpi / 72)  # drawn side by side
    assert len({m.get_marker() for m in means}) == 3  # a shape per method
    assert all(m.get_markerfacecolor() == "none" for m in means)  # hollow: the one below shows through
    assert all(m.get_alpha() is not None and m.get_alpha() < 1 for m in means)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [m.get_label() for m in means]
    fig.draw_without_rendering()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # outside the data, to the right


def test_dodge_spreads_only_what_shares_a_place():
    assert figures.dodge([0.0, 1.0, 2.0], 2.0) == [0.0, 0.0, 0.0]
    spread = figures.dodge([0.0, 0.01, 2.0, 0.005], 2.0)
    assert spread[2] == 0.0 and sorted(spread[i] for i in (0, 1, 3)) == [-figures.DODGE, 0.0, figures.DODGE]
    assert spread[0] < spread[1] < spread[3]  # in the given (the tables') order, left to right


def test_several_teachers_are_named_in_the_legend(tmp_path):
    rows = [make_row("synthetic", "zeroshot", i, True, model=m, pretrained="p", seconds=0.01)
            for m in ("a", "b") for i in range(3)]
    fig = figures.accuracy_figure(resultfiles.read_rows([write_run(tmp_path, rows)]))
    assert [m.get_label() for m in mean_markers(fig.axes[0])] == ["CLIP (a/p)", "CLIP (b/p)"]


def test_empty_rows_keep_the_axis(tmp_path):
    fig = figures.accuracy_figure(coincident_rows(tmp_path).iloc[:0])
    assert fig.axes[0].get_ylim() == figures.ACCURACY_LIMITS and fig.legends == []
