"""Can a worker's CPUs feed its GPU? Host work per sample against the device work per sample.

    python bench/bench_feed.py                  # about two minutes on 2 cores
    python bench/bench_feed.py --tflops 400 --samples 16 --threads 1,2,4,8

For every method (default settings, a ViT-B-16 teacher) on an ImageNet set and on a fine-grained set
(where TPT's family turns AugMix on): the host work a sample needs before the device can take it
(decode a 500x375 JPEG, the teacher's preprocessing, and TPT's views or APM's input), in samples per
second with 1, 2 and 4 data threads (a GPU worker has its CPU share of them); the device samples per
second its counted FLOPs allow at --tflops (FLOPs counted on the meta device, as `apm-bench plan`
does; a peak, so the device figure is an upper bound); and host / device (below 1: the GPU waits).
Then the whole run, all methods in one worker: each view method making its own views, as before
issue #21, or each sample's views made once per distinct view spec, as a worker does now.

Numbers, not judgements. Host rates are measured here, piece by piece (decode + preprocessing, APM's
input, each distinct view spec), and a method's or a run's rate is composed from them: its pieces'
seconds per sample, at the same thread count, added."""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import TeacherConfig  # noqa: E402
from harness.methods import METHODS  # noqa: E402
from harness.methods.episodic import ViewMethod, normalisation  # noqa: E402
from harness.methods.tpt_views import make_augmented_views  # noqa: E402
from harness.models.teacher import Teacher, meta_teacher  # noqa: E402
from tasks.base import LoadedImage, SampleRef, Task, decode_rgb  # noqa: E402
from tasks.imagenet import imagenet_classnames  # noqa: E402
from tasks.templates import OPENAI_IMAGENET  # noqa: E402

SHARES_VIEWS = importlib.util.find_spec("harness.methods.view_feed") is not None
"""Whether this checkout makes a sample's views once for all view methods (after issue #21)."""


@dataclass(frozen=True)
class CountingTask(Task):
    """A task as FLOPs see it: a name (which sets AugMix and some defaults) and class names."""

    name: str = "imagenet"
    classnames: tuple[str, ...] = ()
    templates: object = OPENAI_IMAGENET
    version: str = "bench"
    protocol: str = "bench"
    source: str = "bench"

    def samples(self) -> Sequence[SampleRef]:
        return []

    def load(self, ref: SampleRef) -> LoadedImage:
        raise NotImplementedError


def photographs(count: int) -> list[bytes]:
    """500 x 375 JPEGs (quality 90) drawn with PIL: a gradient sky, textured ground, shapes and noise,
    so decoding and resizing do a photograph's work."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(count):
        y = np.linspace(0, 1, 375)[:, None, None]
        sky = (np.array([90, 140, 220]) * (1 - y) + np.array([220, 200, 160]) * y) * np.ones((1, 500, 1))
        pixels = np.clip(sky + rng.normal(0, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 250, 500, 375), fill=(70 + 5 * k, 110, 50))
        for _ in range(12):
            x, z, r = rng.integers(0, 500), rng.integers(0, 375), rng.integers(10, 80)
            draw.ellipse((x - r, z - r, x + r, z + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        image = image.filter(ImageFilter.DETAIL)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def rate(work: Callable[[int], object], count: int, threads: int) -> float:
    """Samples per second of `work(i)` over `count` samples on `threads` threads."""
    start = time.perf_counter()
    if threads == 1:
        for i in range(count):
            work(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(count)))
    return count / (time.perf_counter() - start)


def view_key(method: object, teacher: Teacher, task: Task) -> tuple | None:
    """What a view method's views depend on besides the sample (None: not a view method)."""
    if not isinstance(method, ViewMethod):
        return None
    mean, std = normalisation(teacher.preprocess)
    return (method.config.views - 1, teacher.input_size, mean, std, method.uses_augmix(task), method.config.min_scale)


