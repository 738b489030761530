"""The CUDA paths, proven in about ten minutes on the first GPU machine lent (not a test: it needs a GPU).

    python bench/gpu_check.py                        # one GPU: every check, a JSON summary, exit 1 on a failure
    python bench/gpu_check.py --device cpu           # the same script end to end on a CPU (small models), < 3 min
    python bench/gpu_check.py --wheels WHEELS        # a machine with torch and nothing else, offline

A bare GPU machine may have torch and no package index: `python bench/gpu_wheels.py --out WHEELS` on a
machine with an index gathers the other wheels these checks import (under 64 MiB; no Ray, pyarrow or
pandas), and `--wheels WHEELS` unpacks them into WHEELS/site and imports from there.

Every check runs in its own process (a device-side assert or a hung kernel cannot take the others
with it), under a per-check timeout and a global deadline; every check runs even after one fails. The
summary (every check's status: pass, fail, timeout, skipped where the device cannot run it, or not-run
when the deadline came first; seconds; numbers) goes to $OUT/gpu_check.json when OUT is set, else
./gpu_check.json; the exit code is 1 when a check failed, timed out or was not run. The worker runs in-process, without Ray, on random-weight open_clip ViT-B-16 and
ViT-L-14 (`--pretrained none`; apm-tiny with --device cpu). Checks:

- environment: the GPU, CUDA, cuDNN, driver and packages the rows would record.
- rows-MODEL: every method's rows; equal with 1 and 4 data threads, and on a second run; no error row.
- flops-MODEL: FLOPs counted on the device equal the meta-device count the workers use.
- fp32-MODEL: fp32 on the device against the CPU: teacher embeddings within 1e-4 relative (TF32,
  10-bit mantissa, is about 1e-3 off), APM and TPT losses close.
- memory-MODEL: peak memory of TPT with 1000 classes in fp32 and fp16, TTL's step, RLCF with a
  second ViT-L-14 as reward model, and APM's batch against the estimate its batch size is chosen by.
- out-of-memory: a memory fraction too small for the asked APM batch and TPT text chunk must end in
  smaller batches and chunks, not error rows.
- device-assert: a real device-side assert, raised in a child process, is classified as a device
  error (the worker restarts), not a sample's.
- feed: host samples/s of the views (1 and 4 data threads) against the device samples/s of TPT.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("environment", "rows", "flops", "fp32", "memory", "out-of-memory", "device-assert", "feed")
PER_MODEL = ("rows", "flops", "fp32", "memory")
MODELS = {"cuda": ("ViT-B-16", "ViT-L-14"), "cpu": ("apm-tiny",)}
IGNORED = {"seconds", "worker", "peak_memory_bytes", "peak_memory_samples"}
"""Row columns that may differ between equal runs (timing, who ran it, memory)."""


def use_wheels(folder: Path) -> Path:
    """Unpack the gathered wheels (zip files) into folder/site, once, and put it first on sys.path: no
    pip, no index, and nothing installed into the machine's own environment."""
    site = folder / "site"
    for wheel in sorted(folder.glob("*.whl")):
        marker = site / f".{wheel.name}.unpacked"
        if not marker.exists():
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
            marker.touch()
    sys.path.insert(0, str(site))
    return site


# --- the checks (each runs in its own process; returns (status, detail, numbers)) ---------------------

def _setup(device: str, model: str, methods: tuple[str, ...], precision: str = "fp32", views: int | None = None,
           task_name: str = "synthetic:1", samples: int = 4, **settings: object):
    """A worker's config, tasks and shard for `methods` on a random-weight `model`."""
    from harness.config import RunConfig, TeacherConfig
    from harness.engine.shards import plan_shards
    from harness.methods import METHODS
    from tasks.registry import resolve_task

    given = {}
    for name in methods:
        kind = METHODS.get(name).settings_class()
        if kind is not None:
            fields = {f.name for f in dataclasses.fields(kind)}
            values = {k: v for k, v in settings.items() if k in fields}
            if views is not None and "views" in fields:
                values["views"] = views
            if name == "rlcf" and "reward_model" not in settings:
                values["reward_model"] = "teacher"
            given[name] = kind(**values)
    config = RunConfig(tasks=(task_name,), methods=methods, teacher=TeacherConfig(model=model, precision=precision),
                       settings=tuple(given.items()), device_type=device)
    task = resolve_task(task_name)
    shard = plan_shards([task], samples, limit=samples)[0]
    return config, {task.name: task}, shard


