"""`apm-bench ls`: without a data root a family of many members (ImageNet-C's 15 corruptions) says
"no data root" once; with a data root every member says what it found."""

import pytest
from typer.testing import CliRunner

import cli
from tasks.imagenet import imagenet_wnids
from tasks.imagenet_c import IMAGENET_C
from conftest import write_image


@pytest.fixture
def ls(monkeypatch):
    monkeypatch.delenv("APM_BENCH_DATA", raising=False)

    def invoke(*args: str) -> list[str]:
        done = CliRunner().invoke(cli.app, ["ls", *args])
        assert done.exit_code == 0, done.output
        return [line.strip() for line in done.stdout.splitlines()]

    return invoke


def test_without_a_data_root_a_family_says_it_once(ls):
    lines = ls()
    about = [line for line in lines if line.startswith("imagenet-c/")]
    assert about == [] and "imagenet-c (15 tasks): no data root" in lines
    assert "imagenet-a: no data root" in lines  # single-member families unchanged


def test_with_a_data_root_each_member_says_what_it_found(ls, tmp_path):
    wnid = imagenet_wnids()[3]
    write_image(tmp_path / "imagenet-c" / "fog" / "5" / wnid / "ILSVRC2012_val_00000001.JPEG", (90, 90, 90))
    lines = ls("--data-root", str(tmp_path))
    about = [line for line in lines if line.startswith("imagenet-c/")]
    assert about == [f"{spec}: found 1 samples, 1000 classes" if spec == "imagenet-c/fog/5" else f"{spec}: not found"
                     for spec in IMAGENET_C]


def test_an_unknown_method_named_to_ls_is_not_called_a_flag():
    done = CliRunner().invoke(cli.app, ["ls", "methods", "tpd"])
    assert done.exit_code != 0
    assert str(done.exception).startswith("unknown method 'tpd'; did you mean 'tpt'? (known: apm, boostadapter, c-tpt,")
    assert "--method" not in str(done.exception)


def test_ls_methods_apm_lists_its_presets(ls):
    lines = ls("methods", "apm")
    assert "apm.preset = unset  (one of: cpu-small)" in lines
    assert any(line.startswith("cpu-small: image_size=64, patch_size=8, hidden=256,256,128, steps=20, lr=0.001;")
               for line in lines)
