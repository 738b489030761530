"""Numeric precision of the networks' forward passes, as one named setting (--precision).

Autocast applies on CUDA only: a CPU run computes in fp32 whatever is asked. Scoring never runs in
reduced precision (methods.base.score)."""

from __future__ import annotations

import contextlib

import torch

from harness.models.teacher_config import PRECISIONS
from harness.errors import HarnessError

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""--precision -> the autocast dtype on CUDA. fp16 is what TPT and CLIP_benchmark ran by default."""
assert tuple(AUTOCAST_DTYPES) == PRECISIONS, "every --precision needs an autocast dtype"

GRAD_SCALER_INIT = 1000.0
"""TPT's GradScaler(init_scale=1000); the APM demo keeps torch's default, which only differs until the
first overflow. One fresh scaler per sample, so no sample depends on its predecessors; a batch of APMs
keeps one scale per sample (harness/models/loss_scale.py), so none depends on its batchmates either."""


def check_precision(precision: str) -> str:
    if precision not in AUTOCAST_DTYPES:
        raise HarnessError(f"--precision must be one of {', '.join(AUTOCAST_DTYPES)}, not '{precision}'")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """fp16/bf16 autocast on CUDA when asked; CPU always runs fp32."""
    dtype = AUTOCAST_DTYPES[check_precision(precision)]
    if dtype is not None and device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def loss_scaling(device: torch.device, precision: str) -> bool:
    """Whether training steps scale their loss: fp16 on CUDA, the only place autocast computes fp16."""
    return check_precision(precision) == "fp16" and device.type == "cuda"


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 training steps on CUDA (fp16 gradients underflow without it); a
    pass-through everywhere else, so callers use one code path."""
    return torch.amp.GradScaler(device.type, init_scale=GRAD_SCALER_INIT, enabled=loss_scaling(device, precision))
