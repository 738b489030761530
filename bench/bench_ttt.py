"""Speed of APM test-time training, measured in one run on the same inputs (not a test).

    python bench/bench_ttt.py            # about 3-4 minutes on 2 CPU cores
    python bench/bench_ttt.py --quick    # fewer samples, for a smoke check
    python bench/bench_ttt.py --draws    # only (f), about a minute

Prints (a) samples/s one-at-a-time vs batched and the ratio, (b) `apm-bench run` end to end vs a
bare torch loop doing the same work, (c) 1 vs 2 workers, (d) peak memory of each TTT mode,
(e) per-sample cost and FLOPs per step at the paper's default size (448 px, 32x32 grid, 20 steps), and
(f) the compute thread's seconds per sample for APM's initial weights at that size, drawn inline vs
drawn ahead on a data thread (harness/models/apm_init.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from harness.config import TeacherConfig
from harness.methods.configs import ApmConfig
from harness.flops import count_flops
from harness.methods.apm import apm_transform, run_ttt
from harness.methods.base import score
from harness.models.apm import ApmNet
from harness.models.apm_batched import BatchedApm, train_batched
from harness.models.apm_init import GroupDraws
from harness.models.teacher import load_teacher
from tasks.synthetic import SyntheticTask

SMOKE = ApmConfig(image_size=64, patch_size=8, hidden=(256, 256, 128), steps=60, lr=1e-3)
SMOKE_FLAGS = ["--set", "apm.image_size=64", "--set", "apm.patch_size=8", "--set", "apm.hidden=256,256,128",
               "--set", "apm.steps=60", "--set", "apm.lr=1e-3"]


def inputs(per_class: int, config: ApmConfig, device: str = "cpu"):
    """Decoded images, APM views and teacher targets for the synthetic task, prepared once."""
    teacher = load_teacher(TeacherConfig(), device)
    task = SyntheticTask(per_class=per_class, name=f"synthetic:{per_class}")
    refs = task.samples()
    images = [task.load(r).image for r in refs]
    targets = teacher.encode_images(torch.stack([teacher.preprocess(i) for i in images]))
    pixels = torch.stack([apm_transform(config.image_size)(i) for i in images]).to(device)
    return teacher, task, pixels, targets


def ttt_rate(mode: str, per_class: int, batch: int = 16) -> dict:
    """samples/s and peak RSS of one TTT mode, in this process."""
    torch.set_num_threads(1)
    teacher, _, pixels, targets = inputs(per_class, SMOKE)
    net = ApmNet(SMOKE, teacher.embed_dim)
    start = time.perf_counter()
    if mode == "single":
        for i in range(len(pixels)):
            run_ttt(net, pixels[i], targets[i], seed=i)
    else:
        for s in range(0, len(pixels), batch):
            train_batched(net, pixels[s : s + batch], targets[s : s + batch], list(range(s, min(s + batch, len(pixels)))))
    seconds = time.perf_counter() - start
    return {"samples_per_s": len(pixels) / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bare_loop(per_class: int) -> float:
    """What `apm-bench run --method apm` does for these samples, without the harness: decode,
    teacher forward, batched TTT per 16, score. One thread, like one CPU worker."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    teacher = load_teacher(TeacherConfig())
    task = SyntheticTask(per_class=per_class, name=f"synthetic:{per_class}")
    refs = task.samples()
    classifier = teacher.classifier(task.classnames, task.templates)
    transform = apm_transform(SMOKE.image_size)
    net = ApmNet(SMOKE, teacher.embed_dim)
    for s in range(0, len(refs), 16):
        images = [task.load(r).image for r in refs[s : s + 16]]
        targets = teacher.encode_images(torch.stack([teacher.preprocess(i) for i in images]))
        pixels = torch.stack([transform(i) for i in images])
        embeddings = train_batched(net, pixels, targets, list(range(s, s + len(images)))).embeddings
        score(embeddings, classifier, teacher.logit_scale)
    return time.perf_counter() - start


def harness_run(per_class: int, workers: int) -> float:
    exe = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([exe, "run", "--task", f"synthetic:{per_class}", "--method", "apm", "--workers", str(workers),
                        "--no-progress", "--out-root", out, *SMOKE_FLAGS], check=True, capture_output=True)
        return time.perf_counter() - start


def in_child(*args: str) -> dict:
    """Run a measurement in a fresh process, so its peak memory is its own."""
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def paper_size(device: str) -> dict:
    """One sample's TTT at the spec's defaults against a 512-wide (ViT-B/16) target."""
    config = ApmConfig()
    net = ApmNet(config, 512).to(device)
    pixels, target = torch.randn(3, 448, 448, device=device), torch.randn(512, device=device)
    image, goal = pixels[None], target[None]
    step = count_flops(lambda: torch.nn.functional.mse_loss(net(image), goal).backward())
    run_ttt(net, pixels, target, seed=0)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run_ttt(net, pixels, target, seed=1)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "gflops_per_step": step / 1e9}


