"""Methods that are TPT with one part changed, each as its authors' code has it:
C-TPT (the loss gains a text-dispersion term), R-TPT (per-view entropy as loss, a reliability-weighted
ensemble of all views as prediction), TPS (a shift per class on the prototypes is learned instead of
a prompt). Views, selection, tuning loop and reset are TPT's (tpt.py, prompt.py, episodic.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.methods.configs import CtptConfig, RtptConfig, TpsConfig
from harness.methods.episodic import FINE_GRAINED_FAMILIES, IMAGENET_FAMILY, task_family, view_entropy
from harness.methods.prompt import Loss, ShiftLearner, average_entropy
from harness.methods.tpt import TptMethod
from harness.models.teacher import Teacher
from harness.precision import autocast
from tasks.base import Task
from tasks.templates import OPENAI_IMAGENET, SINGLE, TemplateSet

CTPT_SHIFTED = frozenset({"imagenet-a", "imagenet-v2", "imagenet-r", "imagenet-sketch"})
"""The sets C-TPT's ds script runs (lambda 20, AugMix on); its fg script runs the rest (lambda 50)."""
TPS_TEMPLATE_SETS = {s.name: s for s in (OPENAI_IMAGENET, SINGLE)}
"""`tps.templates` -> its set: the authors average CLIP's 80 ImageNet templates for every data set
(`--with_templates`), or take "a photo of a {}." without it. Not the task's own set (CoOp's single
per-dataset template on the fine-grained sets)."""


def dispersion(text: torch.Tensor) -> torch.Tensor:
    """C-TPT's ATFD: the mean L2 distance of the normalised class embeddings to their centroid (the
    centroid is not renormalised)."""
    return (text - text.mean(0, keepdim=True)).norm(dim=-1).mean()


@dataclass
class CtptMethod(TptMethod):
    name: str = "c-tpt"
    AUGMIX_AUTO = FINE_GRAINED_FAMILIES | CTPT_SHIFTED

    def weight(self, task: Task) -> float:
        if self.config.weight is not None:
            return self.config.weight
        return 20.0 if task_family(task) in CTPT_SHIFTED else 50.0

    def loss(self, task: Task) -> Loss:
        weight = self.weight(task)

        def entropy_minus_dispersion(logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            return average_entropy(logits) - weight * dispersion(text)

        return entropy_minus_dispersion


def mean_view_entropy(logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """R-TPT's loss: the mean of the selected views' own entropies (not the entropy of their mean)."""
    return view_entropy(logits).mean()


def reliability_weights(features: torch.Tensor, neighbours: int, temperature: float,
                        self_mask: str = "diagonal") -> torch.Tensor:
    """softmax over the views of (mean cosine similarity to the view's `neighbours` most similar other
    views) / temperature, in fp32. `diagonal` removes each view's own similarity. `threshold` is the
    authors' rule (get_top_sim): every entry >= 1.0 is masked. In fp32 the self-similarity of a unit
    vector often rounds just below 1.0 (about 39% of views at D = 512), and such a view keeps itself,
    at about 1.0, among its neighbours, which raises its reliability: weights differ by up to 2.4x,
    enough to change predictions when the views split between two classes. Exact duplicates, whose
    similarity rounds to 1.0, drop each other too."""
    sims = features.float() @ features.float().T
    if self_mask == "threshold":
        sims[sims >= 1.0] = float("-inf")
    else:
        sims.fill_diagonal_(float("-inf"))
    k = max(1, min(neighbours, len(features) - 1))
    return (sims.topk(k, dim=-1).values.mean(-1) / temperature).softmax(0)


@dataclass
class RtptMethod(TptMethod):
    name: str = "r-tpt"

    def loss(self, task: Task) -> Loss:
        return mean_view_entropy

    def predict(self, teacher: Teacher, learner: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Every view's logits with the tuned prompt, averaged with the views' reliability weights
        (logits, not probabilities, as the authors average)."""
        cfg = self.config
        weights = reliability_weights(features, cfg.neighbours, cfg.temperature, cfg.self_mask)
        with autocast(teacher.device, teacher.config.precision):
            text = learner()
        logits = teacher.logit_scale * features.float() @ text.float().T
        return weights @ logits


@dataclass
class TpsMethod(TptMethod):
    name: str = "tps"

    def templates(self, task: Task) -> TemplateSet:
        """The prototypes' templates, the same set on every task as the authors' (`tps.templates`): the
        untuned classifier is TPS's start (a zero shift)."""
        return TPS_TEMPLATE_SETS[self.config.templates]

    def make_learner(self, teacher: Teacher, task: Task) -> torch.nn.Module:
        return ShiftLearner(teacher.classifier(task.classnames, self.templates(task)).T)

    def lr(self, task: Task) -> float:
        if self.config.lr is not None:
            return self.config.lr
        return 5e-3 if task_family(task) in IMAGENET_FAMILY else 1e-3

    def prompt_label(self, task: Task) -> tuple[int, str]:
        templates = self.templates(task)
        return len(templates), f"tps-shifted:{templates.name}"


def ctpt(settings: CtptConfig) -> CtptMethod:
    return CtptMethod(settings)


def rtpt(settings: RtptConfig) -> RtptMethod:
    return RtptMethod(settings)


def tps(settings: TpsConfig) -> TpsMethod:
    return TpsMethod(settings)
