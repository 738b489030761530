"""Weights that hold Python objects besides tensors are refused (torch.load with weights_only=True),
and the refusal is one line naming them, whether they come as a file, from a hub snapshot, or are
loaded by a Ray worker in the middle of `apm-bench run`."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.config import TeacherConfig
from harness.errors import HarnessError
from harness.models.teacher import load_teacher

EXE = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
TINY_CFG = json.loads((Path(__file__).parent.parent / "harness/models/configs/apm-tiny.json").read_text())
REFUSED = ("its weights were refused because they are not plain tensors (it holds argparse.Namespace); they load only "
           "with torch.load(weights_only=False)")


def _pickled(path: Path) -> Path:
    """A checkpoint whose unpickling would build an arbitrary object (here a harmless one)."""
    torch.save({"state_dict": argparse.Namespace(note="not a tensor")}, path)
    return path


def _hub_snapshot(root: Path) -> Path:
    """An offline Hugging Face cache holding acme/pickled-clip with only a pickled .bin."""
    snapshot = root / "models--acme--pickled-clip" / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("c" * 40)
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    _pickled(snapshot / "open_clip_pytorch_model.bin")
    return root


def test_a_checkpoint_file_holding_objects_is_refused_in_one_line(tmp_path):
    weights = _pickled(tmp_path / "tiny.bin")
    with pytest.raises(HarnessError) as info:
        load_teacher(TeacherConfig(model="apm-tiny", pretrained=str(weights)))
    assert str(info.value).startswith(f"cannot load teacher --model apm-tiny --pretrained {weights}: {REFUSED}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("content", "message"), [
    (b"\x80\x02garbage", "not plain tensors (torch: Unsupported operand 103)"),
    (b"", "its weights file ends too soon (empty, or cut short)"),
])
def test_a_damaged_checkpoint_is_one_line_too(tmp_path, content, message):
    weights = tmp_path / "damaged.bin"
    weights.write_bytes(content)
    with pytest.raises(HarnessError, match="cannot load teacher --model apm-tiny .*damaged.bin: ") as info:
        load_teacher(TeacherConfig(model="apm-tiny", pretrained=str(weights)))
    assert message in str(info.value) and "\n" not in str(info.value)


def _hub_env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(_hub_snapshot(tmp_path / "hub")),
            "RAY_USAGE_STATS_ENABLED": "0"}


def test_a_hub_snapshot_holding_a_pickle_is_refused_by_load_teacher(tmp_path):
    code = ("from harness.config import TeacherConfig; from harness.errors import HarnessError\n"
            "from harness.models.teacher import load_teacher\n"
            "try:\n    load_teacher(TeacherConfig(model='ViT-B-16', pretrained='hf-hub:acme/pickled-clip'))\n"
            "except HarnessError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], env=_hub_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"cannot load teacher --model ViT-B-16 --pretrained hf-hub:acme/pickled-clip: {REFUSED}")
    assert len(done.stdout.splitlines()) == 1


def test_a_hub_snapshot_holding_a_pickle_stops_a_run_with_one_line(tmp_path):
    done = subprocess.run([EXE, "run", "--task", "synthetic:2", "--method", "zeroshot", "--model", "ViT-B-16",
                           "--pretrained", "hf-hub:acme/pickled-clip", "--workers", "1", "--no-progress"],
                          cwd=tmp_path, env=_hub_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: cannot load teacher --model ViT-B-16 --pretrained hf-hub:acme/pickled-clip: {REFUSED}")
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("results/*/manifest.json"))  # nothing finished: no run left behind
