"""DPE, dual prototype evolving (Zhang et al., NeurIPS 2024), as zhangce01/DPE-CLIP's main_dpe.py runs it
(code of commit 9b4653c, unchanged since): textual prototypes that evolve as a running average of the
adapted classifiers, visual prototypes that are the means of per-class queues of low-entropy image
features, and per sample zero-initialised residuals on both, learnt by one AdamW step and discarded.

Per sample, in the authors' order, with W_g (D, C) the textual prototypes (W0, the normalised zero-shot
classifier, at the start), s the teacher's logit scale (100 on CLIP checkpoints, their literal 100):
1. W' = normalize_columns(W_g + R_t), R_t = 0 a fresh residual. With V > 1 views (unit features; view 0
   the teacher's centre crop) the int(V * top) lowest-entropy views under W' (a stable sort: ties keep
   view order) give f_x = their mean feature (not renormalised), z = s * (their logits' mean) and H =
   the entropy of their mean probability (TPT's marginal entropy); with one view f_x = the unit
   embedding, z = s f_x.W', H = its entropy (nats). Pseudo-label y = argmax z (ties: the lowest class);
2. the queue of class y takes (f_x, h = H / log2 C): below `capacity` (3) appended, else it replaces the
   queue's highest h only if strictly lower; then a stable sort by h (an equal h ranks after the older);
3. visual prototypes K (D, k): the mean of each non-empty queue, classes ascending; R_v = 0 (D, k);
   K' = normalize_columns(K + R_v); the cache logits alpha * exp(-(beta - beta f_x.K')) @ onehot;
4. loss = entropy(softmax(z + cache logits)) + align * InfoNCE(rows of K', rows of W'[:, classes of K],
   temperature 0.01; no negatives but the other rows, one direction); the gradients of R_t (through z
   and the alignment) and of R_v, and one step of a fresh AdamW (eps 1e-3, weight decay 0.1, betas
   (0.9, 0.999), lr per data set) from zero: R = -lr/(1 - 0.9) * 0.1 g / (sqrt(0.001 g^2) / sqrt(0.001)
   + 1e-3), i.e. -lr g / (|g| + 1e-3), written out as torch's AdamW computes its first step;
5. W* = normalize_columns(W_g + R_t), K* = normalize_columns(K + R_v); the final logits
   s f.W* + alpha exp(-(beta - beta f.K*)) @ onehot with f = view 0 (ImageNet-A with views: the top
   views re-selected under W*, their mean feature and mean logits); prediction = argmax (ties: lowest);
6. if entropy(final) / log2 C < threshold (0.1, strict): n += 1, W_g <- W_g n/(n+1) + W*/(n+1) (no
   renormalisation; W0 counts once, every column moves). The residuals are then dropped.
The confidence is the final logits' softmax maximum; prediction_before view 0's argmax under W0.

State (fp32 unless named): text (D, C) W_g, text_count 0-d int64 n, cache_keys (C, capacity, D) the
queued features, cache_entropy (C, capacity) their h, cache_count (C,) int64; slot j of a class is
filled iff j < its count, slots ascending by h. At ImageNet scale (D=512, C=1000, capacity 3, any
length) 8,212,008 bytes (8.2 MB). The residuals and the views are per-sample scratch, not state.
FLOPs per sample: the V image forwards (the teacher's own and V - 1 views), the views' logits, the
forward and backward of the loss with k = C prototypes (a full cache) and the prediction.

Differences from the authors: fp32 on precomputed embeddings (their CLIP, residuals and Adam moments
are fp16 under autocast; the image features carry no gradient here, theirs accumulate unused ones in
the encoder); the single prompt "a photo of a {}." by default (theirs: their hand templates plus every
CuPL GPT-3 sentence of the class, not available here); TPT's views from the sample's own seed (their
AugMix loader's global RNGs); ties broken by the rules above (their CUDA argsort gives no order).
TTA-VLM's copy (TomSheng21/tta-vlm, online_method/dpe.py) is `protocol = tta-vlm` (learning_configs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods.base import Outcome, final_scores
from harness.methods.episodic import FINE_GRAINED_FAMILIES, IMAGENET_FAMILY, confident_views, task_family
from harness.methods.learning_configs import DPE_VIEWS, DpeConfig
from harness.methods.online import OnlineBase, State, StreamSample, tpt_views
from harness.methods.online_ranking import first_argmax, ranked
from harness.methods.tda import admit
from harness.methods.tip_templates import prompt_choice
from harness.methods.view_feed import ViewSpec
from harness.models.teacher import Teacher
from tasks.base import Task
from tasks.templates import TemplateSet

PARAMS_BY_FAMILY: dict[str, tuple[float, float, float, float]] = {
    "imagenet": (6.0, 5.0, 6e-4, 0.5), "imagenet-a": (6.0, 5.0, 3e-4, 2.5), "imagenet-v2": (3.0, 8.0, 5e-4, 0.5),
    "imagenet-r": (3.0, 8.0, 6e-4, 0.0), "imagenet-sketch": (7.0, 7.45, 6e-4, 0.2),
    "caltech101": (15.0, 5.0, 6e-4, 0.2), "dtd": (6.0, 3.0, 6e-4, 0.2), "eurosat": (3.0, 8.0, 5e-5, 0.2),
    "fgvc-aircraft": (6.0, 2.0, 6e-4, 0.2), "food101": (3.0, 1.0, 2e-4, 0.2), "flowers102": (2.5, 5.0, 1e-4, 0.2),
    "oxford-pets": (4.0, 7.0, 5e-5, 0.2), "stanford-cars": (3.0, 7.0, 1e-4, 1.5), "sun397": (6.0, 3.0, 2e-4, 0.2),
    "ucf101": (9.0, 8.0, 4e-4, 0.2),
}
"""(alpha, beta, lr, align) per task family: zhangce01/DPE-CLIP's configs/*.yaml (the same for RN50 and
ViT-B/16; learning_rate.text = .image everywhere). ImageNet-C and any other task: ImageNet's."""
TTA_VLM_ALIGN = {"sun397": 0.0002}
"""Where TTA-VLM's hard-coded table differs from the authors' configs (its SUN397 align)."""
ADAMW_BETAS = (0.9, 0.999)
ADAMW_EPS = 1e-3
WEIGHT_DECAY = 0.1
"""The AdamW of both residual groups (main_dpe.py: `'eps': 1e-3, 'weight_decay': 1e-1`, default betas)."""
TTA_VLM_ENTROPY_EPS = 1e-5
"""Inside the log of TTA-VLM's queue entropy (its Entropy())."""


