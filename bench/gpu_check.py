"""The CUDA paths, exercised in one short run when a GPU is lent (not a test; needs a GPU).

    python bench/gpu_check.py          # about a minute on one GPU

Checks, printing one line each: teacher on cuda with pinned-memory transfer and bf16/fp16 autocast;
batched APM TTT on cuda equals one-at-a-time (fp32, both recipes) and its speed at the paper's size;
TPT on cuda with fp16 loss scaling; an `apm-bench run --device cuda --precision fp16` through Ray
with one actor per GPU (num_gpus=1), rows on cuda, TPT's "before" equal to the zero-shot row.
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
from harness.methods.tpt import PromptLearner, normalisation, tune
from harness.methods.tpt_views import make_augmented_views
from harness.models.apm import ApmNet
from harness.models.apm_batched import train_batched
from harness.models.teacher import load_teacher
from tasks.synthetic import SyntheticTask


def main() -> None:
    assert torch.cuda.is_available(), "no GPU here"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    task = SyntheticTask(per_class=1)
    images = [task.load(r).image for r in task.samples()]
    for precision in ("fp32", "bf16", "fp16"):
        teacher = load_teacher(TeacherConfig(precision=precision), "cuda")
        emb = teacher.encode_images(torch.stack([teacher.preprocess(i) for i in images]))
        assert emb.device.type == "cuda" and emb.dtype == torch.float32 and torch.isfinite(emb).all()
        print(f"teacher {precision}: embeddings {tuple(emb.shape)} on {emb.device}")

    pixels, targets = torch.randn(8, 3, 448, 448, device="cuda"), torch.randn(8, 512, device="cuda")
    for recipe in ("spec", "demo"):
        net = ApmNet(ApmConfig(steps=20, recipe=recipe), 512).cuda()
        embeddings, losses = train_batched(net, pixels, targets, list(range(8)))
        alone = run_ttt(net, pixels[3], targets[3], seed=3)
        diff = (embeddings[3] - alone.embedding).abs().max().item()
        print(f"{recipe} recipe, batched vs one-at-a-time on cuda: max |embedding diff| {diff:.2e}")
    for batch in (1, 8, 32):
        xs, ts = torch.randn(batch, 3, 448, 448, device="cuda"), torch.randn(batch, 512, device="cuda")
        for precision in ("fp32", "bf16", "fp16"):
            torch.cuda.synchronize()
            start = time.perf_counter()
            train_batched(net, xs, ts, list(range(batch)), precision)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            print(f"paper size, batch {batch}, {precision}: {batch / seconds:.2f} samples/s, "
                  f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
            torch.cuda.reset_peak_memory_stats()

    for precision in ("fp32", "fp16"):
        teacher = load_teacher(TeacherConfig(precision=precision), "cuda")
        learner = PromptLearner(teacher, task.classnames, "a photo of a").cuda()
        mean, std = normalisation(teacher.preprocess)
        views = make_augmented_views(images[0], 64, teacher.input_size, mean, std, seed=0, augmix=True)
        features = torch.nn.functional.normalize(teacher.encode_images(views), dim=-1)
        losses, chosen = tune(learner, features, teacher, TptConfig(steps=3))
        print(f"tpt on cuda, {precision}: losses {losses}, views kept {chosen.tolist()}")

    exe = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([exe, "run", "--suite", "smoke", "--device", "cuda", "--precision", "fp16",
                               "--method", "zeroshot,apm,tpt", "--out-root", out, "--no-progress"],
                              capture_output=True, text=True)
        print(done.stdout.strip() or done.stderr.strip().splitlines()[-1])
        import pyarrow.dataset as ds

        rows = ds.dataset(next(Path(out).iterdir()) / "shards", format="parquet").to_table().to_pandas()
        by = {m: rows[rows["method"] == m].set_index("sample_id") for m in ("zeroshot", "tpt")}
        same = (by["tpt"]["prediction_before"] == by["zeroshot"]["prediction"].reindex(by["tpt"].index)).all()
        print(f"ray run: devices {sorted(set(rows['device']))}, errors {rows['error'].notna().sum()}, "
              f"peak memory recorded {rows['peak_memory_bytes'].notna().all()}, tpt before == zeroshot: {same}")


if __name__ == "__main__":
    main()
