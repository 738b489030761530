import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.config import TeacherConfig
from harness.errors import HarnessError
from harness.models.teacher import load_teacher, resolve_source
from tasks.templates import OPENAI_IMAGENET, SINGLE_TEMPLATE

TINY_CFG = json.loads((Path(__file__).parent.parent / "harness/models/configs/apm-tiny.json").read_text())


def _state(seed: int) -> dict[str, torch.Tensor]:
    model = load_teacher(TeacherConfig(init_seed=seed)).model
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _embeddings(teacher) -> torch.Tensor:
    return teacher.encode_images(torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64))


def test_random_teacher_is_the_same_for_the_same_seed():
    a, b, c = (load_teacher(TeacherConfig(init_seed=s)) for s in (0, 0, 1))
    assert torch.equal(_embeddings(a), _embeddings(b))
    assert not torch.equal(_embeddings(a), _embeddings(c))
    assert a.embed_dim == 64 and a.source.kind == "none"


def test_checkpoint_file_and_local_dir_load_identical_weights(tmp_path):
    reference = load_teacher(TeacherConfig(init_seed=3))
    file = tmp_path / "tiny.safetensors"
    save_file(_state(3), str(file))
    from_file = load_teacher(TeacherConfig(pretrained=str(file)))
    assert from_file.source.kind == "file"
    assert torch.equal(_embeddings(from_file), _embeddings(reference))

    folder = tmp_path / "tiny-dir"
    folder.mkdir()
    save_file(_state(3), str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    from_dir = load_teacher(TeacherConfig(pretrained=str(folder)))
    assert from_dir.source.kind == "local-dir"
    assert torch.equal(_embeddings(from_dir), _embeddings(reference))


def test_hf_hub_id_loads_from_a_hand_built_offline_cache(tmp_path):
    snapshot = tmp_path / "hub" / "models--acme--tiny-clip" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    save_file(_state(5), str(snapshot / "open_clip_model.safetensors"))
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    code = (
        "import torch; from harness.config import TeacherConfig; from harness.models.teacher import load_teacher;"
        "t = load_teacher(TeacherConfig(model='ViT-B-16', pretrained='hf-hub:acme/tiny-clip'));"
        "print(t.source.kind, t.embed_dim); torch.save(t.encode_images(torch.linspace(-1, 1, 2*3*64*64)"
        f".reshape(2, 3, 64, 64)), {str(tmp_path / 'emb.pt')!r})"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hf-hub", "64"]
    expected = _embeddings(load_teacher(TeacherConfig(init_seed=5)))
    assert torch.equal(torch.load(tmp_path / "emb.pt", weights_only=True), expected)


@pytest.mark.parametrize(
    ("model", "pretrained", "message"),
    [
        ("ViT-B-61", "none", "unknown model (--model) 'ViT-B-61'; did you mean 'ViT-B-16'"),
        ("ViT-B-16", "opnai", "did you mean 'openai'"),
        ("ViT-B-16", "/no/such/weights.safetensors", "no such checkpoint file or directory"),
    ],
)
def test_bad_teacher_names_are_one_line_errors(model, pretrained, message):
    with pytest.raises(HarnessError) as info:
        resolve_source(model, pretrained)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_text_classifier_is_normalised_and_built_once(teacher):
    names = ["red circle", "blue square", "green triangle"]
    single = teacher.classifier(names, [SINGLE_TEMPLATE])
    ensemble = teacher.classifier(names, OPENAI_IMAGENET)
    assert len(OPENAI_IMAGENET) == 80 and OPENAI_IMAGENET.templates[0] == "a bad photo of a {}."
    assert single.shape == ensemble.shape == (64, 3)
    torch.testing.assert_close(ensemble.norm(dim=0), torch.ones(3))
    assert not torch.allclose(single, ensemble)
    assert teacher.classifier(names, OPENAI_IMAGENET) is ensemble  # cached per (class names, templates)
    # the ensemble column is the normalised mean of normalised prompt embeddings
    with torch.no_grad():
        prompts = teacher.model.encode_text(teacher.tokenizer([t.format(names[1]) for t in OPENAI_IMAGENET]), normalize=True)
    mean = prompts.mean(0)
    torch.testing.assert_close(ensemble[:, 1], mean / mean.norm(), rtol=1e-5, atol=1e-5)