def _worker(config, tasks, device: str, data_threads: int = 1):
    from harness.engine.worker import RunIdentity, ShardWorker

    return ShardWorker(config, tasks, RunIdentity("gpu-check", config.fingerprint(), "gpu-check"), device,
                       data_threads=data_threads)


def _all_methods() -> tuple[str, ...]:
    from harness.methods import METHODS

    return tuple(METHODS.names())


def _small(device: str) -> dict:
    """Method sizes: the authors' on a GPU, small enough for a CPU to run every method in seconds."""
    if device == "cuda":
        return {}
    return {"views": 10, "image_size": 64, "patch_size": 8, "hidden": (64, 32), "steps": 2}


def check_environment(device: str, model: str | None) -> tuple[str, str, dict]:
    import torch

    from harness.environment import device_environment, environment_id

    env = device_environment(torch.device(device))
    return "pass", f"{env['device']} ({environment_id(env)})", env


def check_rows(device: str, model: str) -> tuple[str, str, dict]:
    small = _small(device)
    config, tasks, shard = _setup(device, model, _all_methods(), **small)
    runs = {}
    for label, threads in (("1 thread", 1), ("4 threads", 4), ("again, 1 thread", 1)):
        start = time.perf_counter()
        worker = _worker(config, tasks, device, threads)
        rows = [dataclasses.asdict(r) for r in worker.rows(shard)] + _stream_rows(worker, config, tasks, shard)
        runs[label] = ([{k: v for k, v in r.items() if k not in IGNORED} for r in rows], time.perf_counter() - start)
    first, _ = runs["1 thread"]
    errors = [f"{r['method']}: {r['error']}" for r in first if r["error"]]
    unequal = [label for label, (rows, _) in runs.items() if rows != first]
    numbers = {label: round(seconds, 1) for label, (_, seconds) in runs.items()} | {"rows": len(first)}
    ok = not errors and not unequal
    detail = f"{len(first)} rows of {len(_all_methods())} methods" + (f"; differ: {unequal}" if unequal else "") + (
        f"; errors: {errors[:3]}" if errors else "")
    return ("pass" if ok else "fail"), detail, numbers


def _stream_rows(worker, config, tasks: dict, shard) -> list[dict]:
    """The online methods' rows: one stream of the shard's samples, in one part, on the worker's device."""
    if not config.online:
        return []
    from harness.engine.stream_parts import Stream, part

    [task] = tasks.values()
    stream = Stream("gpu-check", 0, 0, tuple((task.name, ref) for ref in shard.refs))
    return worker.process(part(config, stream, 0, None, 1e9)).table.to_pylist()


def check_flops(device: str, model: str) -> tuple[str, str, dict]:
    from harness.methods import METHODS
    from harness.models.teacher import load_teacher, meta_teacher

    config, tasks, _ = _setup(device, model, _all_methods(), **_small(device))
    [task] = tasks.values()
    teacher = load_teacher(config.teacher, device)
    meta = meta_teacher(config.teacher, teacher.source)
    counted = {}
    for name in config.methods:
        length = (len(task.samples()),) if name in config.online else ()  # an online method's cost over its stream
        on_device = METHODS.get(name)(config.settings_of(name)).flops(teacher, task, *length)
        on_meta = METHODS.get(name)(config.settings_of(name)).flops(meta, task, *length)
        counted[name] = [on_device, on_meta]
    differ = [n for n, (a, b) in counted.items() if a != b]
    return ("fail" if differ else "pass"), f"differ: {differ}" if differ else "every method equal", counted


