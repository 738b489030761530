"""The CUDA paths, checked in one short run when a GPU is lent (not a test: it needs a GPU).

    python bench/gpu_check.py          # about two minutes on one GPU; exit code 1 if any check fails

Each check prints PASS or FAIL with its numbers; speed figures are printed, not judged. Checks:
teacher embeddings on cuda in fp32/bf16/fp16 agree with the CPU's; APM starts from the same weights
on cuda as on the CPU; batched APM TTT on cuda equals one-at-a-time (both recipes); TPT with fp16
loss scaling gives finite losses and the zero-shot "before"; FLOPs counted on cuda equal the CPU's;
peak memory rises above the baseline; an `apm-bench run --device cuda --precision fp16` through Ray
with one GPU per worker finishes, verifies, and says cuda and fp16 on every row.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import TeacherConfig  # noqa: E402
from harness.methods.configs import ApmConfig, TptConfig  # noqa: E402
from harness.device import PeakMemory  # noqa: E402
from harness.flops import count_flops  # noqa: E402
from harness.methods.apm import run_ttt  # noqa: E402
from harness.methods.episodic import normalisation  # noqa: E402
from harness.methods.prompt import PromptLearner, tune  # noqa: E402
from harness.methods.tpt_views import make_augmented_views  # noqa: E402
from harness.models.apm import ApmNet  # noqa: E402
from harness.models.apm_batched import train_batched  # noqa: E402
from harness.models.teacher import load_teacher  # noqa: E402
from tasks.synthetic import SyntheticTask  # noqa: E402

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no GPU here: this check needs one")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    task = SyntheticTask(per_class=1)
    images = [task.load(r).image for r in task.samples()]

    cpu_teacher = load_teacher(TeacherConfig(model="apm-mini", pretrained="synthetic-teacher"), "cpu")
    pixels = torch.stack([cpu_teacher.preprocess(i) for i in images])
    reference = torch.nn.functional.normalize(cpu_teacher.encode_images(pixels), dim=-1)
    for precision, tolerance in (("fp32", 1e-4), ("bf16", 3e-2), ("fp16", 1e-2)):
        teacher = load_teacher(TeacherConfig(model="apm-mini", pretrained="synthetic-teacher", precision=precision), "cuda")
        emb = torch.nn.functional.normalize(teacher.encode_images(pixels), dim=-1).cpu()
        diff = (emb - reference).abs().max().item()
        check(f"teacher {precision} on cuda", emb.dtype == torch.float32 and diff < tolerance, f"max |diff| vs CPU {diff:.2e}")

    config = ApmConfig(image_size=64, patch_size=8, hidden=(256, 256, 128), steps=20, lr=1e-3)
    cpu_net, gpu_net = ApmNet(config, 64), ApmNet(config, 64).cuda()
    cpu_net.reset_parameters(3)
    gpu_net.reset_parameters(3)
    same = all(torch.equal(a, b.cpu()) for a, b in zip(cpu_net.parameters(), gpu_net.parameters()))
    check("APM starts from the CPU's weights on cuda", same, "per-sample draws on the CPU generator")

    x, targets = torch.randn(8, 3, 64, 64, device="cuda"), torch.randn(8, 64, device="cuda")
    for recipe in ("spec", "demo"):
        net = ApmNet(ApmConfig(image_size=64, patch_size=8, hidden=(256, 256, 128), steps=20, lr=1e-3,
                               recipe=recipe), 64).cuda()
        embeddings = train_batched(net, x, targets, list(range(8))).embeddings
        alone = run_ttt(net, x[3], targets[3], seed=3)
        diff = (embeddings[3] - alone.embedding).abs().max().item()
        check(f"{recipe} recipe: batched = one at a time on cuda", diff < 1e-3, f"max |embedding diff| {diff:.2e}")

    memory = PeakMemory(torch.device("cuda"))
    memory.start()
    train_batched(ApmNet(ApmConfig(steps=2), 512).cuda(), torch.randn(4, 3, 448, 448, device="cuda"),
                  torch.randn(4, 512, device="cuda"), list(range(4)))
    rise = memory.rise() or 0
    check("peak memory is the method's own rise", rise > 0, f"{rise / 2**20:.0f} MiB for 4 paper-size APMs")

    image_flops = count_flops(lambda: cpu_teacher.encode_images(pixels[:1]))
    gpu_teacher = load_teacher(TeacherConfig(model="apm-mini", pretrained="synthetic-teacher"), "cuda")
    gpu_flops = count_flops(lambda: gpu_teacher.encode_images(pixels[:1]))
    check("FLOPs on cuda equal the CPU's", gpu_flops == image_flops, f"{gpu_flops} vs {image_flops}")

    for precision in ("fp32", "fp16"):
        teacher = load_teacher(TeacherConfig(model="apm-mini", pretrained="synthetic-teacher", precision=precision), "cuda")
        learner = PromptLearner(teacher, task.classnames, "a photo of a").cuda()
        mean, std = normalisation(teacher.preprocess)
        views = make_augmented_views(images[0], 63, teacher.input_size, mean, std, seed=0, augmix=True)
        features = torch.nn.functional.normalize(teacher.encode_images(views), dim=-1)
        cfg = TptConfig(steps=3)
        losses, chosen = tune(learner, features, teacher, cfg.steps, cfg.lr, cfg.weight_decay, cfg.top)
        ok = len(losses) == 3 and all(torch.isfinite(torch.tensor(losses))) and len(chosen) == 6
        check(f"TPT on cuda, {precision}", ok, f"losses {losses}, views kept {chosen.tolist()}")

    for batch in (1, 8, 32):
        net = ApmNet(ApmConfig(steps=20), 512).cuda()
        xs, ts = torch.randn(batch, 3, 448, 448, device="cuda"), torch.randn(batch, 512, device="cuda")
        for precision in ("fp32", "bf16", "fp16"):
            torch.cuda.synchronize()
            start = time.perf_counter()
            train_batched(net, xs, ts, list(range(batch)), precision)
            torch.cuda.synchronize()
            print(f"speed: paper-size APM, batch {batch}, {precision}: {batch / (time.perf_counter() - start):.2f} samples/s")

    exe = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
    with tempfile.TemporaryDirectory() as out:
        from harness.methods import METHODS

        done = subprocess.run([exe, "run", "--suite", "smoke", "--device", "cuda", "--precision", "fp16",
                               "--method", ",".join(METHODS.names()), "--set", "rlcf.reward_model=teacher",
                               "--out-root", out, "--no-progress"],
                              capture_output=True, text=True)
        check("apm-bench run of every method on cuda finishes", done.returncode == 0, (done.stderr.strip() or done.stdout.strip())[-500:])
        runs = [p for p in Path(out).iterdir() if p.is_dir()]
        if done.returncode == 0 and len(runs) == 1:
            from harness import resultfiles

            rows = resultfiles.read_rows(runs)
            verify = resultfiles.verify(runs[0])
            check("rows say cuda and fp16", set(rows["device"].str[:4]) == {"cuda"} and set(rows["precision"]) == {"fp16"},
                  f"devices {sorted(set(rows['device']))}, precisions {sorted(set(rows['precision']))}")
            check("the run's files verify", not verify.bad, f"{len(verify.files)} files, bad: {verify.bad}")
            by = {m: rows[rows["method"] == m].set_index("sample_id") for m in ("zeroshot", "tpt")}
            same = (by["tpt"]["prediction_before"] == by["zeroshot"]["prediction"].reindex(by["tpt"].index)).all()
            check("TPT's before = the zero-shot row (fp32 scoring)", bool(same), "every sample")
            check("peak memory recorded with its batch", rows["peak_memory_bytes"].notna().all()
                  and rows["peak_memory_samples"].notna().all(), "every row")
    print(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}" if FAILED else "all checks passed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
