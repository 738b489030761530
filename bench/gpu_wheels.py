"""Gather, on a machine with a package index, every wheel bench/gpu_check.py imports besides torch, for
a GPU machine that has torch and nothing else and no index:

    python bench/gpu_wheels.py --out WHEELS                       # this machine's Python and platform
    python bench/gpu_wheels.py --out WHEELS --python 3.10 --torchvision 0.24.1
    # then, on the GPU machine, with this working tree and WHEELS copied over:
    python bench/gpu_check.py --wheels WHEELS

Which distributions: those of the modules the checks import (found by importing them here, in a child
process), less torch and everything torch itself requires, at the versions installed here (the ones
the project is tested with). torchvision must match the GPU machine's torch (0.29.1 goes with torch
2.14.1): --torchvision picks another, --skip torchvision leaves it out when the GPU machine has it.
No Ray, pyarrow or pandas: the in-process worker needs none of them. The folder must stay under 64
MiB; the command says how much it holds and fails above that."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 64 * 2**20
PROBE = """
import json, sys
sys.path.insert(0, {root!r})
before = set(sys.modules)
import bench.gpu_check as check
from harness.engine.worker import ShardWorker
from harness.models.teacher import load_teacher, meta_teacher
from harness.environment import device_environment
from harness.methods.view_feed import ViewSpec
from tasks.registry import resolve_task
from tasks.imagenet import imagenet_classnames
imagenet_classnames()
print(json.dumps(sorted({{m.split(".")[0] for m in set(sys.modules) - before}})))
"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def torch_closure() -> set[str]:
    """torch and every distribution it requires (extras aside), by normalised name."""
    seen: set[str] = set()
    stack = ["torch"]
    while stack:
        name = stack.pop()
        if _key(name) in seen:
            continue
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(_key(name))
        stack += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]
    return seen


def needed() -> dict[str, str]:
    """Distribution -> installed version, for the modules the checks import that torch does not bring."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT))], capture_output=True, text=True,
                         check=True)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    owners = metadata.packages_distributions()
    skip = torch_closure() | {"apm-bench"}
    found = {}
    for module in modules:
        for dist in owners.get(module, []):
            if _key(dist) not in skip and not _key(dist).startswith(("nvidia-", "cuda-")):
                found[_key(dist)] = metadata.version(dist)
    return dict(sorted(found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the GPU machine's Python (major.minor)")
    parser.add_argument("--platform", action="append",
                        help="wheel platform tags (default: manylinux x86_64); repeatable")
    parser.add_argument("--torchvision", help="the torchvision matching the GPU machine's torch")
    parser.add_argument("--skip", action="append", default=[], help="a distribution the GPU machine has")
    args = parser.parse_args()
    wanted = needed()
    if args.torchvision:
        wanted["torchvision"] = args.torchvision
    for name in args.skip:
        wanted.pop(_key(name), None)
    platforms = args.platform or ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    args.out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(args.out),
               "--python-version", args.python, "--implementation", "cp",
               *[f"--platform={p}" for p in platforms], *[f"{name}=={version}" for name, version in wanted.items()]]
    print("downloading:", ", ".join(f"{n}=={v}" for n, v in wanted.items()), flush=True)
    subprocess.run(command, check=True)
    wheels = sorted(args.out.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB (budget {BUDGET / 2**20:.0f} MiB) in {args.out}")
    if total > BUDGET:
        raise SystemExit(f"over the {BUDGET / 2**20:.0f} MiB budget: --skip what the GPU machine already has")


if __name__ == "__main__":
    main()