def check_fp32(device: str, model: str) -> tuple[str, str, dict]:
    import torch

    config, tasks, shard = _setup(device, model, ("apm", "tpt"), samples=2, **_small(device))
    [task] = tasks.values()
    rows = {d: _worker(config, tasks, d).rows(shard) for d in ("cpu", device)}
    from harness.models.teacher import load_teacher

    images = [task.load(ref).image for ref in shard.refs]
    embeddings = {}
    for d in ("cpu", device):
        teacher = load_teacher(config.teacher, d)
        embeddings[d] = teacher.encode_images(torch.stack([teacher.preprocess(i) for i in images])).cpu()
    relative = float(((embeddings[device] - embeddings["cpu"]).norm(dim=-1) / embeddings["cpu"].norm(dim=-1)).max())
    losses = {}
    for a, b in zip(rows["cpu"], rows[device]):
        if a.losses:
            losses[f"{a.method}/{a.sample_id}"] = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a.losses, b.losses))
    worst = max(losses.values(), default=0.0)
    ok = relative < 1e-4 and worst < 1e-3
    against = " (the device is the CPU: compared with itself)" if device == "cpu" else ""
    return ("pass" if ok else "fail"), f"embeddings {relative:.1e} relative (TF32 ~1e-3), losses {worst:.1e}{against}", {
        "embedding_relative": relative, "loss_relative": losses}


def _peak(device: str, model: str, method: str, precision: str = "fp32", task_name: str = "synthetic:1",
          samples: int = 1, **settings: object) -> tuple[int | None, str | None]:
    """A method's peak device memory on `samples` samples, and its first error row's message."""
    config, tasks, shard = _setup(device, model, (method,), precision, task_name=task_name, samples=samples,
                                  **settings)
    rows = _worker(config, tasks, device).rows(shard)
    return rows[0].peak_memory_bytes, next((r.error for r in rows if r.error), None)


def check_memory(device: str, model: str) -> tuple[str, str, dict]:
    import torch

    from harness.methods.apm import sample_bytes
    from harness.methods.configs import ApmConfig
    from harness.models.apm import ApmNet

    register_wide_task()
    reward = "ViT-L-14" if device == "cuda" else model  # the authors' reward model; a small one on a CPU
    small = _small(device)
    cases = {"tpt, 1000 classes, fp32": ("tpt", "fp32", WIDE, small),
             "tpt, 1000 classes, fp16": ("tpt", "fp16", WIDE, small),
             "ttl step": ("ttl", "fp32", "synthetic:1", small),
             f"rlcf, {reward} reward model": ("rlcf", "fp32", "synthetic:1",
                                              {**small, "reward_model": reward, "reward_pretrained": "none"})}
    numbers, errors = {}, []
    for label, (method, precision, task_name, extra) in cases.items():
        peak, error = _peak(device, model, method, precision, task_name, **extra)
        numbers[f"{label}, GiB"] = None if peak is None else round(peak / 2**30, 2)
        errors += [f"{label}: {error}"] if error else []
    peak, error = _peak(device, model, "apm", samples=4, **{**small, "batch_size": 4})
    apm = ApmConfig(**{k: v for k, v in small.items() if k != "views"})
    config, _, _ = _setup(device, model, ("zeroshot",))
    from harness.models.teacher import meta_teacher

    estimate = sample_bytes(apm, ApmNet(apm, meta_teacher(config.teacher).embed_dim))
    measured = None if peak is None else peak / 4
    numbers |= {"apm per sample, GiB (batch of 4)": None if measured is None else round(measured / 2**30, 3),
                "apm per sample, GiB (estimate)": round(estimate / 2**30, 3)}
    errors += [f"apm: {error}"] if error else []
    if device == "cpu":  # the methods ran at these sizes; their memory is not measured off CUDA
        return ("fail" if errors else "pass"), "; ".join(errors) or "every case ran (peak memory: CUDA only)", numbers
    within = measured is not None and measured <= 1.5 * estimate
    detail = "; ".join(errors) or f"APM's batch {'within' if within else 'above'} 1.5x its estimate"
    torch.cuda.empty_cache()
    return ("pass" if within and not errors else "fail"), detail, numbers


