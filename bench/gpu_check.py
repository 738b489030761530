"""The CUDA paths, exercised in one short run when a GPU is lent (not a test; needs a GPU).

    python bench/gpu_check.py          # about a minute on one GPU

Checks, printing one line each: teacher on cuda with pinned-memory transfer and bf16 autocast;
batched APM TTT on cuda equals one-at-a-time (fp32) and its speed at the paper's size; TPT on cuda;
an `apm-bench run --device cuda` through Ray with one actor per GPU (num_gpus=1), rows on cuda.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.config import ApmConfig, TeacherConfig, TptConfig
from harness.methods.apm import run_ttt
from harness.methods.tpt import PromptLearner, make_views, tune, view_transform
from harness.models.apm import ApmNet
from harness.models.apm_batched import train_batched
from harness.models.teacher import load_teacher
from tasks.synthetic import SyntheticTask


def main() -> None:
    assert torch.cuda.is_available(), "no GPU here"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    task = SyntheticTask(per_class=1)
    images = [task.load(r).image for r in task.samples()]
    for precision in ("fp32", "bf16"):
        teacher = load_teacher(TeacherConfig(precision=precision), "cuda")
        emb = teacher.encode_images(torch.stack([teacher.preprocess(i) for i in images]))
        assert emb.device.type == "cuda" and emb.dtype == torch.float32 and torch.isfinite(emb).all()
        print(f"teacher {precision}: embeddings {tuple(emb.shape)} on {emb.device}")

    config = ApmConfig(steps=20)
    net = ApmNet(config, 512).cuda()
    pixels, targets = torch.randn(8, 3, 448, 448, device="cuda"), torch.randn(8, 512, device="cuda")
    embeddings, losses = train_batched(net, pixels, targets, list(range(8)))
    alone = run_ttt(net, pixels[3], targets[3], seed=3)
    diff = (embeddings[3] - alone.embedding).abs().max().item()
    print(f"batched vs one-at-a-time on cuda: max |embedding diff| {diff:.2e}")
    for batch in (1, 8, 32):
        xs, ts = torch.randn(batch, 3, 448, 448, device="cuda"), torch.randn(batch, 512, device="cuda")
        for precision in ("fp32", "bf16"):
            torch.cuda.synchronize()
            start = time.perf_counter()
            train_batched(net, xs, ts, list(range(batch)), precision)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            print(f"paper size, batch {batch}, {precision}: {batch / seconds:.2f} samples/s, "
                  f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
            torch.cuda.reset_peak_memory_stats()

    teacher = load_teacher(TeacherConfig(), "cuda")
    learner = PromptLearner(teacher, task.classnames, "a photo of a").cuda()
    views = make_views(images[0], teacher, view_transform(teacher, TptConfig(), False), 64, seed=0)
    features = torch.nn.functional.normalize(teacher.encode_images(views), dim=-1)
    print(f"tpt on cuda: losses {tune(learner, features, teacher, TptConfig())}")

    exe = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([exe, "run", "--suite", "smoke", "--device", "cuda", "--precision", "bf16",
                               "--method", "zeroshot,apm,tpt", "--out-root", out, "--no-progress"],
                              capture_output=True, text=True)
        print(done.stdout.strip() or done.stderr.strip().splitlines()[-1])
        import pyarrow.dataset as ds

        rows = ds.dataset(next(Path(out).iterdir()) / "shards", format="parquet").to_table().to_pandas()
        print(f"ray run: devices {sorted(set(rows['device']))}, errors {rows['error'].notna().sum()}, "
              f"peak memory recorded {rows['peak_memory_bytes'].notna().all()}")


if __name__ == "__main__":
    main()
