"""FLOPs by counting what torch actually dispatches (torch.utils.flop_counter), once per model and
config, since a method's arithmetic does not depend on the pixels.

Attention hides from the counter twice: nn.MultiheadAttention's fused "fast path" (eval mode, no
grad) and the fused scaled-dot-product kernels (CPU flash attention, CUDA flash and memory-efficient)
are kernels it has no formula for. ViT-B-16 counted 22.5 GFLOPs through the fast path, 33.7 G without
it, and 35.1 G with attention's own matrix products. Counting turns the fast path off and runs
attention by its math backend, so a model's FLOPs are the same on every device (the meta device of
`apm-bench plan` included), in every precision and with or without grad."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations (multiply and add counted separately) of one call of `fn`."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return int(counter.get_total_flops())
