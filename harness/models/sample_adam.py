"""Adam for B samples trained as one computation, whose steps can be skipped one sample at a time.

torch.optim.Adam keeps one step count per parameter tensor. Over stacked (B, ...) parameters that is
one count for all B samples, which is right while every sample steps together, but a sample whose
fp16 step is skipped (its gradient overflowed) must keep its parameters, moments and step count while
its batchmates move. So the count is per sample here, and so are the bias corrections; the arithmetic
is torch's single-tensor Adam (no weight decay, amsgrad or maximize), so a sample's trajectory equals
torch.optim.Adam's on that sample alone to float rounding (tests/test_sample_scaling.py).
"""

from __future__ import annotations

import torch


class SampleAdam(torch.optim.Optimizer):
    """`params` are stacked along a leading sample axis of size `batch`, or (batch 1) one sample's
    unstacked tensors; every tensor is viewed as (batch, -1). A torch Optimizer, so torch's LR
    schedulers drive its learning rate (the demo recipe's StepLR steps every iteration, skipped or
    not, as it would for one sample with its own GradScaler)."""

    def __init__(self, params: list[torch.Tensor], batch: int, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.batch = batch

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:  # type: ignore[override]
        """One update of the samples where `active` (B,) is true; the others stay exactly as they are.
        No host synchronisation: the decision stays on the device."""
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                on = active if active is not None else torch.ones(self.batch, dtype=torch.bool, device=p.device)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(self.batch, dtype=torch.float64, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                step = state["step"]
                step += on
                # torch computes these per tensor in double on the host; here per sample, in double
                bias1 = 1 - beta1**step
                bias2_sqrt = (1 - beta2**step).sqrt()
                step_size = torch.where(on, -lr / bias1, 0.0)  # 0 for a sample that never stepped, not -inf
                bias2_sqrt = torch.where(on, bias2_sqrt, 1.0)

                def column(values: torch.Tensor) -> torch.Tensor:
                    return values.to(p.dtype)[:, None]

                x = p.view(self.batch, -1)
                m = state["exp_avg"].view(self.batch, -1)
                v = state["exp_avg_sq"].view(self.batch, -1)
                grad = torch.where(on[:, None], p.grad.view(self.batch, -1), 0.0)  # a skipped sample's inf stays out
                m.lerp_(grad, column(torch.where(on, 1 - beta1, 0.0)))
                v.mul_(column(torch.where(on, beta2, 1.0))).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / column(bias2_sqrt)).add_(eps)
                x.addcdiv_(m * column(step_size), denom)
