"""TDA, the training-free dynamic adapter (Karmanov et al., CVPR 2024), as kdiAAA/TDA's tda_runner.py
runs it, on one embedding per image (TTA-VLM's protocol).

Per sample, in the authors' order:
1. zero-shot logits z0 = s * f.W (f the unit embedding, W the text classifier, s the teacher's logit
   scale, 100 on CLIP checkpoints as the authors' hard-coded 100), entropy H of softmax(z0) in nats,
   pseudo-label y = argmax z0 (ties: the lowest class);
2. the positive cache of class y admits (f, H), with no entropy gate;
3. the negative cache of class y admits (f, H, mask) only if lower < H / log2(C) < upper (strict; the
   authors divide nats by log2(C), so the band (0.2, 0.5) is (0.2885, 0.7213) of the usual H / ln C;
   `entropy_norm = ln` divides by ln C instead). mask = the classes whose zero-shot probability lies in
   (0.03, 1.0), strict;
4. final logits = z0 + alpha_p * sum_pos exp(-beta_p (1 - f.k)) onehot(class of k)
                    - alpha_n * sum_neg exp(-beta_n (1 - f.k)) mask(k),
   so a sample admitted at 2 or 3 counts itself (the authors update the caches before they read them).
A cache holds at most `capacity` entries per class, kept sorted by ascending H (a stable sort: an
equal H ranks after the older entry). Once full, a new entry replaces the last (the highest H) only if
its H is strictly lower; entries are never removed otherwise.

State (flat tensors, fp32 unless named): pos_keys (C, Kp, D), pos_entropy (C, Kp), pos_count (C,) int64,
neg_keys (C, Kn, D), neg_entropy (C, Kn), neg_mask (C, Kn, C) bool, neg_count (C,) int64; slot j of a
class is filled iff j < its count. The negative entries keep their mask (the thresholds are settings
fixed for the stream), not the authors' probability vector: the same logits, a byte per class.
At ImageNet scale (D=512, C=1000, Kp=3, Kn=2, any length) the state is 12,276,000 bytes (12.3 MB).

Differences from the authors, all documented in the settings: one centre-crop embedding on every set
(their ImageNet-A/V2/R/Sketch runs average the 6 lowest-entropy of 64 AugMix views; not offered here);
the single prompt "a photo of a {}." by default, TTA-VLM's (`templates = authors` for the authors'
per-dataset prompts, `task` for the task's set); fp32 throughout (theirs fp16); ImageNet-C and
unknown task families take ImageNet's positive alpha and beta (the authors ran neither)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from harness.methods.base import Outcome, final_scores
from harness.methods.episodic import task_family
from harness.methods.online import OnlineBase, State, StreamSample
from harness.methods.online_configs import TdaConfig
from harness.methods.online_ranking import FlopCache, first_argmax, prompts, ranked
from harness.methods.tip_templates import CLIP_IMAGENET_7
from harness.models.teacher import Teacher
from tasks.base import Task
from tasks.templates import OPENAI_IMAGENET, TemplateSet

POSITIVE_BY_FAMILY: dict[str, tuple[float, float]] = {
    "imagenet": (2.0, 5.0), "imagenet-a": (2.0, 5.0), "imagenet-v2": (1.0, 8.0), "imagenet-r": (1.0, 8.0),
    "imagenet-sketch": (2.363, 7.45), "imagenet-c": (2.0, 5.0),
    "caltech101": (5.0, 5.0), "dtd": (2.0, 3.0), "eurosat": (4.0, 8.0), "fgvc-aircraft": (2.0, 2.0),
    "food101": (1.0, 1.0), "flowers102": (1.0, 5.0), "oxford-pets": (2.0, 7.0), "stanford-cars": (1.0, 7.0),
    "sun397": (2.0, 3.0), "ucf101": (3.0, 8.0),
}
"""(alpha, beta) of the positive cache: kdiAAA/TDA's configs/*.yaml (the same for RN50 and ViT-B/16,
and in TTA-VLM's copy). ImageNet-C is not among them: ImageNet's values."""
DEFAULT_POSITIVE = POSITIVE_BY_FAMILY["imagenet"]
"""Any other task family: ImageNet's values."""
SEVEN_TEMPLATE_FAMILIES = frozenset({"imagenet", "imagenet-a", "imagenet-v2", "imagenet-c", "caltech101",
                                     "stanford-cars", "sun397"})
