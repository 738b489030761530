"""Many samples' APMs trained as one computation: every parameter of ApmNet stacked along a leading
sample axis and the forward written as batched matrix products. Each sample keeps its own draw,
its own Adam state (Adam is elementwise, so one optimiser over stacked tensors is B optimisers; under
fp16 each sample also has its own loss scale and step count, harness/models/loss_scale.py) and its own
target; the summed loss gives each slice exactly its own sample's gradient. Results equal
one-at-a-time training to float tolerance, at a fraction of the per-step overhead."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from harness.models.apm import ApmNet, in_chunks
from harness.models.apm_init import Draws, draw_group
from harness.models.ttt import RECIPES, train_steps
from harness.precision import autocast


class BatchedApm:
    """Stacked parameters for B samples of one ApmNet architecture (the template holds the config
    and the fixed positional codes; its own weights are not used)."""

    def __init__(self, template: ApmNet, seeds: list[int], drawn: Draws | None = None) -> None:
        """`drawn`: the seeds' draws made ahead (apm_init.GroupDraws with `template.draw_plan(True)`);
        without them they are drawn here, on this thread."""
        self.net = template
        self.names = [n for n, _ in template.named_parameters() if not n.startswith("rgb_head.")]
        self.params = self._draw(seeds, drawn)

    def _draw(self, seeds: list[int], drawn: Draws | None) -> dict[str, torch.Tensor]:
        """Slice b is exactly what ApmNet.reset_parameters draws from seeds[b] (same order, same CPU
        RNG). On a CPU the host buffers become the parameters (no copy); to CUDA they are copied
        without blocking (pinned when drawn ahead)."""
        if drawn is None:
            drawn = draw_group(self.net.draw_plan(batched=True), seeds)
        device = self.net.query_pos.device
        return {n: drawn[n].to(device, non_blocking=True).requires_grad_() for n in self.names}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) one image per sample -> (B, G, D)."""
        net, p = self.net, self.params
        size = net.config.patch_size
        patches = F.unfold(x, size, stride=size)  # (B, 3p^2, G)
        code = torch.einsum("bkg,bk->bg", patches, p["trigger.weight"].flatten(1)) + p["trigger.bias"]
        g = net.locations
        w1 = p["first.weight"]
        base = torch.einsum("bg,bhg->bh", code, w1[:, :, :g]) + p["first.bias"]
        local = patches.transpose(1, 2) if net.config.use_patch else None
        return in_chunks(self._unfold, base, net.query_pos, local, net.config.chunk_size)

    def _unfold(self, base: torch.Tensor, pos: torch.Tensor, patches: torch.Tensor | None) -> torch.Tensor:
        p, g = self.params, self.net.locations
        w1 = p["first.weight"]
        h = torch.matmul(pos, w1[:, :, g : 2 * g].transpose(1, 2)) + base[:, None, :]
        if patches is not None:
            h = h + torch.bmm(patches, w1[:, :, 2 * g :].transpose(1, 2))
        layers = [name[: -len(".weight")] for name in self.names if name.startswith("rest.") and name.endswith(".weight")]
        for layer in layers:
            h = torch.baddbmm(p[f"{layer}.bias"][:, None, :], h.relu(), p[f"{layer}.weight"].transpose(1, 2))
        return h

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """nn.MultiheadAttention's arithmetic for one learned query, per sample."""
        net, p = self.net, self.params
        if net.config.pooling == "mean":
            return features.mean(dim=1)
        b, _, d = features.shape
        heads = net.config.heads
        kv = features + net.feature_pos[None]
        wq, wk, wv = p["attn.in_proj_weight"].chunk(3, dim=1)
        bq, bk, bv = p["attn.in_proj_bias"].chunk(3, dim=1)
        q = torch.baddbmm(bq[:, None], p["pool_query"].reshape(b, 1, d), wq.transpose(1, 2))
        k = torch.baddbmm(bk[:, None], kv, wk.transpose(1, 2))
        v = torch.baddbmm(bv[:, None], kv, wv.transpose(1, 2))
        split = lambda t: t.reshape(b, -1, heads, d // heads).transpose(1, 2)  # noqa: E731
        weights = (split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads)).softmax(-1)
        out = (weights @ split(v)).transpose(1, 2).reshape(b, 1, d)
        out = torch.baddbmm(p["attn.out_proj.bias"][:, None], out, p["attn.out_proj.weight"].transpose(1, 2))
        return out[:, 0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


class TrainedBatch(NamedTuple):
    embeddings: torch.Tensor
    """(B, D): what the predictions are made from."""
    losses: torch.Tensor
    """(B, steps) on the CPU: each sample's loss before each update."""
    updates: torch.Tensor
    """(B,) on the CPU: updates each sample applied (fewer than steps where fp16 skipped one)."""


def train_batched(
    template: ApmNet, pixels: torch.Tensor, targets: torch.Tensor, seeds: list[int], precision: str = "fp32",
    drawn: Draws | None = None, scaled: bool | None = None,
) -> TrainedBatch:
    """B samples' TTT at once, by the template's recipe: (B, 3, S, S) images, (B, D) targets, one seed
    each (`drawn`: their draws made ahead; `scaled`: loss scaling, by default fp16 on CUDA - see
    ttt.train_steps). Equal to `run_ttt` on each sample alone up to float rounding. Identical copies
    of an image give the same loss and gradient as one, so `copies` costs nothing here."""
    cfg = template.config
    device = pixels.device
    batch = BatchedApm(template, seeds, drawn)
    goal = targets.float()

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = batch(pixels)
        return (embeddings.float() - goal).pow(2).mean(dim=1), embeddings  # slice b's gradient is sample b's own

    fused = device.type in ("cpu", "cuda")  # Adam is elementwise: one optimiser over stacked tensors is B
    trained = train_steps(batch.parameters(), forward, len(seeds), cfg.steps, cfg.lr, RECIPES.get(cfg.recipe),
                          device, precision, fused=fused, scaled=scaled)
    last = trained.last
    if last is None:
        with torch.no_grad(), autocast(device, precision):
            last = batch(pixels).float()
    return TrainedBatch(last, trained.losses, trained.updates)
