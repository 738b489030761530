"""RLCF (Zhao et al., ICLR 2024), the prompt variant: TPT's prompt and confident views, tuned by
REINFORCE towards the classes a reward CLIP scores high. For each confident view, its top-k classes
under the current prompt are "sampled"; each gets the reward max(0, w cos(reward image, reward text))
less the mean over the view's k classes; the loss is the mean of reward x cross-entropy. The authors
take 3 steps on the ImageNet family and 5 on the fine-grained sets (their two scripts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.models.teacher_config import TeacherConfig
from harness.methods.base import Outcome, SampleInput
from harness.methods.configs import RlcfConfig
from harness.methods.episodic import FINE_GRAINED_FAMILIES, normalisation, prompt_templates, task_family
from harness.methods.prompt import Loss, tune
from harness.methods.tpt import TptMethod
from harness.models.sources import resolve_source
from harness.models.teacher import Teacher, load_teacher, meta_teacher
from tasks.base import Task

STEPS = 3
"""scripts/rlcf-prompt.sh (the ImageNet family), and every task neither script names."""
FINE_GRAINED_STEPS = 5
"""scripts/rlcf-prompt-fine.sh (`tta_steps=5`)."""


def reinforce_loss(reward_image: torch.Tensor, reward_text: torch.Tensor, k: int, weight: float) -> Loss:
    """The loss of one sample's tuning: `reward_image` (S, D) the reward model's normalised embeddings
    of the S confident views, `reward_text` (D, C) its normalised class embeddings."""
    scores = (weight * reward_image @ reward_text).clamp(min=0)  # CLIPScore of every (view, class)

    def loss(logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        sampled = logits.detach().topk(k, dim=-1).indices  # (S, k): the policy's current top-k
        reward = scores.gather(1, sampled)
        advantage = reward - reward.mean(dim=1, keepdim=True)  # baseline: the view's own mean
        log_probs = logits.log_softmax(-1).gather(1, sampled)
        return -(advantage * log_probs).mean()

    return loss


@dataclass
class RlcfMethod(TptMethod):
    name: str = "rlcf"
    _reward: dict[str, Teacher] = field(default_factory=dict, repr=False)
    """The reward CLIP by device type: the run's device, and the meta device FLOPs are counted on."""

    def steps(self, task: Task) -> int:
        if self.config.steps is not None:
            return self.config.steps
        return FINE_GRAINED_STEPS if task_family(task) in FINE_GRAINED_FAMILIES else STEPS

    def reward_teacher(self, teacher: Teacher) -> Teacher:
        """The reward CLIP, loaded once per worker on the teacher's device (`teacher`: the run's own)."""
        cfg = self.config
        if cfg.reward_model == "teacher":
            return teacher
        kind = teacher.device.type
        if kind not in self._reward:
            reward = TeacherConfig(cfg.reward_model, cfg.reward_pretrained, precision=teacher.config.precision,
                                   weights_sha256=cfg.reward_weights_sha256)
            self._reward[kind] = meta_teacher(reward, resolve_source(reward.model, reward.pretrained)) \
                if kind == "meta" else load_teacher(reward, teacher.device)
        return self._reward[kind]

    def reward_views(self, teacher: Teacher, reward: Teacher, pixels: torch.Tensor) -> torch.Tensor:
        """The reward model's normalised embeddings of views made for the policy: back to pixel values,
        resized to its input side (bicubic, `align_corners=True` as the authors resize) and normalised
        its way, if it differs. A 224 px teacher and the authors' 224 px ViT-L/14 need no resize."""
        if reward is not teacher:
            mean, std = (torch.tensor(v, device=pixels.device).view(1, 3, 1, 1) for v in normalisation(teacher.preprocess))
            r_mean, r_std = (torch.tensor(v, device=pixels.device).view(1, 3, 1, 1) for v in normalisation(reward.preprocess))
            pixels = pixels * std + mean
            if reward.input_size != pixels.shape[-1]:
                pixels = F.interpolate(pixels, size=reward.input_size, mode="bicubic", align_corners=True)
            pixels = (pixels - r_mean) / r_std
        return F.normalize(reward.encode_images(pixels), dim=-1)

    def adapt_views(self, teacher: Teacher, task: Task, sample: SampleInput, views: torch.Tensor) -> Outcome:
        """The confident views are chosen once, from the tuning's first forward with the initial prompt,
        as TPT's; the reward model sees only them."""
        cfg = self.config
        features = F.normalize(torch.cat([sample.teacher_embedding[None], self.encode(teacher, views)]), dim=-1)
        learner = self.learner(teacher, task)
        learner.reset()
        pixels = torch.cat([teacher.preprocess(sample.image)[None], views]).to(teacher.device)
        reward = self.reward_teacher(teacher)
        reward_text = reward.classifier(task.classnames, prompt_templates(cfg.ctx_init))

        def loss_for(selected: torch.Tensor) -> Loss:  # the reward model sees only the confident views
            return reinforce_loss(self.reward_views(teacher, reward, pixels[selected]), reward_text,
                                  min(cfg.sample_k, len(task.classnames)), cfg.reward_weight)

        losses, _ = tune(learner, features, teacher, self.steps(task), cfg.lr, cfg.weight_decay, cfg.top,
                         loss_for=loss_for)
        return self.conclude(teacher, task, learner, features, losses)

    def adapt_flops(self, teacher: Teacher, task: Task) -> int:
        """TPT's (each step's text forward and backward, the prediction) and the reward model's forward
        of the confident views (text embeddings are built once per task)."""
        reward = self.reward_teacher(teacher)
        kept = max(1, int(self.config.views * self.config.top))
        return super().adapt_flops(teacher, task) + kept * reward.image_flops


def rlcf(settings: RlcfConfig) -> RlcfMethod:
    return RlcfMethod(settings)