def draw_cost(width: int, batch: int = 4, device: str = "cpu", repeats: int = 3) -> dict:
    """Compute-thread seconds per sample spent on APM's initial weights at the paper's size, for a
    batch of `batch` and for one-at-a-time training: `inline`, drawn on the compute thread (the only
    way before issue #21; still the way without data threads), and `ahead`, submitted to one data
    thread, which draws while the previous group trains - stood in for here by a sleep three times as
    long as the drawing (a paper-size group trains for far longer than that, on a CPU and on a GPU
    alike) - so the compute thread only submits, hands the draws over and copies them in.
    `data_thread` is what a data thread spends per sample instead: the rate one of them keeps up with.
    The best of `repeats`, as the machine may be shared."""
    torch.set_num_threads(1)
    net = ApmNet(ApmConfig(), width).to(device)
    seeds = list(range(100, 100 + batch))
    pin = device == "cuda"

    def timed(work) -> float:
        """Freeing what `work` made (the parameters, after training) is left out of its time."""
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        made = work()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        del made
        return seconds

    def best(measure) -> float:
        return min(measure() for _ in range(repeats))

    inline = best(lambda: timed(lambda: BatchedApm(net, seeds))) / batch
    inline_one = best(lambda: timed(lambda: net.reset_parameters(seeds[0])))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="draws") as pool:
        data_thread = best(lambda: timed(lambda: GroupDraws(net.draw_plan(True), seeds, pool, pin).take())) / batch

        def ahead(plan_batched: bool, group: list[int], use) -> float:
            start = time.perf_counter()
            draws = GroupDraws(net.draw_plan(plan_batched), group, pool, pin)  # submitting is compute-thread work
            submit = time.perf_counter() - start
            time.sleep(3 * data_thread * len(group))  # the previous group trains meanwhile
            return (submit + timed(lambda: use(draws.take()))) / len(group)

        ahead_batch = best(lambda: ahead(True, seeds, lambda drawn: BatchedApm(net, seeds, drawn)))
        ahead_one = best(lambda: ahead(False, seeds[:1], lambda drawn: net.reset_parameters(seeds[0], drawn)))
    return {"inline": inline, "ahead": ahead_batch, "inline_one": inline_one, "ahead_one": ahead_one,
            "data_thread": data_thread}


def print_draw_costs() -> None:
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        for width in (512, 768):
            cost = draw_cost(width, device=device)
            print(f"(f) initial weights, paper size, {width}-wide teacher, {device}: compute thread "
                  f"{cost['inline']:.3f} s/sample inline -> {cost['ahead'] * 1e3:.2f} ms drawn ahead (batch of 4), "
                  f"{cost['inline_one']:.3f} s -> {cost['ahead_one'] * 1e3:.1f} ms one at a time; "
                  f"a data thread spends {cost['data_thread']:.3f} s/sample")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--draws", action="store_true", help="only (f): the initial weights' cost")
    args = parser.parse_args()
    if args.draws:
        print_draw_costs()
        return
    if args.child:  # a measurement run by in_child
        kind, per_class = args.child[0], int(args.child[1])
        print(json.dumps(ttt_rate(kind, per_class) if kind in ("single", "batched") else {"seconds": bare_loop(per_class)}))
        return
    per_class = 2 if args.quick else 16
    n = 12 * per_class
    print(f"apm-bench benchmark: {os.cpu_count()} CPUs, torch {torch.__version__}, smoke-size APM "
          f"(64 px, 8x8 grid, widths 256,256,128, 60 steps), {n} synthetic samples, 1 thread per worker")
    single, batched = in_child("--child", "single", str(per_class)), in_child("--child", "batched", str(per_class))
    print(f"(a) one-at-a-time {single['samples_per_s']:.1f} samples/s; batched (16) {batched['samples_per_s']:.1f} "
          f"samples/s; ratio {batched['samples_per_s'] / single['samples_per_s']:.2f}x")
    bare = in_child("--child", "bare", str(per_class))["seconds"]
    startup = harness_run(1, 1) - in_child("--child", "bare", "1")["seconds"]
    one = harness_run(per_class, 1)
    print(f"(b) apm-bench run (1 worker) {one:.1f} s end to end vs bare torch loop {bare:.1f} s: "
          f"{one / bare:.2f}x; without the fixed start-up (Ray, worker, teacher: {startup:.1f} s) "
          f"{(one - startup) / bare:.2f}x")
    two = harness_run(per_class, 2)
    print(f"(c) 1 worker {one:.1f} s, 2 workers {two:.1f} s: {one / two:.2f}x; without start-up "
          f"{(one - startup) / max(two - startup, 1e-9):.2f}x")
    print(f"(d) peak RSS: one-at-a-time {single['peak_rss_mb']:.0f} MB, batched {batched['peak_rss_mb']:.0f} MB "
          f"(whole process, teacher and libraries included)")
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        cost = paper_size(device)
        print(f"(e) paper size on {device}: {cost['seconds']:.2f} s per sample (20 steps, one at a time), "
              f"{cost['gflops_per_step']:.1f} GFLOPs per training step, "
              f"{1 / cost['seconds']:.2f} samples/s")
    print_draw_costs()


if __name__ == "__main__":
    main()
