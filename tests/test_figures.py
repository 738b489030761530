"""Figures: written, valid PNGs of the size the module promises; the islands view from real APM TTT
snapshots; and the snapshot hook leaves training exactly as it was."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from harness import resultfiles
from harness.config import TeacherConfig
from harness.methods.configs import ApmConfig
from harness.errors import HarnessError
from harness.methods.apm import run_ttt
from harness.models.apm import ApmNet
from harness.report import figures
from test_report_tables import make_row, write_run

RUN_PIXELS = (figures.RUN_FIGSIZE[0] * figures.DPI, figures.RUN_FIGSIZE[1] * figures.DPI)


def assert_png(path: Path, size: tuple[int, int]) -> None:
    assert path.is_file()
    with Image.open(path) as img:
        img.verify()  # a truncated or non-PNG file raises here
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == size


def run_rows(tmp_path):
    rows = [make_row(t, "zeroshot", i, i % 2 == 0, seconds=0.01) for t in ("imagenet", "synthetic") for i in range(6)]
    rows += [make_row(t, "apm", i, i % 3 != 0, seconds=1.5, losses=[1.0 / (s + 1 + i) for s in range(10)])
             for t in ("imagenet", "synthetic") for i in range(6)]
    rows += [make_row("imagenet", "apm", 9, None, error="non-finite TTT loss at step 3")]
    return write_run(tmp_path, rows)


def test_run_figures_are_pngs_of_the_promised_size(tmp_path):
    run_dir = run_rows(tmp_path)
    rows = resultfiles.read_rows([run_dir])
    paths = figures.run_figures(rows, tmp_path / "figs")
    assert [p.name for p in paths] == ["accuracy_vs_seconds.png", "ttt_loss.png", "reliability.png"]
    empty = figures.run_figures(rows.iloc[:0], tmp_path / "empty")
    assert len(empty) == 2  # no rows, no confidences: no reliability diagram
    assert Image.open(paths[2]).size == (520, 300)  # a 2.6-inch panel per method (zeroshot, apm) at 100 dpi
    for path, blank in zip(paths, empty):
        assert_png(path, RUN_PIXELS)
        assert Image.open(path).tobytes() != Image.open(blank).tobytes()  # something was drawn


def test_figures_of_a_run_without_losses_or_rows_still_render(tmp_path):
    rows = resultfiles.read_rows([write_run(tmp_path, [make_row("imagenet", "zeroshot", 0, True)])])
    *runs, calibration = figures.run_figures(rows, tmp_path / "a")
    for path in runs:
        assert_png(path, RUN_PIXELS)
    assert calibration.name == "reliability.png" and Image.open(calibration).size == (260, 300)
    for path in figures.run_figures(rows.iloc[:0], tmp_path / "b"):
        assert_png(path, RUN_PIXELS)


def loss_rows(tmp_path, methods=("tpt", "apm")):
    """TPT's one-step entropy (about 1.5) beside APM's distillation loss (100 falling to 10)."""
    rows = [make_row("synthetic", "zeroshot", i, True) for i in range(5)]
    for method in methods:
        steps = 1 if method != "apm" else 10
        rows += [make_row("synthetic", method, i, True, losses=[(100.0 if method == "apm" else 1.5 + 0.1 * i) / (s + 1)
                                                                 for s in range(steps)]) for i in range(5)]
    return resultfiles.read_rows([write_run(tmp_path, rows)])


def test_ttt_loss_has_a_panel_per_method_each_on_its_own_scale(tmp_path):
    fig = figures.loss_figure(loss_rows(tmp_path))
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["TPT, n=5", "APM, n=5"]
    tpt, apm = panels
    assert tpt.get_ylim()[1] < 3 and apm.get_ylim()[1] > 90 and apm.get_ylim()[0] < 11  # each fits its own loss
    assert tpt.get_xlim() == (0.5, 1.5) and apm.get_xlim() == (0.5, 10.5)
    assert tpt.get_yscale() == apm.get_yscale() == "log"
    with Image.open(io.BytesIO(figures.png_bytes(fig))) as img:
        assert img.format == "PNG" and img.size == RUN_PIXELS  # one row of panels: the usual size


def test_ttt_loss_grows_a_row_per_three_methods(tmp_path):
    rows = loss_rows(tmp_path, ("tpt", "c-tpt", "rlcf", "apm"))
    path = figures.loss_curves(rows, tmp_path / "loss.png")
    width, height = figures.loss_size(4)
    assert (width, height) == (figures.RUN_FIGSIZE[0], 2 * figures.LOSS_ROW_HEIGHT)
    assert_png(path, (round(width * figures.DPI), round(height * figures.DPI)))


def test_pca_colours_separate_two_islands():
    rng = np.random.default_rng(0)
    grid = 6
    features = rng.normal(0, 0.01, (grid * grid, 32))
    features[: grid * grid // 2] += 5.0  # the top half of the grid agrees with itself, not with the bottom
    colours = figures.pca_colours(features, grid)
    assert colours.shape == (grid, grid, 3) and colours.min() >= 0 and colours.max() <= 1
    top, bottom = colours[: grid // 2, :, 0], colours[grid // 2 :, :, 0]
    assert abs(top.mean() - bottom.mean()) > 0.8 and top.std() < 0.1 and bottom.std() < 0.1


def test_islands_figure_size(tmp_path):
    snaps = {k: np.random.default_rng(k).normal(size=(16, 8)) for k in (0, 3, 7)}
    path = figures.islands_figure(np.zeros((32, 32, 3), np.uint8), snaps, 4, tmp_path / "i.png", "t")
    assert_png(path, (4 * figures.ISLAND_PANEL[0] * figures.DPI, figures.ISLAND_PANEL[1] * figures.DPI))


def test_run_ttt_snapshots_leave_training_unchanged():
    config = ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=4, lr=1e-3)
    x, target = torch.randn(3, 32, 32), torch.randn(64)
    plain = run_ttt(ApmNet(config, 64), x, target, seed=3)
    net = ApmNet(config, 64)
    seen = run_ttt(net, x, target, seed=3, snapshot_steps=[0, 2, 4])
    assert plain.snapshots == {} and seen.losses == plain.losses
    assert torch.equal(seen.embedding, plain.embedding)
    assert sorted(seen.snapshots) == [0, 2, 4] and seen.snapshots[0].shape == (16, 64)
    with torch.no_grad():  # the last snapshot is the trained network's features
        assert torch.allclose(seen.snapshots[4], net.features(x[None])[0])
    assert not torch.allclose(seen.snapshots[0], seen.snapshots[4])
    with pytest.raises(ValueError, match="0..4"):
        run_ttt(net, x, target, seed=3, snapshot_steps=[5])


def test_plot_islands_end_to_end_with_the_tiny_teacher(tmp_path):
    from harness.report.islands import plot_islands

    image = tmp_path / "img.png"
    pixels = np.zeros((48, 48, 3), np.uint8)
    pixels[:, 24:] = (200, 30, 30)
    Image.fromarray(pixels).save(image)
    config = ApmConfig(image_size=32, patch_size=4, hidden=(32,), lr=1e-3)
    path = plot_islands(image, tmp_path / "out", TeacherConfig(), config, (0, 2, 5), device="cpu")
    assert path == tmp_path / "out" / "islands-img.png"
    assert_png(path, (4 * figures.ISLAND_PANEL[0] * figures.DPI, figures.ISLAND_PANEL[1] * figures.DPI))
    with pytest.raises(HarnessError, match="no such image"):
        plot_islands(tmp_path / "missing.png", tmp_path, TeacherConfig(), config, (0, 1), device="cpu")


def test_cli_plot(tmp_path):
    import cli

    run_dir = run_rows(tmp_path)
    runner = CliRunner()
    done = runner.invoke(cli.app, ["plot", str(run_dir)])
    assert done.exit_code == 0, done.output
    assert done.output.split() == [str(run_dir / "figures" / name)
                                   for name in ("accuracy_vs_seconds.png", "ttt_loss.png", "reliability.png")]
    bad = runner.invoke(cli.app, ["plot", "islands"])
    assert isinstance(bad.exception, HarnessError) and "exactly one image" in str(bad.exception)
    bad = runner.invoke(cli.app, ["plot", "islands", "x.png", "--iterations", "a,b"])
    assert isinstance(bad.exception, HarnessError) and "--iterations" in str(bad.exception)
