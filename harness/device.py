"""What a device does to results and to their cost figures: which device, TF32, timing that waits for
the device, peak memory, and which errors are the device's rather than a sample's."""

from __future__ import annotations

import time

import torch

from harness.errors import HarnessError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise HarnessError(f"--device must be auto, cpu or cuda, not '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda: no CUDA device here")
    return torch.device(device)


def effective_precision(device_type: str, precision: str) -> str:
    """What the networks really compute in: autocast applies on CUDA only, so a CPU run is fp32."""
    return precision if device_type == "cuda" else "fp32"


def set_tf32(device: torch.device, precision: str) -> None:
    """TF32 off on CUDA for every run, whatever `precision` asks of the networks. CUDA matmuls and
    cuDNN convolutions otherwise run fp32 work in TF32 (10-bit mantissa), and fp32 work remains under
    fp16/bf16 too: scoring, losses and whatever autocast leaves in fp32 must stay fp32. Nothing is lost
    by it: the fp16/bf16 matmuls inside autocast never use TF32. `precision` is kept for the caller's
    sake; it no longer changes anything."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def now(device: torch.device) -> float:
    """A timing boundary: on CUDA, wait for the queued kernels first, so the time of a piece of work
    lands on it and not on whatever synchronises next."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class PeakMemory:
    """A method's own peak device memory: the rise over what was allocated when it started (the
    teacher, cached classifiers and other methods' state are not its), with the samples it covers."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def rise(self) -> int | None:
        """Bytes above the baseline at the peak since start(); None off CUDA (not measured)."""
        if self.device.type != "cuda":
            return None
        torch.cuda.synchronize(self.device)
        return max(0, torch.cuda.max_memory_allocated(self.device) - self.baseline)


DEVICE_ERROR_MARKERS = ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "device-side assert", "NCCL error",
                        "an illegal memory access")


def is_device_error(exc: BaseException) -> bool:
    """A CUDA error that leaves the device unusable for this process (sticky): the worker must be
    restarted, and the shard run again elsewhere; it says nothing about the samples."""
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in DEVICE_ERROR_MARKERS)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)