"""Where kdiAAA/TDA's datasets/*.py build the classifier from CLIP's 7 ImageNet-notebook templates
(ImageNet-C, which they did not run, as ImageNet); -R and -Sketch use the 80, the other fine-grained
sets one CoOp prompt each, the one their tasks here carry."""


def authors_templates(task: Task) -> TemplateSet:
    """The authors' prompts for the task's family (TdaConfig.templates = authors)."""
    family = task_family(task)
    if family in SEVEN_TEMPLATE_FAMILIES:
        return CLIP_IMAGENET_7
    return OPENAI_IMAGENET if family in ("imagenet-r", "imagenet-sketch") else task.templates


def cache_weights(keys: torch.Tensor, count: torch.Tensor, f: torch.Tensor, beta: float) -> torch.Tensor:
    """(C, K) exp(-beta (1 - f.k)) of every filled slot, 0 for an empty one (Tip-Adapter's affinity,
    the keys and f unit vectors). Matrix products in 2-D, which torch's FLOP counter counts."""
    classes, slots, dim = keys.shape
    sims = (keys.reshape(classes * slots, dim) @ f[:, None]).reshape(classes, slots)
    filled = torch.arange(slots, device=keys.device)[None, :] < count[:, None]
    return torch.exp(-beta * (1 - sims)) * filled


def admit(state: State, prefix: str, label: int, entropy: torch.Tensor, values: dict[str, torch.Tensor],
          capacity: int) -> bool:
    """The authors' update_cache on class `label` of one cache: below capacity the entry is added
    whatever its entropy; at capacity it replaces the last (highest-entropy) entry only if its entropy
    is strictly lower. The class's entries are then re-sorted by entropy with a stable sort, so among
    equal entropies the older entry ranks first and the newer is the next evicted. Returns whether
    the entry went in. `values` are the entry's tensors by state suffix (`keys`, `mask`)."""
    if capacity == 0:
        return False
    count = state[f"{prefix}_count"]
    ent = state[f"{prefix}_entropy"]
    n = int(count[label])
    if n < capacity:
        slot = n
        count[label] = n + 1
        n += 1
    elif bool(entropy < ent[label, capacity - 1]):
        slot = capacity - 1
    else:
        return False
    ent[label, slot] = entropy
    for suffix, value in values.items():
        state[f"{prefix}_{suffix}"][label, slot] = value
    order = ent[label, :n].argsort(stable=True)
    for suffix in ("entropy", *values):
        rows = state[f"{prefix}_{suffix}"]
        rows[label, :n] = rows[label, order]
    return True


