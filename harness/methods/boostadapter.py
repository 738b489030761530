"""BoostAdapter (Zhang et al., NeurIPS 2024), as taolinzhang/BoostAdapter's runner.py runs it
(`--mode boostadapter`, code of commit 2ba992d): TDA's caches (harness/methods/tda.py, whose code this
reuses) plus, for every image, a throw-away copy of the positive cache boosted with the image's own
most confident views.

Per sample, with V the image's views (view 0 the teacher's centre crop, then views - 1 random resized
crops with a flip, no AugMix, as the authors on every set), unit features f_v and logits z_v = s f_v.W:
1. the historical sample (f_h, z_h, p_h, H_h): view 0's feature, logits, softmax and entropy; on
   ImageNet-A, -V2, -R and -Sketch (the authors' `infer_ori_image` False) the int(V * 0.1) = 6
   lowest-entropy views' mean feature (not renormalised), mean logits, mean softmax and the entropy
   of that mean softmax. Pseudo-label y_h = argmax z_h;
2. the positive cache of y_h admits (f_h, H_h): TDA's rule, capacity 3 (tda.admit);
3. the boosted copy: the positive cache after 2, plus the same 6 lowest-entropy views (view 0 among
   the candidates), each with its own argmax label and entropy, inserted in ascending entropy order
   under capacity 3 + delta per class (delta per data set, the authors' configs/*.yaml). Only the
   classes the 6 views name change; the copy is never stored (discarded after the prediction);
4. the negative cache of y_h admits (f_h, H_h, mask of p_h) inside TDA's entropy band, FIRST IN, FIRST
   OUT with capacity 2: a full class drops its oldest entry (their update_cache's default `fifo=True`;
   TDA keeps the 2 lowest entropies, so this differs from tda.py's rule on purpose);
5. logits = z_h + alpha sum_{boosted copy} exp(-beta (1 - f_h.k)) onehot - (TDA's negative term at f_h).
That is the authors' order: the caches and the copy are updated before this sample's logits are read.
ImageNet itself: their loader gives one view, so no boosting (int(1 * 0.1) = 0 views; their
imagenet.yaml has no delta): BoostAdapter there is TDA with a FIFO negative cache, and `view_spec`
asks the engine for no views (TTA-VLM boosts ImageNet with delta 1: `protocol = tta-vlm`).

Ties: the views are ranked by a stable sort (equal entropies keep view order), labels by the lowest
class index, and inside the boosted copy a class's entries by a stable sort of [its historical
entries, then its views in selection order], so an equal entropy never displaces an older entry (their
sorted()). fp32 throughout (theirs fp16). prediction_before is view 0's zero-shot argmax.

State: TDA's layout (tda.py), the negative slots in arrival order (slot 0 the oldest); nothing of the
boosting. At ImageNet scale (D=512, C=1000, any length) 12,276,000 bytes (12.3 MB), as TDA."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods.base import Outcome, final_scores
from harness.methods.episodic import FINE_GRAINED_FAMILIES, task_family
from harness.methods.online import State, StreamSample, tpt_views
from harness.methods.online_configs import BoostAdapterConfig
from harness.methods.online_ranking import first_argmax, ranked
from harness.methods.tda import TdaMethod, admit, cache_weights
from harness.methods.view_feed import ViewSpec
from harness.models.teacher import Teacher
from tasks.base import Task

DELTA_BY_FAMILY: dict[str, int] = {
    "imagenet-a": 3, "imagenet-v2": 1, "imagenet-r": 3, "imagenet-sketch": 1,
    "caltech101": 2, "dtd": 0, "eurosat": 0, "fgvc-aircraft": 2, "food101": 3, "flowers102": 0,
    "oxford-pets": 0, "stanford-cars": 3, "sun397": 1, "ucf101": 0,
}
"""The boosted copy's extra entries per class: `delta` of taolinzhang/BoostAdapter's configs/*.yaml
(the same in TTA-VLM's hard-coded table). ImageNet has none (one view, no boosting)."""
TTA_VLM_IMAGENET_DELTA = 1
"""TTA-VLM's delta for ImageNet (`I: 1`); also taken on ImageNet-C and any other task."""
MEAN_FAMILIES = frozenset({"imagenet-a", "imagenet-v2", "imagenet-r", "imagenet-sketch"})
"""Where the authors' historical sample is the mean of the top views (their A/V/R/S path)."""


@dataclass(frozen=True)
class Historical:
    """What the persistent caches take of a sample and what queries them."""

    feature: torch.Tensor
    """(D,) view 0's unit feature, or the top views' mean (norm below 1)."""
    logits: torch.Tensor
    """(C,) the base logits the cache terms are added to."""
    probs: torch.Tensor
    """(C,) the probabilities the negative mask is cut from."""
    entropy: torch.Tensor
    """0-d, nats: the positive cache's rank and the negative band's test."""


def entropies(logits: torch.Tensor) -> torch.Tensor:
    """Each row's entropy in nats from log_softmax (the authors' softmax_entropy, TDA's formula)."""
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def enqueue(state: State, prefix: str, label: int, entropy: torch.Tensor, values: dict[str, torch.Tensor],
            capacity: int) -> bool:
    """The authors' update_cache with fifo=True on class `label`: append; a full class drops its oldest
    entry (slot 0) and the others move down one slot. Whatever its entropy; returns whether it went in."""
    if capacity == 0:
        return False
    count = state[f"{prefix}_count"]
    n = int(count[label])
    if n < capacity:
        slot = n
        count[label] = n + 1
    else:
        for suffix in ("entropy", *values):
            rows = state[f"{prefix}_{suffix}"]
            rows[label, :-1] = rows[label, 1:].clone()
        slot = capacity - 1
    state[f"{prefix}_entropy"][label, slot] = entropy
    for suffix, value in values.items():
        state[f"{prefix}_{suffix}"][label, slot] = value
    return True


def boost(entropy: torch.Tensor, count: torch.Tensor, view_entropy: torch.Tensor, labels: list[int],
          capacity: int) -> dict[int, torch.Tensor]:
    """The boosted copy of a positive cache, as the classes it changes: for each class a boosting view is
    labelled with, the entries the copy keeps of that class, ascending entropy, as indices into [the
    class's Kp historical slots, then the k boosting views]: j < Kp is historical slot j, Kp + i view i.

    entropy (C, Kp) and count (C,) are the historical cache's; view_entropy (k,) and labels (k) the
    boosting views', in their insertion order. Inserting them one by one under the authors' rule
    (append, stable sort by entropy, keep `capacity`) keeps the `capacity` lowest of the class's
    historical entries followed by its views, by a stable sort, which is computed here."""
    if capacity == 0:
        return {}
    slots, device = entropy.shape[1], entropy.device
    kept = {}
    for c in sorted(set(labels)):
        n = int(count[c])
        mine = torch.tensor([i for i, label in enumerate(labels) if label == c], dtype=torch.int64, device=device)
        candidates = torch.cat([torch.arange(n, device=device), slots + mine])
        order = torch.cat([entropy[c, :n], view_entropy[mine]]).argsort(stable=True)
        kept[c] = candidates[order[:capacity]]
    return kept


@dataclass
class BoostAdapterMethod(TdaMethod):
    config: BoostAdapterConfig = field(default_factory=BoostAdapterConfig)
    name: str = "boostadapter"
    _counts: dict[tuple, int] = field(default_factory=dict, repr=False)

    # --- what each task gets -------------------------------------------------------------------
    def delta(self, task: Task) -> int | None:
        """The boosted copy's extra entries per class; None: no views and no boosting on this task."""
        if self.config.delta is not None:
            return self.config.delta
        family = task_family(task)
        if family == "imagenet":
            return None if self.config.protocol == "authors" else TTA_VLM_IMAGENET_DELTA
        return DELTA_BY_FAMILY.get(family, TTA_VLM_IMAGENET_DELTA)

    def view_count(self, task: Task) -> int:
        """Views per image on this task: the setting's, 1 where there is no boosting."""
        return 1 if self.delta(task) is None else self.config.views

    def boosted_capacity(self, task: Task) -> int:
        """Entries per class in the boosted copy: pos_capacity + delta (0 with the positive cache off,
        as the authors' `enabled: False` skips the boosting)."""
        cfg = self.config
        return cfg.pos_capacity + (self.delta(task) or 0) if cfg.pos_capacity else 0

    def historical_rule(self, task: Task) -> str:
        cfg = self.config
        if cfg.historical is not None:
            return cfg.historical
        return "mean" if cfg.protocol == "authors" and task_family(task) in MEAN_FAMILIES else "view0"

    def uses_augmix(self, task: Task) -> bool:
        choice = self.config.augmix or ("off" if self.config.protocol == "authors" else "auto")
        return choice == "on" or (choice == "auto" and task_family(task) in FINE_GRAINED_FAMILIES)

    def view_spec(self, teacher: Teacher, task: Task) -> ViewSpec | None:
        """TPT's views of every image (episodic.ViewMethod's spec), or None: the teacher's embedding only."""
        return tpt_views(teacher, self.view_count(task), self.uses_augmix(task), self.config.min_scale)

    # --- one sample --------------------------------------------------------------------------------
    def features(self, task: Task, sample: StreamSample) -> torch.Tensor:
        """(views, D) unit features, view 0 first; the engine's views where the task takes them."""
        views = self.view_count(task)
        if views == 1:
            return self.unit(sample)[None]
        if sample.views is None or sample.views.shape[0] != views:
            got = None if sample.views is None else sample.views.shape[0]
            raise HarnessError(f"boostadapter needs {views} views of each {task.name} image, was given {got}")
        return sample.views.float()

    def top_views(self, logits: torch.Tensor) -> torch.Tensor:
        """The int(N * top) lowest-entropy views, a stable sort (ties keep view order; view 0 competes)."""
        return entropies(logits).argsort(stable=True)[: int(logits.shape[0] * self.config.top)]

    def historical(self, task: Task, views: torch.Tensor, logits: torch.Tensor, top: torch.Tensor) -> Historical:
        """Case A (view 0) or the authors' multi-view case B (the top views' means, entropy of the mean)."""
        if self.historical_rule(task) == "view0" or views.shape[0] == 1 or len(top) == 0:
            z = logits[0]
            return Historical(views[0], z, z.softmax(-1), entropies(z))
        logp = logits[top].log_softmax(-1)
        mean_logp = (logp.logsumexp(0) - math.log(len(top))).clamp(min=torch.finfo(logp.dtype).min)
        entropy = -(mean_logp.exp() * mean_logp).sum()
        return Historical(views[top].mean(0), logits[top].mean(0), logp.exp().mean(0), entropy)

    def remember(self, state: State, hist: Historical) -> int:
        """The historical sample into the positive cache (TDA's rule); returns its pseudo-label."""
        label = first_argmax(hist.logits)
        admit(state, "pos", label, hist.entropy, {"keys": hist.feature}, self.config.pos_capacity)
        return label

    def remember_negative(self, state: State, hist: Historical, label: int) -> None:
        """The historical sample into the FIFO negative cache if its entropy lies in TDA's band."""
        cfg = self.config
        if cfg.entropy_lower < float(self.band_entropy(hist.entropy, hist.logits.shape[-1])) < cfg.entropy_upper:
            mask = (hist.probs > cfg.mask_lower) & (hist.probs < cfg.mask_upper)
            enqueue(state, "neg", label, hist.entropy, {"keys": hist.feature, "mask": mask}, cfg.neg_capacity)

    def scores(self, state: State, hist: Historical, boost_keys: torch.Tensor, boosted: dict[int, torch.Tensor],
               task: Task) -> torch.Tensor:
        """(C,) z_h + alpha * (positive term of the boosted copy) - negative term, all at f_h: a class
        the boosting left alone sums its historical entries, a changed one its kept entries (in the
        copy's order). boost_keys (k, D): the boosting views, whose indices `boosted` holds."""
        alpha, beta = self.positive(task)
        f = hist.feature
        hist_w = cache_weights(state["pos_keys"], state["pos_count"], f, beta)
        pos = hist_w.sum(-1)
        if boost_keys.shape[0]:
            view_w = torch.exp(-beta * (1 - (boost_keys @ f[:, None])[:, 0]))
            for c, kept in boosted.items():
                pos[c] = torch.cat([hist_w[c], view_w])[kept].sum()
        return hist.logits + alpha * pos - self.negative(state, f)

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Historical positive entry, boosted copy, negative entry, then the logits (the authors' order)."""
        views = self.features(task, sample)
        with torch.autocast(views.device.type, enabled=False):  # fp32 even inside a caller's autocast
            logits = teacher.logit_scale * (views @ self.text(teacher, task))
            top = self.top_views(logits)
            hist = self.historical(task, views, logits, top)
            label = self.remember(state, hist)
            if not self.boosted_capacity(task):
                top = top[:0]
            labels = [first_argmax(z) for z in logits[top]]
            boosted = boost(state["pos_entropy"], state["pos_count"], entropies(logits[top]), labels,
                            self.boosted_capacity(task))
            self.remember_negative(state, hist, label)
            final = self.scores(state, hist, views[top], boosted, task)
        return ranked(final, final_scores(final, teacher.logit_scale), first_argmax(logits[0]), self.templates(task))

    # --- cost --------------------------------------------------------------------------------------
    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """Per sample: every view through the image tower (view 0 the teacher's own forward), the views'
        logits, both caches' read-out at full capacity and the boosting views' affinities (counted on
        the meta device; the selection, means and copies are no counted arithmetic)."""
        classes, dim, views = len(task.classnames), teacher.embed_dim, self.view_count(task)
        top = int(views * self.config.top) if self.boosted_capacity(task) else 0
        key = (id(teacher), tuple(task.classnames), views, top)
        if key not in self._counts:
            def one_step() -> None:
                state = self._empty(classes, dim, "meta")
                logits = 100.0 * (torch.empty(views, dim, device="meta") @ torch.empty(dim, classes, device="meta"))
                hist = Historical(torch.empty(dim, device="meta"), logits[0], logits[0], logits[0, 0])
                self.scores(state, hist, torch.empty(top, dim, device="meta"), {}, task)

            self._counts[key] = views * teacher.image_flops + count_flops(one_step)
        return self._counts[key]


def boostadapter(config: BoostAdapterConfig | None) -> BoostAdapterMethod:
    return BoostAdapterMethod(config=config or BoostAdapterConfig())
