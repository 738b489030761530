"""TPT (Shu et al., NeurIPS 2022): tune a 4-token text context on one test image so that the
prediction over its most confident augmented views has low entropy, classify the original view with
the tuned prompt, then restore the context (a fresh optimiser comes with every sample). Both
encoders stay frozen. C-TPT, R-TPT and TPS (tpt_variants.py) change its loss, its prediction or
what it learns, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.flops import count_flops
from harness.methods.base import Outcome, SampleInput
from harness.methods.chunks import Chunks
from harness.methods.configs import TptConfig
from harness.methods.episodic import ViewMethod, tuned_outcome
from harness.methods.prompt import Loss, PromptLearner, counted, fit, tpt_loss, tune
from harness.models.teacher import Teacher
from harness.precision import autocast
from tasks.base import Task


@dataclass
class TptMethod(ViewMethod):
    name: str = "tpt"
    _learners: dict[tuple, torch.nn.Module] = field(default_factory=dict, repr=False)
    _text_chunks: Chunks | None = field(default=None, repr=False)

    @property
    def text_chunks(self) -> Chunks:
        """The worker's class chunk for the text tower, shared by every task's learner: a chunk halved
        on one task's out-of-memory would run out of memory on the next task too."""
        if self._text_chunks is None:
            self._text_chunks = Chunks(self.config.text_chunk)
        return self._text_chunks

    def learner(self, teacher: Teacher, task: Task) -> torch.nn.Module:
        """One per (task classes) and worker; reset to its initial state before every sample."""
        key = (id(teacher), task.classnames)
        if key not in self._learners:
            self._learners[key] = self.make_learner(teacher, task).to(teacher.device)
        return self._learners[key]

    def make_learner(self, teacher: Teacher, task: Task) -> torch.nn.Module:
        return PromptLearner(teacher, task.classnames, self.config.ctx_init, self.text_chunks)

    def lr(self, task: Task) -> float:
        return self.config.lr

    def steps(self, task: Task) -> int:
        """Optimiser steps per sample on `task` (a method whose authors differ per family overrides this)."""
        return self.config.steps

    def cost_key(self, task: Task) -> tuple:
        return (*super().cost_key(task), self.steps(task))

    def loss(self, task: Task) -> Loss:
        return tpt_loss

    def prompt_label(self, task: Task) -> tuple[int, str]:
        """(templates, name) of what the tuning started from, for the rows."""
        return 1, f"{self.name}-context:{self.config.ctx_init}"

    def adapt_flops(self, teacher: Teacher, task: Task) -> int:
        """Each step's text forward and backward over all classes, and the prediction after tuning; not
        the recomputation of checkpointed class chunks (`counted`)."""
        learner = self.learner(teacher, task)
        features = F.normalize(torch.ones(self.config.views, teacher.embed_dim, device=teacher.device), dim=-1)
        with counted(learner):
            step = count_flops(lambda: self._tune(learner, features, teacher, task, steps=1))
            final = count_flops(lambda: self.predict(teacher, learner, features))  # with grad on: the counter needs it
        learner.reset()
        return self.steps(task) * step + final

    def _tune(self, learner: torch.nn.Module, features: torch.Tensor, teacher: Teacher, task: Task,
              steps: int) -> tuple[list[float], torch.Tensor]:
        cfg = self.config
        return tune(learner, features, teacher, steps, self.lr(task), cfg.weight_decay, cfg.top, self.loss(task))

    def predict(self, teacher: Teacher, learner: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Class scores after tuning: the original view against the tuned class embeddings."""
        with autocast(teacher.device, teacher.config.precision):
            text = learner()
        return teacher.logit_scale * features[0].float() @ text.float().T

    def adapt(self, teacher: Teacher, task: Task, features: torch.Tensor, sample: SampleInput) -> Outcome:
        """View 0 is the teacher's own preprocessing (TPT's resize + centre crop)."""
        learner = self.learner(teacher, task)
        learner.reset()
        losses, _ = self._tune(learner, features, teacher, task, self.steps(task))
        return self.conclude(teacher, task, learner, features, losses)

    def conclude(self, teacher: Teacher, task: Task, learner: torch.nn.Module, features: torch.Tensor,
                 losses: list[float]) -> Outcome:
        """Predict with the tuned learner, then reset it: nothing of this sample stays behind."""
        with torch.no_grad():
            logits = fit(learner, lambda: self.predict(teacher, learner, features))
        learner.reset()
        n_templates, label = self.prompt_label(task)
        return tuned_outcome(self.name, logits, losses, teacher.logit_scale, n_templates=n_templates, template_set=label)


def tpt(settings: TptConfig) -> TptMethod:
    return TptMethod(settings)

