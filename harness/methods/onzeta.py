"""OnZeta, online zero-shot transfer (Qian & Hu, ECCV 2024), as idstcv/OnZeta's main_online.py runs it
(its only code file, commit befef06), on one embedding per image (TTA-VLM's protocol).

Per sample t = 1, 2, ... of a stream of n (the `length` given to begin; the authors' and TTA-VLM's n is
the data set's size, which the schedule of the mixing weight needs in advance), with x the unit
embedding, T the (D, C) text proxies, and the state w (the vision proxies, T at the start) and rho (the
dual variable, 0 at the start) as they stand after sample t - 1:
1. step sizes lr = cw / sqrt(t), rlr = cr / sqrt(t); mixing weight beta_t = beta * sqrt(t / n);
2. online label q = softmax(x.T / tau_t + rho): the authors' softmax(x.T / tau_t) * exp(rho), renormalised,
   in a form that neither underflows nor overflows (equal up to float rounding);
3. rho <- max(0, rho - rlr (q - alpha / C)) (the new rho is not used for this sample);
4. p_V = softmax(x.w / tau_i) with the old proxies; the output is beta_t p_V + (1 - beta_t) q;
5. w <- w - (lr / tau_i) x (p_V - q)^T, then each class's proxy renormalised to unit length.
The prediction is the output's argmax (ties: the lowest class, as ImageNet's two duplicated class
names, whose proxies stay equal forever); the confidence is the output's top probability (it sums to
1); `prediction_before` is the argmax of x.T. The authors also score q alone ("OnLab"); not reported.

State: proxies (C, D), w transposed (one row per class, as the products read them), rho (C,), fp32;
seen and length, 0-d int64; the same bits on any number of CPU threads (rowwise). At ImageNet
scale (D=512, C=1000) 2,052,016 bytes (2.1 MB) whatever the stream's length; the text proxies are the
teacher's cached classifier, not state.

Differences from the authors, all settings: the single prompt "a photo of a {}." by default
(`templates = clip-imagenet-7` for their 7 ImageNet templates); unset alpha and beta are theirs (1, 0.8)
or, with `per_dataset = tta-vlm`, TTA-VLM's (beta 0.4 off the ImageNet family, alpha 0 on Caltech101);
fp32 throughout (their features fp16, then fp32; TTA-VLM's matrix products fp16 under autocast); one
stream of the harness's seeded order (the authors average 5 unseeded random orders)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.methods.base import Outcome
from harness.methods.episodic import IMAGENET_FAMILY, task_family
from harness.methods.online import OnlineBase, State, StreamSample
from harness.methods.online_configs import OnzetaConfig
from harness.methods.online_ranking import FlopCache, first_argmax, not_logits, ranked
from harness.methods.row_products import rowwise
from harness.methods.tip_templates import prompt_choice
from harness.models.teacher import Teacher
from tasks.base import Task
from tasks.templates import TemplateSet

AUTHORS_ALPHA = 1.0
"""`--alpha 1` (main_online.py)."""
AUTHORS_BETA = 0.8
"""`--beta 0.8` (main_online.py)."""


@dataclass(frozen=True)
class Schedule:
    """The numbers of one sample's update, fixed before it is seen."""

    t: int
    """The sample's place, 1 first."""
    n: int
    """The stream's length."""
    alpha: float
    beta: float

    def steps(self, cw: float, cr: float) -> tuple[float, float, float]:
        """(lr, rlr, beta_t) as the authors compute them in Python floats."""
        return cw / math.sqrt(self.t), cr / math.sqrt(self.t), self.beta * math.sqrt(self.t / self.n)


