"""A group of APM samples' host-side inputs - the student's views and the initial weights - made on
the worker's data threads while the previous group trains, so the compute thread only stacks and
copies them in (harness/models/apm_init.py for the draws and their memory)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future

import torch
from PIL import Image

from harness.methods.base import SampleInput
from harness.models.apm_init import DrawPlan, Draws, GroupDraws


class GroupInputs:
    """Views and draws for `group`, submitted to `pool` now (views first: a data thread that makes
    the next group's draws must not hold up the views this group needs sooner). Without a pool
    nothing happens until asked, and then on the caller's thread: views here, draws where they
    are used (`draws()` is None), exactly as before there was a pool."""

    def __init__(self, group: Sequence[SampleInput], transform: Callable[[Image.Image], torch.Tensor],
                 plan: DrawPlan, pool: Executor | None, pin: bool) -> None:
        self.group = group
        self._transform = transform
        self._views: list[Future] | None = None
        self._draws: GroupDraws | None = None
        if pool is not None:
            self._views = [pool.submit(transform, sample.image) for sample in group]
            self._draws = GroupDraws(plan, [sample.seed for sample in group], pool, pin)

    def pixels(self, device: torch.device) -> torch.Tensor:
        """(B, 3, S, S) on `device`."""
        views = [f.result() for f in self._views] if self._views is not None else [self._transform(s.image) for s in self.group]
        return torch.stack(views).to(device)

    def draws(self) -> Draws | None:
        """The group's draws, handed over once (None: draw them where they are used)."""
        if self._draws is None:
            return None
        draws, self._draws = self._draws.take(), None
        return draws

    def cancel(self) -> None:
        """Not wanted after all (the group size changed): free the data threads for what is."""
        for view in self._views or []:
            view.cancel()
        if self._draws is not None:
            self._draws.cancel()
