"""fp16 loss scaling with one scale per sample, for samples trained as one computation.

One torch GradScaler over a batch of APMs checks the whole batch's gradients for overflow: one
sample's overflow skips every sample's step and halves everyone's scale (measured: the batchmates'
losses stayed flat, no error). Here each sample has the scale, growth tracker and skip decision it
would have trained alone with its own `GradScaler(init_scale=GRAD_SCALER_INIT)` - the same growth
and backoff rule (torch's `_amp_update_scale_`), the same unscaling (multiply by the float32 of the
double reciprocal), the same check (any non-finite gradient element, before unscaling). Slices of
stacked parameters get only their own sample's gradient, so the decisions are independent.
"""

from __future__ import annotations

import torch

from harness.precision import GRAD_SCALER_INIT


class SampleScales:
    def __init__(self, batch: int, device: torch.device, init_scale: float = GRAD_SCALER_INIT,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5, growth_interval: int = 2000) -> None:
        """torch.amp.GradScaler's defaults, but the project's init scale."""
        self.batch = batch
        self.scale = torch.full((batch,), init_scale, dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros(batch, dtype=torch.int32, device=device)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval

    def scaled_sum(self, per_sample: torch.Tensor) -> torch.Tensor:
        """The (B,) losses, each times its own scale, summed: backward gives sample b's slices its own
        scaled gradient."""
        return (per_sample.float() * self.scale).sum()

    def unscale_(self, parameters: list[torch.Tensor]) -> torch.Tensor:
        """Unscale every gradient in place (as GradScaler.unscale_ does, so accumulating recipes see
        what they would alone) and return (B,) true where a sample's gradient has a non-finite element."""
        inverse = self.scale.double().reciprocal().float()
        found = torch.zeros(self.batch, dtype=torch.bool, device=self.scale.device)
        for p in parameters:
            if p.grad is None:
                continue
            grad = p.grad.view(self.batch, -1)
            found |= ~torch.isfinite(grad).all(dim=1)
            grad.mul_(inverse[:, None].to(grad.dtype))
        return found

    def update(self, found: torch.Tensor) -> None:
        """Backoff where a step was skipped; growth after `growth_interval` steps in a row that were
        not (never past float32's range)."""
        successful = torch.where(found, 0, self.growth_tracker + 1)
        grown = self.scale * self.growth_factor
        grow = (successful == self.growth_interval) & torch.isfinite(grown)
        self.scale = torch.where(found, self.scale * self.backoff_factor, torch.where(grow, grown, self.scale))
        self.growth_tracker = torch.where(successful == self.growth_interval, 0, successful).to(torch.int32)