Tensors4 = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def onzeta_update(x: torch.Tensor, text: torch.Tensor, proxies: torch.Tensor, rho: torch.Tensor,
                  when: Schedule, config: OnzetaConfig) -> Tensors4:
    """One sample: (output probabilities (C,), zero-shot cosines x.T (C,), new proxies, new rho), with
    the text proxies and the vision proxies as rows (C, D). Pure, so that it runs on the meta device
    to be counted; every product is one the counter counts, and gives the same bits on any number of
    CPU threads (rowwise; the outer product has no sums)."""
    lr, rlr, beta_t = when.steps(config.cw, config.cr)
    classes = text.shape[0]
    cosines = rowwise(text, x)
    q = (cosines / config.tau_t + rho).softmax(-1)
    new_rho = (rho - rlr * (q - when.alpha / classes)).clamp_min(0)
    p_v = (rowwise(proxies, x) / config.tau_i).softmax(-1)
    output = beta_t * p_v + (1 - beta_t) * q
    grad = (p_v - q)[:, None] @ x[None, :]  # the authors' torch.outer (transposed), as a product the counter sees
    new_proxies = F.normalize(proxies - (lr / config.tau_i) * grad, dim=1)
    return output, cosines, new_proxies, new_rho


@dataclass
class OnzetaMethod(OnlineBase):
    config: OnzetaConfig = field(default_factory=OnzetaConfig)
    name: str = "onzeta"
    _flops: FlopCache = field(default_factory=FlopCache, repr=False)

    def templates(self, task: Task) -> TemplateSet:
        return prompt_choice(self.config.templates, task)

    def hyperparameters(self, task: Task) -> tuple[float, float]:
        """(alpha, beta): the settings', else the authors' (every set) or TTA-VLM's per-set rule."""
        alpha, beta = AUTHORS_ALPHA, AUTHORS_BETA
        if self.config.per_dataset == "tta-vlm":
            family = task_family(task)
            alpha = 0.0 if family == "caltech101" else AUTHORS_ALPHA
            beta = AUTHORS_BETA if family in IMAGENET_FAMILY else 0.4
        cfg = self.config
        return (alpha if cfg.alpha is None else cfg.alpha, beta if cfg.beta is None else cfg.beta)

    def begin(self, teacher: Teacher, task: Task, length: int) -> State:
        """Proxies = the text proxies, rho = 0 (the authors' start of every stream)."""
        if length < 1:
            raise HarnessError(f"onzeta needs the stream's length (its mixing weight's schedule), not {length}")
        text = self.text(teacher, task)
        return {
            "proxies": text.t().contiguous(),
            "rho": torch.zeros(text.shape[1], device=teacher.device),
            "seen": torch.zeros((), dtype=torch.int64, device=teacher.device),
            "length": torch.tensor(length, dtype=torch.int64, device=teacher.device),
        }

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Predict from the state after the previous sample, then update it (the authors' order)."""
        t, n = int(state["seen"]) + 1, int(state["length"])
        if t > n:
            raise HarnessError(f"onzeta's stream was begun for {n} samples; sample {t} is past its end")
        alpha, beta = self.hyperparameters(task)
        with torch.no_grad():
            text = self.text(teacher, task).t().contiguous()
            output, cosines, proxies, rho = onzeta_update(self.unit(sample), text, state["proxies"], state["rho"],
                                                          Schedule(t, n, alpha, beta), self.config)
        state["proxies"], state["rho"] = proxies, rho
        state["seen"] = torch.tensor(t, dtype=torch.int64, device=state["seen"].device)
        return ranked(output, not_logits(float(output.max())), first_argmax(cosines), self.templates(task))

    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """The image forward and one update (the same at every sample), counted on the meta device."""
        classes, dim = len(task.classnames), teacher.embed_dim

        def one_step() -> None:
            meta = torch.empty(classes, dim, device="meta")
            onzeta_update(torch.empty(dim, device="meta"), meta, meta.clone(), torch.empty(classes, device="meta"),
                          Schedule(1, max(length, 1), *self.hyperparameters(task)), self.config)

        return self._flops.get(teacher, task, length, one_step)

    def state_bytes(self, dim: int, classes: int, length: int) -> int:
        """fp32 proxies and rho, two int64 counters: the same for any length."""
        return 4 * dim * classes + 4 * classes + 2 * 8


def onzeta(config: OnzetaConfig | None) -> OnzetaMethod:
    return OnzetaMethod(config=config or OnzetaConfig())
