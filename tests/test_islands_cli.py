"""`apm-bench plot islands IMAGE` at its defaults uses the shipped trained smoke teacher and the smoke
suite's small APM (with each location's pixels in its query), where islands appear; a random teacher
(apm-tiny/none) shows none."""

import numpy as np
import typer
from PIL import Image
from typer.testing import CliRunner

import cli
from harness.config import TeacherConfig
from harness.methods.configs import ApmConfig
from tasks.registry import SUITES


def tiny_image(tmp_path):
    path = tmp_path / "tiny.png"
    pixels = np.full((32, 32, 3), 230, np.uint8)
    pixels[8:24, 8:24] = (40, 80, 215)
    Image.fromarray(pixels).save(path)
    return path


def test_defaults_are_the_smoke_teacher_and_apm():
    params = {p.name: p.default for p in typer.main.get_command(cli.app).commands["plot"].params}
    smoke = SUITES.get("smoke")
    assert (params["model"], params["pretrained"]) == (smoke.model, smoke.pretrained) == ("apm-mini", "synthetic-teacher")
    from harness.commands.figures import ISLANDS_APM

    assert {**smoke.settings["apm"], "use_patch": True} == {**ISLANDS_APM, "steps": smoke.settings["apm"]["steps"]}


def test_the_defaults_reach_plot_islands(tmp_path, monkeypatch):
    seen = {}

    def fake(image, out, teacher, apm, steps, seed, device):
        seen.update(teacher=teacher, apm=apm, steps=steps)
        return out

    monkeypatch.setattr("harness.report.islands.plot_islands", fake)
    done = CliRunner().invoke(cli.app, ["plot", "islands", str(tiny_image(tmp_path))])
    assert done.exit_code == 0, done.output
    assert seen["teacher"] == TeacherConfig(model="apm-mini", pretrained="synthetic-teacher")
    smoke = SUITES.get("smoke").settings["apm"]
    expected = {k: smoke[k] for k in ("image_size", "patch_size", "hidden", "lr")}
    assert {k: getattr(seen["apm"], k) for k in expected} == expected and seen["apm"].use_patch
    assert seen["apm"].pooling == ApmConfig().pooling and seen["steps"] == (0, 5, 20, 50)
    done = CliRunner().invoke(cli.app, ["plot", "islands", str(tiny_image(tmp_path)), "--set", "apm.lr=0.5"])
    assert done.exit_code == 0 and seen["apm"].lr == 0.5 and seen["apm"].use_patch, done.output


def test_plot_islands_runs_at_its_defaults(tmp_path):
    out = tmp_path / "islands.png"
    done = CliRunner().invoke(cli.app, ["plot", "islands", str(tiny_image(tmp_path)), "--iterations", "0,2",
                                        "--device", "cpu", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == str(out)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (750, 300)  # input + 2 steps, 250 x 300 each
