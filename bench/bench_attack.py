"""What `--attack pgd` costs per image, against one plain image forward of the same teacher, and what
it does to zero-shot accuracy on the trained offline teachers.

    python bench/bench_attack.py                 # about a minute on 2 CPU cores
    python bench/bench_attack.py --vit --images 4  # adds ViT-B-16 (random weights: cost only)

Each image is attacked alone (the harness's way: an attacked image depends on nothing but the image,
the teacher and its seed), with R-TPT's defaults (eps 1/255, 7 steps of eps/4) and at 4/255 and
8/255; one torch thread, on the CPU. Printed per teacher: median seconds per attacked image, the
median seconds of one forward of one image, their ratio, and zero-shot top-1 clean and under each
attack. The Fashion-MNIST teacher is used where `apm-bench teacher train --data fashion-mnist` made it."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.attack_config import AttackConfig  # noqa: E402
from harness.config import TeacherConfig  # noqa: E402
from harness.methods.base import score  # noqa: E402
from harness.models.pgd import attack_image  # noqa: E402
from harness.models.sources import trained_teacher_dir  # noqa: E402
from harness.models.teacher import load_teacher  # noqa: E402
from tasks.registry import resolve_task  # noqa: E402
from tasks.templates import SINGLE  # noqa: E402

ATTACKS = {"1/255": AttackConfig(), "4/255": AttackConfig(eps=4 / 255), "8/255": AttackConfig(eps=8 / 255)}


def workloads(vit: bool) -> list[tuple[str, TeacherConfig, str]]:
    out = [("apm-mini on synthetic shapes", TeacherConfig("apm-mini", "synthetic-teacher"), "synthetic")]
    if (trained_teacher_dir("fashion-mnist-teacher") / "open_clip_config.json").is_file():
        out.append(("apm-mini on Fashion-MNIST", TeacherConfig("apm-mini", "fashion-mnist-teacher"), "fashion-mnist"))
    if vit:
        out.append(("ViT-B-16, random weights (cost only)", TeacherConfig("ViT-B-16", "none"), "synthetic"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="images per teacher (default 48)")
    parser.add_argument("--vit", action="store_true", help="also time ViT-B-16 (random weights, slow on a CPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: CPU only, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for title, config, spec in workloads(args.vit):
        teacher = load_teacher(config)
        task = resolve_task(spec)
        refs = task.samples()[:: max(1, len(task.samples()) // args.images)][: args.images]
        images = [task.load(r).image for r in refs]
        labels = torch.tensor([r.label for r in refs])
        classifier = teacher.classifier(task.classnames, SINGLE)

        def top1(batch: list) -> float:
            pixels = torch.stack([teacher.preprocess(i) for i in batch])
            found = score(teacher.encode_images(pixels), classifier, teacher.logit_scale).prediction
            return 100.0 * float((torch.tensor(found) == labels).float().mean())

        forward = []
        for image in images:
            start = time.perf_counter()
            teacher.encode_images(teacher.preprocess(image)[None])
            forward.append(time.perf_counter() - start)
        line = [f"{title}: {len(images)} images, forward {statistics.median(forward) * 1e3:.1f} ms, clean top-1 {top1(images):.1f}%"]
        for name, attack in ATTACKS.items():
            seconds, attacked = [], []
            for i, image in enumerate(images):
                start = time.perf_counter()
                attacked.append(attack_image(teacher, classifier, image, i, attack))
                seconds.append(time.perf_counter() - start)
            median = statistics.median(seconds)
            line.append(f"  eps {name}: {median * 1e3:.1f} ms per image ({median / statistics.median(forward):.0f}x a "
                        f"forward), top-1 {top1(attacked):.1f}%")
        print("\n".join(line))


if __name__ == "__main__":
    main()