WIDE = "imagenet-wide"


def register_wide_task() -> None:
    """`imagenet-wide`: drawn shapes scored over ImageNet's 1000 class names, so a method meets
    ImageNet's class count (TPT's text tower, for one) without ImageNet on disk."""
    from tasks.families import TASKS, TaskFamily
    from tasks.imagenet import imagenet_classnames
    from tasks.synthetic import SyntheticTask

    from tasks.synthetic import CLASSNAMES

    @dataclasses.dataclass(frozen=True)
    class WideTask(SyntheticTask):
        def load(self, ref):  # noqa: ANN001, ANN202 - a SampleRef, a LoadedImage
            drawn = dataclasses.replace(ref, label=ref.label % len(CLASSNAMES))
            return SyntheticTask.load(dataclasses.replace(self, classnames=CLASSNAMES), drawn)

    if WIDE not in TASKS:
        TASKS.add(WIDE, TaskFamily(lambda request: WideTask(per_class=1, name=WIDE, classnames=imagenet_classnames()),
                                   "drawn shapes, ImageNet's class names", local=True))


def check_out_of_memory(device: str, model: str | None) -> tuple[str, str, dict]:
    """A memory fraction that holds the teacher and one APM (or TPT text chunk) but not the batch asked
    for: the batch and the chunk must shrink, and every row must be a result."""
    import torch

    if device == "cpu":
        return "skipped", "a device memory limit needs CUDA", {}
    register_wide_task()
    model = MODELS["cuda"][0]
    from harness.methods.apm import sample_bytes
    from harness.methods.configs import ApmConfig
    from harness.models.apm import ApmNet

    total = torch.cuda.get_device_properties(0).total_memory
    config, tasks, shard = _setup(device, model, ("apm", "tpt"), task_name=WIDE, samples=8, batch_size=8,
                                  text_chunk=1000)
    worker = _worker(config, tasks, device)
    room = torch.cuda.memory_allocated() + 3 * sample_bytes(ApmConfig(), ApmNet(ApmConfig(), 512))
    torch.cuda.set_per_process_memory_fraction(min(0.95, room / total))
    rows = worker.rows(shard)
    errors = [f"{r.method}: {r.error}" for r in rows if r.error]
    apm, tpt = (next(m for m in worker.methods if m.name == n) for n in ("apm", "tpt"))
    numbers = {"apm batch after": apm._size_cap, "tpt text chunk after": tpt.text_chunks.limit,
               "fraction": round(room / total, 3)}
    shrank = apm._size_cap is not None and apm._size_cap < 8
    ok = shrank and not errors
    return ("pass" if ok else "fail"), f"errors: {errors[:2]}" if errors else f"APM's batch 8 -> {apm._size_cap}", numbers


ASSERT_CHILD = """
import json, torch
from harness.device import is_device_error, is_out_of_memory
try:
    torch.zeros(3, device="cuda")[torch.tensor([7], device="cuda")].sum().item()
    print(json.dumps({"raised": None}))
except Exception as exc:
    print(json.dumps({"raised": type(exc).__name__, "device_error": is_device_error(exc) and not is_out_of_memory(exc),
                      "message": str(exc).splitlines()[0][:200]}))
"""


