"""Shared fixtures: the tiny random teacher, a local Ray instance on 127.0.0.1, small image folders."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


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
