"""The accuracy-vs-seconds figure: the accuracy axis is 0-100 % (no 104 % tick), and methods that land on
the same point stay visible (own hollow marker shape each, one legend entry per method). Read from the
figure's artists, not its pixels."""

import matplotlib

matplotlib.use("Agg")

from matplotlib.lines import Line2D  # noqa: E402

from harness import resultfiles# noqa: E402
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


def test_accuracy_axis_is_0_to_100(tmp_path):
    fig = figures.accuracy_figure(coincident_rows(tmp_path))
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low == 0 and 100 <= high <= 100.5
    fig.canvas.draw()  # ticks as drawn
    shown = [t for t in ax.get_yticks() if low <= t <= high]
    assert max(shown) == 100 and min(shown) == 0
    assert all(not line.get_clip_on() for line in mean_markers(ax))  # a 100 % marker is drawn whole


def test_coincident_methods_stay_visible_with_a_legend_entry_each(tmp_path):
    ax = figures.accuracy_figure(coincident_rows(tmp_path)).axes[0]
    means = mean_markers(ax)
    assert [m.get_label() for m in means] == ["CLIP (ViT-B/16)", "Ensemble (ViT-B/16)", "APM (ViT-B/16)"]
    zeroshot, ensemble = means[0], means[1]
    assert (zeroshot.get_xdata()[0], zeroshot.get_ydata()[0]) == (ensemble.get_xdata()[0], ensemble.get_ydata()[0])
    assert len({m.get_marker() for m in means}) == 3  # a shape per method
    assert all(m.get_markerfacecolor() == "none" for m in means)  # hollow: the one below shows through
    assert all(m.get_alpha() is not None and m.get_alpha() < 1 for m in means)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [m.get_label() for m in means]


def test_empty_rows_keep_the_axis(tmp_path):
    ax = figures.accuracy_figure(coincident_rows(tmp_path).iloc[:0]).axes[0]
    assert ax.get_ylim() == (0, 100) and ax.get_legend() is None