@dataclass(frozen=True)
class Params:
    alpha: float
    beta: float
    lr: float
    align: float


@dataclass(frozen=True)
class FirstPass:
    """What a sample brings, read with the unadapted prototypes W' = normalize(W_g)."""

    feature: torch.Tensor
    """(D,) f_x: the queue's entry and the training pass's cache query (a mean of views: norm below 1)."""
    chosen: torch.Tensor
    """(m, D) the views whose mean logits are the clip logits (one view: the embedding itself)."""
    logits: torch.Tensor
    """(C,) their mean logits under W' (the pseudo-label's argmax)."""
    entropy: torch.Tensor
    """0-d, nats: the queue's rank (divided by log2 C)."""


def entropy(rows: torch.Tensor) -> torch.Tensor:
    """The authors' avg_entropy of logit rows (R, C): the entropy (nats) of their mean probability, from
    log-probabilities (one row: its entropy)."""
    logp = rows - rows.logsumexp(-1, keepdim=True)
    mean = (logp.logsumexp(0) - math.log(rows.shape[0])).clamp(min=torch.finfo(rows.dtype).min)
    return -(mean * mean.exp()).sum(-1)


def cache_logits(feature: torch.Tensor, keys: torch.Tensor, onehot: torch.Tensor, alpha: float,
                 beta: float) -> torch.Tensor:
    """(C,) alpha * exp(-(beta - beta f.k)) @ onehot over the k visual prototypes (keys (D, k) unit
    columns, onehot (k, C) their classes): their compute_cache_logits, in 2-D products."""
    affinity = feature[None, :] @ keys
    return alpha * (((-1) * (beta - beta * affinity)).exp() @ onehot)[0]


