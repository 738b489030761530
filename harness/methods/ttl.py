"""TTL (Imam et al., WACV 2025): low-rank updates of the image tower's last attention blocks, trained
for one step on one image's views, then discarded. The teacher's weights are never touched: the
updated weights W + (alpha / r) (A B)^T are handed to the tower for this sample's forwards only
(torch.func.functional_call), so nothing of the sample can stay in the shared teacher. Its views are
crops and flips on every data set: the authors' AugMixAugmenter has an empty AugMix op list in both
branches, so TPT's AugMix rule does not apply (TtlConfig.augmix)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call

from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods.base import Outcome, SampleInput
from harness.methods.chunks import Chunks
from harness.methods.configs import TtlConfig
from harness.methods.episodic import ViewMethod, tuned_outcome, view_entropy
from harness.models.teacher import Teacher
from harness.precision import autocast, grad_scaler
from tasks.base import Task

LORA_SEED = 0
"""A is drawn once, from this seed, and reused for every sample (the authors save one draw and restore it)."""


@dataclass(frozen=True)
class LoraSite:
    param: str
    """A weight of the image tower (out x in)."""
    rows: tuple[int, int]
    """The output rows the update goes to: the query's or the value's part of a fused projection."""


def lora_sites(visual: torch.nn.Module, blocks: int) -> list[LoraSite]:
    """Query and value projections of the tower's last `blocks` attention modules: fused ones
    (open_clip's nn.MultiheadAttention `in_proj_weight`, timm's `qkv.weight`: q, k, v stacked by rows)
    or separate `q_proj` / `v_proj` (a ResNet tower's attention pool)."""
    params = dict(visual.named_parameters())
    groups = []
    for name, weight in params.items():
        if name.endswith(("in_proj_weight", "qkv.weight")):
            d = weight.shape[0] // 3
            groups.append([LoraSite(name, (0, d)), LoraSite(name, (2 * d, 3 * d))])
        elif name.endswith("q_proj.weight") and name.replace("q_proj.weight", "v_proj.weight") in params:
            value = name.replace("q_proj.weight", "v_proj.weight")
            groups.append([LoraSite(name, (0, weight.shape[0])), LoraSite(value, (0, params[value].shape[0]))])
    if not groups:
        raise HarnessError("ttl needs attention in the image tower (query and value projections); this teacher has none")
    return [site for group in groups[-blocks:] for site in group]


class LowRank(torch.nn.Module):
    """One (A, B) pair per site: A (in x r) from a fixed Xavier-normal draw, B (r x rows) zero, so the
    tower starts exactly as the teacher's."""

    def __init__(self, visual: torch.nn.Module, cfg: TtlConfig) -> None:
        super().__init__()
        self.visual = [visual]  # not a submodule: its weights are the teacher's, not ours
        self.sites = lora_sites(visual, cfg.blocks)
        self.scale = cfg.alpha / cfg.rank
        params = dict(visual.named_parameters())
        generator = torch.Generator().manual_seed(LORA_SEED)
        device = next(iter(params.values())).device
        self.a = torch.nn.ParameterList()
        self.b = torch.nn.ParameterList()
        for site in self.sites:
            fan_in, rows = params[site.param].shape[1], site.rows[1] - site.rows[0]
            std = math.sqrt(2.0 / (fan_in + cfg.rank))
            drawn = torch.randn(fan_in, cfg.rank, generator=generator) * std
            self.a.append(torch.nn.Parameter(drawn.to(device)))
            self.b.append(torch.nn.Parameter(torch.zeros(cfg.rank, rows, device=device)))
        self.a_init = [a.detach().clone() for a in self.a]

    def reset(self) -> None:
        with torch.no_grad():
            for a, b, init in zip(self.a, self.b, self.a_init):
                a.copy_(init)
                b.zero_()

    def weights(self) -> dict[str, torch.Tensor]:
        """The updated weights of every site's tensor: W plus the updates of its row ranges."""
        params = dict(self.visual[0].named_parameters())
        updates: dict[str, list[tuple[tuple[int, int], torch.Tensor]]] = {}
        for site, a, b in zip(self.sites, self.a, self.b):
            updates.setdefault(site.param, []).append((site.rows, self.scale * (a @ b).T))
        out = {}
        for name, parts in updates.items():
            weight = params[name]
            pieces, at = [], 0
            for (start, stop), delta in sorted(parts, key=lambda p: p[0]):
                if start > at:
                    pieces.append(torch.zeros(start - at, weight.shape[1], device=weight.device, dtype=delta.dtype))
                pieces.append(delta)
                at = stop
            if at < weight.shape[0]:
                pieces.append(torch.zeros(weight.shape[0] - at, weight.shape[1], device=weight.device, dtype=pieces[0].dtype))
            out[name] = weight + torch.cat(pieces).to(weight.dtype)
        return out


@dataclass
class TtlMethod(ViewMethod):
    name: str = "ttl"
    _lora: dict[int, LowRank] = field(default_factory=dict, repr=False)
    _step_chunks: Chunks = field(default_factory=Chunks, repr=False)
    """Views per forward and backward of a step: all, until running out of memory halves it for the worker."""

    def low_rank(self, teacher: Teacher) -> LowRank:
        if id(teacher) not in self._lora:
            self._lora[id(teacher)] = LowRank(teacher.model.visual, self.config)
        return self._lora[id(teacher)]

    def _embed(self, teacher: Teacher, lora: LowRank, pixels: torch.Tensor) -> torch.Tensor:
        return self._embed_with(teacher, lora.weights(), pixels)

    def _embed_with(self, teacher: Teacher, weights: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        with autocast(teacher.device, teacher.config.precision):
            out = functional_call(teacher.model.visual, weights, (pixels,))
        return F.normalize(out.float(), dim=-1)

    def _step(self, teacher: Teacher, lora: LowRank, pixels: torch.Tensor, classifier: torch.Tensor,
              optimizer: torch.optim.Optimizer, scaler) -> torch.Tensor:
        """One step on mean_i exp(E0 - H_i) H_i over every view, the weights held constant. A forward
        and backward that run out of memory are run again with the views in halved chunks."""
        loss = self._step_chunks.fit(len(pixels), lambda: self._backward(teacher, lora, pixels, classifier, scaler))
        scaler.step(optimizer)
        scaler.update()
        return loss

    def _backward(self, teacher: Teacher, lora: LowRank, pixels: torch.Tensor, classifier: torch.Tensor,
                  scaler) -> torch.Tensor:
        """The step's loss, its gradient left in A and B. The views go in chunks, each chunk's forward
        and backward before the next, so only one chunk's activations are held: a view's term of the
        loss (its weight included) depends on that view alone, so the chunks' gradients add up to the
        whole one. The updated weights are made once and stand in the chunks' graphs as leaves; their
        summed gradient goes back to A and B in one backward at the end, so the arithmetic (and the
        FLOPs) of a step are those of one pass whatever the chunk."""
        lora.zero_grad(set_to_none=True)  # here, so that a failed attempt's half gradient goes too
        weights = lora.weights()
        leaves = {name: weight.detach().requires_grad_() for name, weight in weights.items()}
        total = torch.zeros((), device=pixels.device)
        for span in self._step_chunks.spans(len(pixels)):
            entropy = view_entropy(teacher.logit_scale * self._embed_with(teacher, leaves, pixels[span]) @ classifier)
            part = (torch.exp(self.config.margin - entropy.detach()) * entropy).sum() / len(pixels)
            scaler.scale(part).backward()
            total = total + part.detach()
        used = [name for name, leaf in leaves.items() if leaf.grad is not None]
        torch.autograd.backward([weights[name] for name in used], [leaves[name].grad for name in used])
        return total

    def adapt_views(self, teacher: Teacher, task: Task, sample: SampleInput, views: torch.Tensor) -> Outcome:
        """Every view, the original first, goes through the tower again at each step: the update
        changes the image features, so no embedding computed without it can be reused."""
        cfg = self.config
        classifier = teacher.classifier(task.classnames, self.templates(task))
        pixels = torch.cat([teacher.preprocess(sample.image)[None], views]).to(teacher.device)
        lora = self.low_rank(teacher)
        lora.reset()
        optimizer = torch.optim.AdamW(list(lora.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = grad_scaler(teacher.device, teacher.config.precision)
        losses = [self._step(teacher, lora, pixels, classifier, optimizer, scaler) for _ in range(cfg.steps)]
        with torch.no_grad():
            logits = teacher.logit_scale * self._embed(teacher, lora, pixels[:1])[0] @ classifier
        lora.reset()  # nothing of this sample stays behind
        values = torch.stack(losses).tolist() if losses else []
        return tuned_outcome(self.name, logits, values, teacher.logit_scale, n_templates=1, template_set=self.templates(task).name)

    def flops(self, teacher: Teacher, task: Task) -> int:
        """Per sample: the shared teacher forward of view 0, each step's forward and backward of every
        view through the updated tower, and the final forward of view 0. Counted once per task."""
        key = (id(teacher), task.classnames)
        if key not in self._flops:
            side, cfg = teacher.input_size, self.config
            pixels = torch.zeros(cfg.views, 3, side, side, device=teacher.device)
            classifier = torch.zeros(teacher.embed_dim, len(task.classnames), device=teacher.device)
            lora = self.low_rank(teacher)
            optimizer = torch.optim.AdamW(list(lora.parameters()), lr=0.0)
            scaler = grad_scaler(teacher.device, teacher.config.precision)
            step = count_flops(lambda: self._step(teacher, lora, pixels, classifier, optimizer, scaler))
            final = count_flops(lambda: self._embed(teacher, lora, pixels[:1]))
            lora.reset()
            self._flops[key] = teacher.image_flops + cfg.steps * step + final
        return self._flops[key]


def ttl(settings: TtlConfig) -> TtlMethod:
    return TtlMethod(settings)