@dataclass
class TdaMethod(OnlineBase):
    config: TdaConfig = field(default_factory=TdaConfig)
    name: str = "tda"
    _flops: FlopCache = field(default_factory=FlopCache, repr=False)

    def templates(self, task: Task) -> TemplateSet:
        return authors_templates(task) if self.config.templates == "authors" else prompts(self.config.templates, task)

    def positive(self, task: Task) -> tuple[float, float]:
        """(alpha, beta) of the positive cache: the settings', else the authors' for the task's family."""
        alpha, beta = POSITIVE_BY_FAMILY.get(task_family(task), DEFAULT_POSITIVE)
        cfg = self.config
        return (alpha if cfg.pos_alpha is None else cfg.pos_alpha, beta if cfg.pos_beta is None else cfg.pos_beta)

    def band_entropy(self, entropy: torch.Tensor, classes: int) -> torch.Tensor:
        """The entropy the band is tested on: nats / log2(C) (the authors') or nats / ln C."""
        return entropy / (math.log2(classes) if self.config.entropy_norm == "log2" else math.log(classes))

    def _empty(self, classes: int, dim: int, device: torch.device | str) -> State:
        kp, kn = self.config.pos_capacity, self.config.neg_capacity
        return {
            "pos_keys": torch.zeros(classes, kp, dim, device=device),
            "pos_entropy": torch.zeros(classes, kp, device=device),
            "pos_count": torch.zeros(classes, dtype=torch.int64, device=device),
            "neg_keys": torch.zeros(classes, kn, dim, device=device),
            "neg_entropy": torch.zeros(classes, kn, device=device),
            "neg_mask": torch.zeros(classes, kn, classes, dtype=torch.bool, device=device),
            "neg_count": torch.zeros(classes, dtype=torch.int64, device=device),
        }

    def begin(self, teacher: Teacher, task: Task, length: int) -> State:
        """Both caches empty (the authors start every data set so)."""
        return self._empty(len(task.classnames), teacher.embed_dim, teacher.device)

    def adapted(self, state: State, f: torch.Tensor, z0: torch.Tensor, task: Task) -> torch.Tensor:
        """(C,) the final logits from the caches as they stand: z0 + positive term - negative term."""
        alpha, beta = self.positive(task)
        pos = alpha * cache_weights(state["pos_keys"], state["pos_count"], f, beta).sum(-1)
        return z0 + pos - self.negative(state, f)

    def negative(self, state: State, f: torch.Tensor) -> torch.Tensor:
        """(C,) the negative term, to subtract: alpha_n * sum exp(-beta_n (1 - f.k)) mask(k)."""
        cfg = self.config
        classes = state["neg_mask"].shape[-1]
        neg_w = cache_weights(state["neg_keys"], state["neg_count"], f, cfg.neg_beta).reshape(1, -1)
        return cfg.neg_alpha * (neg_w @ state["neg_mask"].reshape(-1, classes).float())[0]

    def update(self, state: State, f: torch.Tensor, z0: torch.Tensor) -> int:
        """Admit the sample to both caches under its zero-shot pseudo-label; returns that label."""
        cfg = self.config
        logp = z0.log_softmax(-1)
        probs = logp.exp()
        entropy = -(probs * logp).sum()
        label = first_argmax(z0)
        admit(state, "pos", label, entropy, {"keys": f}, cfg.pos_capacity)
        h = self.band_entropy(entropy, z0.shape[-1])
        if cfg.entropy_lower < float(h) < cfg.entropy_upper:
            mask = (probs > cfg.mask_lower) & (probs < cfg.mask_upper)
            admit(state, "neg", label, entropy, {"keys": f, "mask": mask}, cfg.neg_capacity)
        return label

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Update the caches, then read them for this sample's logits (the authors' order)."""
        f = self.unit(sample)
        with torch.autocast(f.device.type, enabled=False):  # fp32 even inside a caller's autocast
            z0 = self.zero_shot(f, self.text(teacher, task), teacher.logit_scale)
            before = self.update(state, f, z0)
            logits = self.adapted(state, f, z0, task)
        return ranked(logits, final_scores(logits, teacher.logit_scale), before, self.templates(task))

    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """The image forward, z0 and both caches' read-out at full capacity (counted on the meta device;
        the admissions copy and sort a few rows, no counted arithmetic)."""
        classes, dim = len(task.classnames), teacher.embed_dim

        def one_step() -> None:
            state = self._empty(classes, dim, "meta")
            f = torch.empty(dim, device="meta")
            self.adapted(state, f, self.zero_shot(f, torch.empty(dim, classes, device="meta"), 100.0), task)

        return self._flops.get(teacher, task, length, one_step)

    def state_bytes(self, dim: int, classes: int, length: int) -> int:
        """Both caches full: fp32 keys and entropies, int64 counts, a bool mask per negative entry."""
        kp, kn = self.config.pos_capacity, self.config.neg_capacity
        return classes * (kp * (dim + 1) * 4 + kn * (dim + 1) * 4 + kn * classes + 2 * 8)


def tda(config: TdaConfig | None) -> TdaMethod:
    return TdaMethod(config=config or TdaConfig())
