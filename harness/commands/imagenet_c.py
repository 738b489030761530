"""`apm-bench imagenet-c build`: ImageNet-C generated once from ImageNet val, in the released layout.

Why: `run --corruptions generated` corrupts every val image again at every run, for every teacher:
about 1.1 CPU-seconds per val image for the 15 corruptions at severity 5 (glass_blur is 80% of it),
~15 core-hours for the 750,000 files. Built once as a Ray job, every later run only reads files. Each
file is byte for byte the JPEG the generated task decodes (`tasks.imagenet_c.generated_jpeg`), and
GENERATED.json at the root makes those rows say `generated`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from harness.commands.common import DataRoot, echo, interruptible, split_values
from harness.errors import HarnessError, Interrupted, Problems, collect
from tasks.base import SampleRef
from tasks.folder import FolderTask

CHUNK = 32
"""Val images per Ray task: long enough (~35 s for all 15) to amortise scheduling, short enough to spread."""
Pair = tuple[str, int]
Work = list[tuple[SampleRef, list[Pair]]]
"""Each val image with the (corruption, severity) pairs it is built for."""
SHARED_FS = ("Workers on other nodes need the val folder and --out at the same absolute paths (a shared "
             "filesystem).")


def build_chunk(val: FolderTask, work: Work, out: str) -> dict[str, Any]:
    """One Ray task: every missing file of these images; an image is decoded only if one is missing.
    A failure is recorded (output, val file, reason) and the rest goes on."""
    from tasks.imagenet_c import generated_jpeg, write_atomic

    written, skipped, decoded, failed, cpu = 0, 0, 0, [], time.process_time()
    for ref, pairs in work:
        missing = [(c, s, Path(out, c, str(s), ref.sample_id)) for c, s in pairs]
        missing = [m for m in missing if not m[2].exists()]
        skipped += len(pairs) - len(missing)
        try:
            image = val.load(ref).image if missing else None
            decoded += bool(missing)
        except Exception as exc:  # noqa: BLE001 - a bad val image is reported, not fatal
            failed += [(f"{c}/{s}/{ref.sample_id}", ref.locator, str(exc)) for c, s, _ in missing]
            continue
        for c, s, path in missing:
            try:
                write_atomic(path, generated_jpeg(image, c, s, ref.sample_id))
                written += 1
            except Exception as exc:  # noqa: BLE001
                failed.append((f"{c}/{s}/{ref.sample_id}", ref.locator, f"{c}/{s}: {exc}"))
    return {"written": written, "skipped": skipped, "decoded": decoded, "failed": failed, "cpu": time.process_time() - cpu}


def run_build(val: FolderTask, work: Work, out: Path, address: str | None, progress: bool) -> dict[str, Any]:
    """Chunks as Ray tasks over the cluster (joined, or a local instance as the runner starts one);
    results counted as they arrive, with the driver's interrupt checkpoint every second."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from harness import interrupts
    from harness.config import ExecConfig
    from harness.engine.cluster import ray_session

    totals: dict[str, Any] = {"written": 0, "skipped": 0, "decoded": 0, "cpu": 0.0, "failed": []}
    with ray_session(ExecConfig(address=address)):
        import ray  # only now: ray_session sets the environment Ray reads when it is imported

        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = max(1, min(CHUNK, -(-len(work) // (4 * cpus))))  # small builds still use every CPU
        task, val_ref = ray.remote(num_cpus=1)(build_chunk), ray.put(val)
        pending = {task.remote(val_ref, work[i:i + size], str(out)): work[i:i + size] for i in range(0, len(work), size)}
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                       TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress)
        try:
            with bar:
                bar_id = bar.add_task(f"{cpus} CPU(s)", total=sum(len(pairs) for _, pairs in work))
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
                    interrupts.check()  # a Ctrl-C whose exception was swallowed still stops within a second
                    for ref in ready:
                        chunk = pending.pop(ref)
                        try:
                            got = ray.get(ref)
                        except ray.exceptions.RayError as exc:  # the task itself died (retried by Ray first)
                            why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
                            got = {"failed": [(f"{c}/{s}/{r.sample_id}", r.locator, f"Ray task failed: {why}")
                                              for r, pairs in chunk for c, s in pairs]}
                        for key in ("written", "skipped", "decoded", "cpu"):
                            totals[key] += got.get(key, 0)
                        totals["failed"] += got["failed"]
                        bar.update(bar_id, advance=sum(len(pairs) for _, pairs in chunk))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # a running task stops mid-file and removes its temporary file
            ray.wait(list(pending), num_returns=len(pending), timeout=5.0)
            raise Interrupted(f"interrupted: every file finished so far is kept in {out}; the same command "
                              "builds the rest") from None
    return totals


def parse_pairs(corruption: list[str] | None, severity: list[str] | None) -> list[Pair]:
    from harness.registry import unknown_name_message
    from tasks.corruptions import CORRUPTIONS

    names = split_values(corruption) or CORRUPTIONS
    bad = [unknown_name_message("ImageNet-C corruption", n, CORRUPTIONS) for n in names if n not in CORRUPTIONS]
    levels = split_values(severity) or ("5",)
    bad += [f"--severity must be 1-5, not '{s}'" for s in levels if s not in ("1", "2", "3", "4", "5")]
    if bad:
        raise Problems(bad)
    return [(c, int(s)) for c in dict.fromkeys(names) for s in dict.fromkeys(levels)]


@interruptible
def build(
    data_root: DataRoot = None,
    val: Annotated[Optional[Path], typer.Option(help="ImageNet val folder (<wnid>/*.JPEG); default: found under "
                                                     "--data-root in the layouts `run` accepts.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder to write; default <data root>/imagenet-c, where "
                                                     "`run --suite imagenet-c` looks.")] = None,
    corruption: Annotated[Optional[list[str]], typer.Option(help="Repeatable or comma-separated; default all 15.")] = None,
    severity: Annotated[Optional[list[str]], typer.Option(help="1-5, repeatable or comma-separated; default 5.")] = None,
    address: Annotated[Optional[str], typer.Option(help="Existing Ray cluster (host:port); default local. " + SHARED_FS)] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Per corruption, the stratified subset `run --limit` "
                                                             "takes at its default --seed 0 (to try it).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Write <out>/<corruption>/<severity>/<wnid>/<val file name> (JPEG 85), byte for byte what
    `run --corruptions generated` decodes, and <out>/GENERATED.json, so runs read files instead of
    corrupting every image again. Existing files are kept: an interrupted build resumes file by file.
    Workers on other nodes need the val folder and --out at the same absolute paths (a shared filesystem)."""
    from tasks.imagenet_c import MARKER, update_marker
    from tasks.registry import resolve_task
    from tasks.sampling import stratified_subset

    problems: list[str] = []
    pairs = collect(problems, parse_pairs, corruption, severity)
    root = data_root.expanduser().absolute() if data_root else None
    task = collect(problems, resolve_task, f"imagenet:{val.expanduser().absolute()}" if val else "imagenet", None,
                   str(root) if root else None)
    if out is None and root is None and val is not None:
        problems.append("--out is needed when no --data-root (or APM_BENCH_DATA) is given")
    if problems:
        raise Problems(problems)
    assert isinstance(task, FolderTask) and pairs is not None
    task = replace(task, root=str(Path(task.root).absolute()))  # workers resolve paths on their own node
    out = (out or root / "imagenet-c").expanduser().absolute()  # type: ignore[operator]
    if not (out / MARKER).exists() and any((out / c / str(s)).is_dir() for c, s in pairs):
        raise HarnessError(f"{out} already holds ImageNet-C folders but no GENERATED.json (the released set?); "
                           "choose another --out")
    refs = task.samples()
    wanted = {p: {r.sample_id for r in stratified_subset(refs, limit, 0, f"imagenet-c/{p[0]}/{p[1]}")} for p in pairs}
    work = [(r, [p for p in pairs if r.sample_id in wanted[p]]) for r in refs]
    work = [(r, ps) for r, ps in work if ps]
    update_marker(out, task.root, pairs, limit, None)
    start = time.perf_counter()
    totals = run_build(task, work, out, address, progress)
    seconds = time.perf_counter() - start
    failed = {key: reason for key, _, reason in totals["failed"]}
    update_marker(out, task.root, pairs, limit, failed)
    echo(f"{out}: {totals['written']} written, {totals['skipped']} skipped (already there), {len(failed)} failed; "
         f"{len(work)} val images x {len(pairs)} corruption/severity pair(s), {seconds:.1f} s"
         + (f", {totals['cpu'] / totals['decoded']:.2f} CPU s per val image built" if totals["decoded"] else ""))
    by_file: dict[str, set[str]] = {}
    for _, locator, reason in totals["failed"]:
        by_file.setdefault(locator, set()).add(reason)
    for locator, reasons in by_file.items():
        for reason in sorted(reasons):
            echo(f"failed: {reason if locator in reason else f'{locator}: {reason}'}", err=True)
    if failed:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="ImageNet-C generated from ImageNet val once, in the released layout. " + SHARED_FS)
    sub.command("build")(build)
    app.add_typer(sub, name="imagenet-c")
