"""FLOPs by counting what torch actually dispatches (torch.utils.flop_counter), once per model and
config, since a method's arithmetic does not depend on the pixels."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations (multiply and add counted separately) of one call of `fn`."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
