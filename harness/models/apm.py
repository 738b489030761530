"""The Asynchronous Perception Machine network (docs/apm-method.md).

A trigger column (one conv summary of the whole image + a fixed 2-D sin/cos code per location) is
"unfolded" by one shared MLP into a feature per grid location; the features are pooled into one
image embedding of the teacher's width. Locations are independent, so they are evaluated in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.methods.configs import ApmConfig
from harness.errors import HarnessError
from harness.models.apm_init import DrawPlan, Draws, draw_group


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N, dim): sin of dim/2 frequencies then cos of the same, base 10000."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / max(half, 1))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """(grid*grid, dim), row-major locations: the first half encodes x, the second half y."""
    padded = 4 * math.ceil(dim / 4)  # each axis needs an even width of its own
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    code = torch.cat([sincos_1d(padded // 2, xs.flatten()), sincos_1d(padded // 2, ys.flatten())], dim=1)
    return code[:, :dim].contiguous()


def in_chunks(
    unfold: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    base: torch.Tensor,
    query_pos: torch.Tensor,
    patches: torch.Tensor | None,
    chunk_size: int,
) -> torch.Tensor:
    """Evaluate `unfold(base, pos, patches)` over location chunks and concatenate. Under grad each
    chunk is checkpointed (recomputed in backward), so activation memory is one chunk's, not G's."""
    total = query_pos.shape[0]
    chunk = chunk_size or total
    outs = []
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        args = (base, query_pos[start:stop], patches[:, start:stop] if patches is not None else None)
        if chunk < total and torch.is_grad_enabled():
            outs.append(checkpoint(unfold, *args, use_reentrant=False))
        else:
            outs.append(unfold(*args))
    return torch.cat(outs, dim=1)


def draw_parameters(net: nn.Module, seed: int) -> list[torch.Tensor]:
    """A fresh N(0, init_std) draw of every parameter of `net`, in order, on the CPU (harness/models/
    apm_init.py says why the CPU, and how the method makes these draws off the compute thread)."""
    plan = DrawPlan.of(net, net.config.init_std)  # type: ignore[attr-defined]
    drawn = draw_group(plan, [seed])
    return [drawn[name][0] for name, _ in plan.order]


class ApmNet(nn.Module):
    def __init__(self, config: ApmConfig, out_dim: int) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise HarnessError(
                f"apm.image_size {config.image_size} is not a multiple of apm.patch_size {config.patch_size}"
            )
        if config.pooling not in ("attention", "mean"):
            raise HarnessError(f"apm.pooling must be attention or mean, not '{config.pooling}'")
        if config.pooling == "attention" and out_dim % config.heads:
            raise HarnessError(f"teacher width {out_dim} is not divisible by apm.heads {config.heads}")
        self.config = config
        self.out_dim = out_dim
        self.grid = config.image_size // config.patch_size
        self.locations = self.grid * self.grid
        patch_width = 3 * config.patch_size**2 if config.use_patch else 0
        self.query_width = 2 * self.locations + patch_width

        self.trigger = nn.Conv2d(3, 1, config.patch_size, stride=config.patch_size)
        widths = (*config.hidden, out_dim)
        self.first = nn.Linear(self.query_width, widths[0])
        rest: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            rest += [nn.ReLU(), nn.Linear(w_in, w_out)]
        self.rest = nn.Sequential(*rest)
        self.register_buffer("query_pos", sincos_2d(self.locations, self.grid), persistent=False)
        if config.pooling == "attention":
            self.register_buffer("feature_pos", sincos_2d(out_dim, self.grid), persistent=False)
            self.pool_query = nn.Parameter(torch.empty(1, 1, out_dim))
            self.attn = nn.MultiheadAttention(out_dim, config.heads, batch_first=True)
        self.rgb_head = nn.Sequential(
            nn.Linear(out_dim + self.query_width, config.rgb_hidden),
            nn.ReLU(),
            nn.Linear(config.rgb_hidden, config.rgb_hidden),
            nn.ReLU(),
            nn.Linear(config.rgb_hidden, 3),
        )
        self.reset_parameters(0)

    def reset_parameters(self, seed: int, drawn: Draws | None = None) -> None:
        """Every parameter (weights, biases, query, attention) drawn from N(0, init_std), from `seed`;
        `drawn`: that seed's draws made ahead on the data threads (slice 0 of `draw_plan(False)`'s
        buffers, pinned on CUDA, so the copy does not block)."""
        if drawn is None:
            drawn = draw_group(self.draw_plan(batched=False), [seed])
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(drawn[name][0], non_blocking=True)

    def draw_plan(self, batched: bool) -> DrawPlan:
        """What a sample's draws hold: every parameter for one-at-a-time training, all but the RGB
        head (trained one at a time only, and drawn last) for a batch."""
        if batched:
            return DrawPlan.of(self, self.config.init_std, lambda name: not name.startswith("rgb_head."))
        return DrawPlan.of(self, self.config.init_std)

    def num_parameters(self, include_rgb: bool = False) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if include_rgb or not n.startswith("rgb_head."))

    def global_code(self, x: torch.Tensor) -> torch.Tensor:
        """(B, G): the trigger conv's map, flattened; the same for every location."""
        return self.trigger(x).flatten(1)

    def patches(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self.config.use_patch:
            return None
        p = self.config.patch_size
        return F.unfold(x, p, stride=p).transpose(1, 2)  # (B, G, 3p^2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, G, D): one feature per location, evaluated chunk by chunk."""
        code = self.global_code(x)
        patches = self.patches(x)
        g = self.locations
        w = self.first.weight
        # first layer on concat(code, pos[, patch]) = the code's share (once per image) + the rest per location
        base = F.linear(code, w[:, :g], self.first.bias)
        return in_chunks(self._unfold, base, self.query_pos, patches, self.config.chunk_size)

    def _unfold(self, base: torch.Tensor, pos: torch.Tensor, patches: torch.Tensor | None) -> torch.Tensor:
        g = self.locations
        w = self.first.weight
        h = base[:, None, :] + F.linear(pos, w[:, g : 2 * g])[None]
        if patches is not None:
            h = h + F.linear(patches, w[:, 2 * g :])
        return self.rest(h)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "mean":
            return features.mean(dim=1)
        kv = features + self.feature_pos[None]
        query = self.pool_query.expand(features.shape[0], -1, -1)
        out, _ = self.attn(query, kv, kv, need_weights=False)
        return out[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images -> (B, D) image embeddings."""
        return self.pool(self.features(x))

    def forward_with_rgb(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and (B, G, 3) colour per location from concat(feature, query)."""
        features = self.features(x)
        code = self.global_code(x)
        b = x.shape[0]
        query = [code[:, None, :].expand(b, self.locations, -1), self.query_pos[None].expand(b, -1, -1)]
        patches = self.patches(x)
        if patches is not None:
            query.append(patches)
        rgb = self.rgb_head(torch.cat([features, *query], dim=-1))
        return self.pool(features), rgb

    def rgb_target(self, x: torch.Tensor) -> torch.Tensor:
        """(B, G, 3): each location's mean colour, what the RGB head reconstructs."""
        p = self.config.patch_size
        return F.avg_pool2d(x, p).flatten(2).transpose(1, 2)