def info_nce(query: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """info-nce-pytorch's InfoNCE without explicit negatives (k, D) x (k, D): rows normalised, the
    other rows the negatives, cross-entropy of cos / temperature with the diagonal, mean."""
    query, positive = F.normalize(query, dim=-1), F.normalize(positive, dim=-1)
    labels = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(query @ positive.T / temperature, labels)


def adamw_first_step(grad: torch.Tensor, lr: float) -> torch.Tensor:
    """The parameter after one step of a fresh AdamW from zero, as torch's single-tensor AdamW computes
    it (decay of a zero parameter, first moments, bias corrections of step 1): the authors build a new
    optimiser per sample over zero residuals, so every step is this one."""
    beta1, beta2 = ADAMW_BETAS
    param = torch.zeros_like(grad).mul_(1 - lr * WEIGHT_DECAY)
    exp_avg = torch.zeros_like(grad).lerp_(grad, 1 - beta1)
    exp_avg_sq = torch.zeros_like(grad).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step = 1.0
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(ADAMW_EPS)
    return param.addcdiv_(exp_avg, denom, value=-(lr / (1 - beta1**step)))


def one_hot(classes: torch.Tensor, count: int) -> torch.Tensor:
    """(k, count) fp32 rows of the classes (scatter, which the meta device runs; F.one_hot reads values)."""
    return torch.zeros(classes.shape[0], count, device=classes.device).scatter_(1, classes[:, None], 1.0)


@dataclass
class DpeMethod(OnlineBase):
    config: DpeConfig = field(default_factory=DpeConfig)
    name: str = "dpe"
    _counts: dict[tuple, int] = field(default_factory=dict, repr=False)

    # --- what each task gets -------------------------------------------------------------------
    def templates(self, task: Task) -> TemplateSet:
        return prompt_choice(self.config.templates, task)

    def params(self, task: Task) -> Params:
        """(alpha, beta, lr, align): the settings', else the protocol's for the task's family."""
        family = task_family(task)
        alpha, beta, lr, align = PARAMS_BY_FAMILY.get(family, PARAMS_BY_FAMILY["imagenet"])
        if self.config.protocol == "tta-vlm":
            align = TTA_VLM_ALIGN.get(family, align)
        cfg = self.config
        return Params(*(mine if mine is not None else theirs for mine, theirs in
                        ((cfg.alpha, alpha), (cfg.beta, beta), (cfg.lr, lr), (cfg.align, align))))

    def view_count(self, task: Task) -> int:
        """Views per image: the setting's, else 64 on the ImageNet family and 1 elsewhere (authors) or
        64 everywhere (tta-vlm)."""
        if self.config.views is not None:
            return self.config.views
        if self.config.protocol == "tta-vlm" or task_family(task) in IMAGENET_FAMILY:
            return DPE_VIEWS
        return 1

    def uses_augmix(self, task: Task) -> bool:
        choice = self.config.augmix or ("on" if self.config.protocol == "authors" else "auto")
        return choice == "on" or (choice == "auto" and task_family(task) in FINE_GRAINED_FAMILIES)

    def reselects(self, task: Task) -> bool:
        """Whether the prediction re-selects the top views under W* (the authors' ImageNet-A branch)."""
        return task_family(task) == "imagenet-a" and self.view_count(task) > 1

    def view_spec(self, teacher: Teacher, task: Task) -> ViewSpec | None:
        """TPT's views of every image, or None where DPE takes one view (the teacher's embedding)."""
        return tpt_views(teacher, self.view_count(task), self.uses_augmix(task), self.config.min_scale)

    # --- state ---------------------------------------------------------------------------------
    def _empty(self, text: torch.Tensor) -> State:
        dim, classes = text.shape
        cap, device = self.config.capacity, text.device
        return {
            "text": text.float().clone(),
            "text_count": torch.zeros((), dtype=torch.int64, device=device),
            "cache_keys": torch.zeros(classes, cap, dim, device=device),
            "cache_entropy": torch.zeros(classes, cap, device=device),
            "cache_count": torch.zeros(classes, dtype=torch.int64, device=device),
        }

    def begin(self, teacher: Teacher, task: Task, length: int) -> State:
        """W_g = the zero-shot classifier, n = 0, every queue empty (the authors' start of a data set)."""
        return self._empty(self.text(teacher, task))

    @staticmethod
    def prototypes(state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """(D, k) the mean of each non-empty queue (sum of feature / count, as theirs) and (k,) their
        classes, ascending."""
        count = state["cache_count"]
        classes = (count > 0).nonzero()[:, 0]
        n = count[classes]
        filled = torch.arange(state["cache_keys"].shape[1], device=n.device)[None, :] < n[:, None]
        keys = (state["cache_keys"][classes] / n[:, None, None].float() * filled[..., None]).sum(1)
        return keys.T, classes

    # --- the arithmetic (pure tensor functions: the meta device counts their FLOPs) ----------------
    def first_pass(self, views: torch.Tensor, text: torch.Tensor, scale: float) -> FirstPass:
        """Step 1 with R_t = 0: the sample's feature, its views, mean logits and entropy under W'."""
        logits = scale * (views @ F.normalize(text, dim=0))
        if views.shape[0] == 1:
            chosen = torch.zeros(1, dtype=torch.int64, device=views.device)
        else:
            chosen = confident_views(logits, self.config.top)
        rows = logits[chosen]
        mean = rows.mean(0)
        if self.config.protocol == "tta-vlm":
            probs = mean.softmax(-1)
            spread = -(probs * (probs + TTA_VLM_ENTROPY_EPS).log()).sum()
        else:
            spread = entropy(rows)
        return FirstPass(views[chosen].mean(0), views[chosen], mean, spread)

    def residuals(self, text: torch.Tensor, keys: torch.Tensor, classes: torch.Tensor, read: FirstPass,
                  scale: float, p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 4: (R_t, R_v) after one fresh AdamW step from zero on the entropy plus the alignment."""
        with torch.enable_grad():  # the engine may step under no_grad
            r_t = torch.zeros_like(text, requires_grad=True)
            r_v = torch.zeros_like(keys, requires_grad=True)
            w = F.normalize(text + r_t, dim=0)
            k = F.normalize(keys + r_v, dim=0)
            into_clip = w if self.config.protocol == "authors" else w.detach()  # TTA-VLM: z under no_grad
            z = scale * (read.chosen @ into_clip).mean(0)
            final = z + cache_logits(read.feature, k, one_hot(classes, text.shape[1]), p.alpha, p.beta)
            loss = entropy(final[None]) + p.align * info_nce(k.T, w[:, classes].T, self.config.temperature)
            g_t, g_v = torch.autograd.grad(loss, (r_t, r_v), allow_unused=True)
        g_t = torch.zeros_like(text) if g_t is None else g_t
        g_v = torch.zeros_like(keys) if g_v is None else g_v
        return adamw_first_step(g_t, p.lr), adamw_first_step(g_v, p.lr)

    def predict(self, views: torch.Tensor, read: FirstPass, text: torch.Tensor, keys: torch.Tensor,
                classes: torch.Tensor, scale: float, p: Params, reselect: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 5: the final logits (C,) with the adapted prototypes, and W*."""
        w = F.normalize(text, dim=0)
        k = F.normalize(keys, dim=0)
        if reselect:
            logits = scale * (views @ w)
            top = confident_views(logits, self.config.top)
            z = logits[top].mean(0)
            f = views[top].mean(0) if self.config.protocol == "authors" else read.feature
        else:
            f = views[0]
            z = scale * (f[None, :] @ w)[0]
        return z + cache_logits(f, k, one_hot(classes, text.shape[1]), p.alpha, p.beta), w

    # --- one sample --------------------------------------------------------------------------------
    def features(self, task: Task, sample: StreamSample) -> torch.Tensor:
        """(views, D) unit features, view 0 first: the engine's views, or the embedding alone."""
        views = self.view_count(task)
        if views == 1:
            return self.unit(sample)[None]
        if sample.views is None or sample.views.ndim != 2 or sample.views.shape[0] != views:
            got = "none" if sample.views is None else f"shape {tuple(sample.views.shape)}"
            raise HarnessError(f"dpe needs {views} views of each {task.name} image (its view_spec), got {got}")
        return sample.views.float()

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Queue, residual step, prediction, textual evolution (the authors' order)."""
        views = self.features(task, sample)
        p, scale = self.params(task), teacher.logit_scale
        with torch.autocast(views.device.type, enabled=False):  # fp32 even inside a caller's autocast
            text = state["text"]
            classes_total = text.shape[1]
            read = self.first_pass(views, text, scale)
            label = first_argmax(read.logits)
            admit(state, "cache", label, read.entropy / math.log2(classes_total), {"keys": read.feature},
                  self.config.capacity)
            keys, classes = self.prototypes(state)
            r_t, r_v = self.residuals(text, keys, classes, read, scale, p)
            final, adapted = self.predict(views, read, text + r_t, keys + r_v, classes, scale, p,
                                          self.reselects(task))
            if float(entropy(final[None])) / math.log2(classes_total) < self.config.threshold:
                n = int(state["text_count"]) + 1
                state["text_count"] = torch.tensor(n, dtype=torch.int64, device=text.device)
                state["text"] = text * (n / (n + 1)) + adapted * (1 / (n + 1))
            before = first_argmax((views[0][None, :] @ self.text(teacher, task))[0])
        return ranked(final, final_scores(final, teacher.logit_scale), before, self.templates(task))

    # --- cost --------------------------------------------------------------------------------------
    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """Per sample: every view through the image tower (view 0 the teacher's own forward), the views'
        logits, the loss's forward and backward and the prediction with a full cache (k = C prototypes),
        counted on the meta device (the queue update and the evolution are copies and element-wise
        arithmetic, which the counter does not count; prediction_before is bookkeeping, not counted)."""
        classes, dim, views = len(task.classnames), teacher.embed_dim, self.view_count(task)
        key = (id(teacher), tuple(task.classnames), task_family(task), length)
        if key not in self._counts:
            def one_step() -> None:
                text = torch.empty(dim, classes, device="meta")
                keys, vs = torch.empty(dim, classes, device="meta"), torch.empty(views, dim, device="meta")
                every, p = torch.arange(classes, device="meta"), self.params(task)
                read = self.first_pass(vs, text, 100.0)
                r_t, r_v = self.residuals(text, keys, every, read, 100.0, p)
                self.predict(vs, read, text + r_t, keys + r_v, every, 100.0, p, self.reselects(task))

            self._counts[key] = views * teacher.image_flops + count_flops(one_step)
        return self._counts[key]

    def state_bytes(self, dim: int, classes: int, length: int) -> int:
        """W_g, n, and every queue full: fp32 features and entropies, int64 counts."""
        cap = self.config.capacity
        return dim * classes * 4 + 8 + classes * cap * (dim + 1) * 4 + classes * 8


def dpe(config: DpeConfig | None) -> DpeMethod:
    return DpeMethod(config=config or DpeConfig())
