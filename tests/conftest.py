"""Shared fixtures: the tiny random teacher, a local Ray instance on 127.0.0.1, small image folders."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray binds to 127.0.0.1 only
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# trained teachers and the weights-hash cache go to a throwaway home, never the user's ~/.apm-bench
os.environ.setdefault("APM_BENCH_HOME", tempfile.mkdtemp(prefix="apm-bench-home-"))


@pytest.fixture(scope="session")
def teacher():
    from harness.config import TeacherConfig
    from harness.models.teacher import load_teacher

    return load_teacher(TeacherConfig())


@pytest.fixture(scope="module")
def sharp(teacher):
    """The tiny teacher at CLIP's scale 100 (its own is 14.3), so that on random embeddings the online
    methods' pseudo-labels and entropies vary (spread over TDA's entropy band instead of all lying
    above it)."""
    return dataclasses.replace(teacher, logit_scale=100.0)


@pytest.fixture(scope="session")
def ray_local():
    """The harness's own local instance (loopback, its private token and session folder), shared by
    the tests; runs inside it reuse it."""
    import ray

    from harness.config import ExecConfig
    from harness.engine.cluster import ray_session

    with ray_session(ExecConfig()):
        yield ray


def write_image(path: Path, colour: tuple[int, int, int], size: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """Three classes (one with an underscore and a nested folder), three images each."""
    root = tmp_path / "folder"
    colours = {"golden_retriever": (200, 160, 60), "tabby": (120, 120, 120), "zebra": (20, 20, 20)}
    for i, (cls, colour) in enumerate(colours.items()):
        for j in range(3):
            sub = root / cls / ("nested" if j == 2 else "")
            write_image(sub / f"img{j}.png", colour, seed=10 * i + j)
    return root


SIGLIP_TINY = {
    "embed_dim": 192,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}},
}
"""open_clip's ViT-B-16-SigLIP config made small: a timm ViT with attention-pool (MAP) head, a
custom text tower without causal mask pooled at the last token, a learned logit bias (init -10),
SigLIP's 0.5 normalisation and squash resize. Only the tokenizer is CLIP's (SigLIP's is on the hub)."""


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory) -> Path:
    """The tiny SigLIP-shaped model as an open_clip model directory, with random weights."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("siglip-tiny")
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": SIGLIP_TINY, "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "squash"}}))
    torch.manual_seed(0)
    model = open_clip.create_model("local-dir:" + str(out), load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out


def squeeze_apm_batches(monkeypatch, most: int) -> None:
    """The device holds at most `most` samples' APMs: a larger batch raises CUDA's out-of-memory error
    (on the CPU too), as a full GPU would, where APM's batches are trained."""
    import torch

    from harness.methods import apm

    real = apm.train_batched

    def tight(net, pixels, *args, **kwargs):
        if len(pixels) > most:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(net, pixels, *args, **kwargs)

    monkeypatch.setattr(apm, "train_batched", tight)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
