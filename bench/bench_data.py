"""The data side of a worker, per CPU core: what a GPU worker's CPUs must keep up with.

    python bench/bench_data.py        # about a minute

A GPU worker decodes its images, runs the teacher's preprocessing, makes TPT's 63 augmented views
(AugMix on the fine-grained sets) and APM's input; all on its CPUs (`--cpus-per-worker`, default its
node's CPUs divided by its GPUs) while the GPU computes. Printed: samples per second on one core and
on two (the worker's data threads), for each piece and for each method's whole data side, so a user
can compare with the samples per second a GPU reaches (`bench/gpu_check.py`) and see whether it would
be starved."""

from __future__ import annotations

import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.methods.tpt_views import make_augmented_views  # noqa: E402
from harness.models.ttt import apm_transform  # noqa: E402
from tasks.base import decode_rgb  # noqa: E402

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SAMPLES = 24


def _jpegs(count: int) -> list[bytes]:
    """ImageNet-sized photographs (500 x 375, quality 90) with texture, so JPEG decoding does real work."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        base = rng.integers(0, 255, (47, 63, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((500, 375), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def rate(work, items, threads: int) -> float:
    """Samples per second of `work` over `items` with `threads` threads (torch itself on one thread)."""
    start = time.perf_counter()
    if threads == 1:
        for item in items:
            work(item)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, items))
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(1)
    data = _jpegs(SAMPLES)
    images = [decode_rgb(d, "bench").image for d in data]
    from torchvision.transforms import v2

    clip = v2.Compose([v2.Resize(224, interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(224),
                       v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)])
    apm = apm_transform(448)
    pieces = {
        "decode a 500x375 JPEG": (lambda d: decode_rgb(d, "bench"), data),
        "teacher preprocessing (224)": (clip, images),
        "APM input (448, bicubic)": (apm, images),
        "TPT views, 63 crops (ImageNet sets)": (lambda i: make_augmented_views(i, 63, 224, CLIP_MEAN, CLIP_STD, 0, False), images),
        "TPT views, 63 crops + AugMix (fine-grained)": (lambda i: make_augmented_views(i, 63, 224, CLIP_MEAN, CLIP_STD, 0, True), images),
    }
    print(f"{torch.get_num_threads()} torch thread; {SAMPLES} samples per measurement")
    print("| data work per sample | 1 core (samples/s) | 2 threads (samples/s) |")
    print("|---|---|---|")
    per_core = {}
    for name, (work, items) in pieces.items():
        one, two = rate(work, items, 1), rate(work, items, 2)
        per_core[name] = one
        print(f"| {name} | {one:.1f} | {two:.1f} |")
    base = 1 / per_core["decode a 500x375 JPEG"] + 1 / per_core["teacher preprocessing (224)"]
    methods = {
        "zeroshot / ensemble": base,
        "APM": base + 1 / per_core["APM input (448, bicubic)"],
        "TPT (ImageNet sets)": base + 1 / per_core["TPT views, 63 crops (ImageNet sets)"],
        "TPT (fine-grained, AugMix)": base + 1 / per_core["TPT views, 63 crops + AugMix (fine-grained)"],
    }
    print()
    print("| method | data side, samples/s per core | cores to feed a GPU at 50 samples/s |")
    print("|---|---|---|")
    for name, seconds in methods.items():
        print(f"| {name} | {1 / seconds:.1f} | {50 * seconds:.1f} |")


if __name__ == "__main__":
    main()
