"""Where a worker's numbers were computed: the device's model and the software under it, as the
worker's own node has them (nodes of one cluster may differ), and the switches that make its kernels
deterministic. Equal fingerprints promise equal rows only on the same device model and software; the
rows say which they were computed on, so two runs can be told apart after the fact."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("apm-bench", "torch", "torchvision", "open_clip_torch", "timm", "numpy", "pillow")
"""The node's packages whose versions can change a number."""
DRIVER_FILE = Path("/proc/driver/nvidia/version")
CUBLAS_WORKSPACE = ":4096:8"
"""What cuBLAS needs for deterministic results (CUBLAS_WORKSPACE_CONFIG, per NVIDIA's and torch's docs)."""


def device_environment(device: torch.device) -> dict[str, str]:
    """The device and software of this process: GPU model, CUDA, cuDNN and driver versions on CUDA
    (the CPU's model otherwise), and the versions of the packages that shape results."""
    env = {"host": socket.gethostname(), "python": platform.python_version()}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        env.update(device=props.name, capability=f"{props.major}.{props.minor}",
                   memory=f"{props.total_memory / 2**30:.0f} GiB", cuda=str(torch.version.cuda),
                   cudnn=str(torch.backends.cudnn.version()), driver=driver_version())
    else:
        env.update(device=cpu_model())
    for name in PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "not installed"
    env["torch"] = torch.__version__  # with its build's CUDA tag (+cu128), which the metadata omits
    return env


def environment_id(env: dict[str, str]) -> str:
    """A short name for an environment (all but the host: nodes alike give one id), for the rows; the
    manifest maps it to the whole record."""
    same = {k: v for k, v in env.items() if k != "host"}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()[:12]


def driver_version() -> str:
    """The NVIDIA driver's version: from the kernel module's file, else nvidia-smi, else unknown."""
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]*)", DRIVER_FILE.read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_deterministic() -> None:
    """--deterministic: torch's deterministic algorithms (an op without one raises, naming itself,
    rather than quietly differing), cuDNN's deterministic kernels without autotuning, and the cuBLAS
    workspace setting those need. Called before the worker's first CUDA work (cuBLAS reads its
    variable when its handle is made)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