def check_device_assert(device: str, model: str | None) -> tuple[str, str, dict]:
    if device == "cpu":
        return "skipped", "a device-side assert needs CUDA", {}
    done = subprocess.run([sys.executable, "-c", ASSERT_CHILD], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    got = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {"stderr": done.stderr[-300:]}
    return ("pass" if got.get("device_error") else "fail"), str(got.get("message") or got), got


def check_feed(device: str, model: str | None) -> tuple[str, str, dict]:
    """Host samples/s of TPT's views with 1 and 4 data threads against the device's samples/s for TPT's
    work (its rows' seconds: the views waited for are included, so a starved device shows as slow)."""
    from concurrent.futures import ThreadPoolExecutor

    model = MODELS[device][0]
    config, tasks, shard = _setup(device, model, ("tpt",), samples=8, **_small(device))
    worker = _worker(config, tasks, device, 4)
    rows = worker.rows(shard)
    device_rate = len(rows) / sum(r.seconds for r in rows)
    from harness.methods.episodic import normalisation
    from harness.methods.view_feed import ViewSpec

    [task] = tasks.values()
    images = [task.load(ref).image for ref in shard.refs]
    mean, std = normalisation(worker.teacher.preprocess)
    views = config.settings_of("tpt").views - 1
    spec = ViewSpec(views, worker.teacher.input_size, tuple(mean), tuple(std), False, 0.08)
    numbers = {"device TPT samples/s": round(device_rate, 2)}
    for threads in (1, 4):
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            list(pool.map(lambda item: spec.make(_Sample(item[1], item[0])), enumerate(images)))
            numbers[f"host views samples/s, {threads} thread(s)"] = round(len(images) / (time.perf_counter() - start), 2)
    numbers["host/device, 4 threads"] = round(numbers["host views samples/s, 4 thread(s)"] / device_rate, 2)
    return "pass", f"host/device {numbers['host/device, 4 threads']} with 4 data threads (below 1: the GPU waits)", numbers


@dataclasses.dataclass(frozen=True)
class _Sample:
    image: object
    seed: int


RUNNERS = {"environment": check_environment, "rows": check_rows, "flops": check_flops, "fp32": check_fp32,
           "memory": check_memory, "out-of-memory": check_out_of_memory, "device-assert": check_device_assert,
           "feed": check_feed}


# --- the driver: one process per check, timeouts, the summary ------------------------------------------

def run_one(name: str, device: str, model: str | None) -> None:
    """In the child: run one check and print its result as the last line (JSON)."""
    sys.path.insert(0, str(ROOT))
    try:
        status, detail, numbers = RUNNERS[name](device, model)
    except Exception as exc:  # a check that breaks is a failed check, with its reason
        status, detail, numbers = "fail", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", {}
    print(json.dumps({"status": status, "detail": detail, "numbers": numbers}, default=str), flush=True)


def plan(device: str) -> list[tuple[str, str | None]]:
    return [(name, model) for name in CHECKS for model in (MODELS[device] if name in PER_MODEL else (None,))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels gathered by bench/gpu_wheels.py")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds for every check together")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds for one check")
    parser.add_argument("--only", help="comma-separated check names")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    site = use_wheels(args.wheels.absolute()) if args.wheels else None
    if args.one:
        run_one(args.one, args.device, args.model)
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU here: pass --device cpu to run the checks on the CPU")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *([str(site)] if site else [])])}
    started, results = time.monotonic(), []
    wanted = set(args.only.split(",")) if args.only else set(CHECKS)
    for name, model in plan(args.device):
        if name not in wanted:
            continue
        label = name if model is None else f"{name}-{model}"
        left = args.deadline - (time.monotonic() - started)
        result = {"check": label, "status": "not-run", "detail": "the global deadline passed", "numbers": {}, "seconds": 0}
        if left > 1:
            command = [sys.executable, __file__, "--one", name, "--device", args.device]
            command += ["--model", model] if model else []
            command += ["--wheels", str(args.wheels.absolute())] if args.wheels else []
            clock = time.monotonic()
            try:
                done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=min(args.timeout, left))
                last = done.stdout.strip().splitlines()[-1:] or ["{}"]
                result |= json.loads(last[0]) if last[0].startswith("{") else {
                    "status": "fail", "detail": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}
            except subprocess.TimeoutExpired:
                result |= {"status": "timeout", "detail": f"over {min(args.timeout, left):.0f} s"}
            result["seconds"] = round(time.monotonic() - clock, 1)
        results.append(result)
        print(f"{result['status'].upper():8} {label} ({result['seconds']} s): {result['detail']}", flush=True)
    failed = [r["check"] for r in results if r["status"] in ("fail", "timeout", "not-run")]
    out = Path(os.environ.get("OUT") or ".") / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": args.device, "seconds": round(time.monotonic() - started, 1),
                               "failed": failed, "checks": results}, indent=2, default=str))
    print(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "all checks passed", f"; summary: {out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
