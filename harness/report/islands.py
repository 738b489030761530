"""`apm-bench plot islands IMAGE`: train APM on one image against a teacher, exactly as the `apm`
method does for a sample, and keep its per-location features at chosen steps for figures.islands_figure.
This is the one part of the report package that runs a model; it reads no run directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.config import TeacherConfig
from harness.methods.configs import ApmConfig
from harness.device import resolve_device
from harness.errors import HarnessError
from harness.report.figures import islands_figure


@dataclass(frozen=True)
class Islands:
    image: np.ndarray
    """(S, S, 3) uint8: the student's view of the image (resized, no crop)."""
    snapshots: dict[int, np.ndarray]
    """Step -> (G, D) per-location features."""
    grid: int
    losses: tuple[float, ...]


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise HarnessError(f"no such image: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise HarnessError(f"cannot read image {path}: {exc}") from None


def compute_islands(
    image_path: Path, teacher: TeacherConfig, apm: ApmConfig, iterations: tuple[int, ...], seed: int = 0,
    device: str = "auto",
) -> Islands:
    """Train for max(iterations) steps (the config's `steps` is replaced) and snapshot at each iteration."""
    from harness.methods.apm import apm_transform, run_ttt
    from harness.models.apm import ApmNet
    from harness.models.teacher import load_teacher

    if not iterations or min(iterations) < 0:
        raise HarnessError(f"--iterations needs non-negative steps, got {list(iterations)}")
    image = open_image(image_path)
    dev = resolve_device(device)
    config = dataclasses.replace(apm, steps=max(iterations))
    loaded = load_teacher(teacher, dev)
    target = loaded.encode_images(loaded.preprocess(image)[None])[0]
    net = ApmNet(config, loaded.embed_dim).to(dev)
    pixels = apm_transform(config.image_size, config.recipe)(image).to(dev)
    result = run_ttt(net, pixels, target, seed, teacher.precision, snapshot_steps=iterations)
    view = np.asarray(image.resize((config.image_size, config.image_size), Image.Resampling.BICUBIC))
    return Islands(view, {k: v.numpy() for k, v in result.snapshots.items()}, net.grid, result.losses)


def plot_islands(
    image_path: Path, out: Path, teacher: TeacherConfig, apm: ApmConfig, iterations: tuple[int, ...], seed: int = 0,
    device: str = "auto",
) -> Path:
    """Write the side-by-side PNG to `out` (a .png path, or a folder that gets islands-<image>.png)."""
    islands = compute_islands(image_path, teacher, apm, iterations, seed, device)
    path = out if out.suffix.lower() == ".png" else out / f"islands-{image_path.stem}.png"
    title = (f"APM per-location features, PCA to RGB; teacher {teacher.model}/{teacher.pretrained}, "
             f"grid {islands.grid}x{islands.grid}, lr {apm.lr:g}" + (", patch pixels in" if apm.use_patch else ""))
    return islands_figure(islands.image, islands.snapshots, islands.grid, path, title)