def host_pieces(data: list[bytes], teacher: Teacher, keys: set[tuple], apm: Callable, threads: Sequence[int]
                ) -> dict[object, dict[int, float]]:
    """Seconds per sample of each piece of host work, at each thread count: decode + the teacher's
    preprocessing ("base"), APM's input ("apm"), and each view spec's views (without the base)."""
    images = [decode_rgb(d, "bench").image for d in data]
    work: dict[object, Callable[[int], object]] = {
        "base": lambda i: teacher.preprocess(decode_rgb(data[i], "bench").image),
        "apm": lambda i: apm(images[i]),
    }
    for key in keys:
        count, size, mean, std, augmix, min_scale = key
        work[key] = lambda i, c=count, s=size, m=mean, d=std, a=augmix, n=min_scale: make_augmented_views(
            images[i], c, s, m, d, 1000 + i, a, n)
    return {name: {t: 1 / rate(job, len(data), t) for t in threads} for name, job in work.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflops", type=float, default=200.0, help="device peak, TFLOP/s (default 200)")
    parser.add_argument("--samples", type=int, default=8, help="images per measurement")
    parser.add_argument("--threads", default="1,2,4", help="data-thread counts to measure")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(1)  # the compute thread's are not the data threads'

    teacher = meta_teacher(TeacherConfig("ViT-B-16", "none"))
    tasks = [CountingTask("imagenet", imagenet_classnames()),
             CountingTask("flowers102", tuple(f"flower {i}" for i in range(102)))]
    methods = {name: METHODS.get(name)(METHODS.get(name).settings_class()() if METHODS.get(name).settings else None)
               for name in METHODS.names()}
    flops = {(name, task.name): method.flops(teacher, task) for task in tasks for name, method in methods.items()}
    keys = {(name, task.name): view_key(method, teacher, task) for task in tasks for name, method in methods.items()}
    apm = methods["apm"].transform
    pieces = host_pieces(photographs(args.samples), teacher, {k for k in keys.values() if k}, apm, threads)

    print(f"machine: {os.cpu_count()} cores ({platform.machine()}, {platform.processor() or 'cpu'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch thread per data thread; "
          f"{args.samples} 500x375 JPEGs per measurement; teacher ViT-B-16 (224 px); device at {args.tflops:g} TFLOP/s")
    for name, seconds in pieces.items():
        label = name if isinstance(name, str) else f"views {name[0]} x {name[1]} px{' + AugMix' if name[4] else ''}"
        print(f"  {label}: " + ", ".join(f"{1 / s:.1f}/s on {t}" for t, s in seconds.items()))
    head = " | ".join(f"host/s {t} thr" for t in threads)
    ratios = " | ".join(f"host/device {t} thr" for t in threads)
    print(f"\n| method | task | {head} | GFLOPs/sample | device/s | {ratios} |")
    print("|---" * (4 + 2 * len(threads)) + "|")
    for task in tasks:
        for name in methods:
            device = args.tflops * 1e12 / flops[(name, task.name)]
            host = {t: 1 / per_sample(pieces, t, [keys[(name, task.name)]], apm=name == "apm") for t in threads}
            print(f"| {name} | {task.name} | " + " | ".join(f"{host[t]:.2f}" for t in threads)
                  + f" | {flops[(name, task.name)] / 1e9:.1f} | {device:.1f} | "
                  + " | ".join(f"{host[t] / device:.3f}" for t in threads) + " |")
    print("\nThe whole run, every method above in one worker (host samples/s; device samples/s from the summed FLOPs):")
    for task in tasks:
        views = [keys[(name, task.name)] for name in methods if keys[(name, task.name)]]
        made = list(dict.fromkeys(views)) if SHARES_VIEWS else views
        device = args.tflops * 1e12 / sum(flops[(name, task.name)] for name in methods)
        host = {t: 1 / per_sample(pieces, t, made, apm=True) for t in threads}
        how = f"views made once per distinct spec ({len(made)} for {len(views)} view methods)" if SHARES_VIEWS \
            else f"each of the {len(views)} view methods makes its own views"
        print(f"  {task.name}: {how}: " + ", ".join(f"{host[t]:.2f}/s on {t}" for t in threads)
              + f"; device {device:.2f}/s; host/device " + ", ".join(f"{host[t] / device:.3f}" for t in threads))


def per_sample(pieces: dict[object, dict[int, float]], threads: int, views: list[tuple | None], apm: bool) -> float:
    """Host seconds per sample: the base, APM's input if it runs, and each listed view spec's views."""
    return pieces["base"][threads] + (pieces["apm"][threads] if apm else 0) \
        + sum(pieces[key][threads] for key in views if key is not None)


if __name__ == "__main__":
    main()
