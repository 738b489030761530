"""The attack stage: PGD against the frozen teacher's zero-shot classifier (harness.attack_config
says what and why). One image at a time, its random start drawn from the sample's own seed on a CPU
generator, so an attacked image depends only on the image, the teacher and the seed: not on the
shard, the worker count or the device's random state. The attacked image is never written to disk."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from harness.attack_config import AttackConfig
from harness.models.teacher import Teacher, split_preprocess
from harness.precision import autocast


def _logits(teacher: Teacher, normalise, pixels: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    with autocast(teacher.device, teacher.config.precision):
        features = teacher.model.encode_image(normalise(pixels), normalize=False)
    return teacher.logit_scale * F.normalize(features.float(), dim=-1) @ classifier


def attack_image(teacher: Teacher, classifier: torch.Tensor, image: Image.Image, seed: int, config: AttackConfig,
                 label: int | None = None) -> Image.Image:
    """The attacked image: the teacher's resized and cropped input, perturbed within `config.eps` (L-inf)
    to raise the cross-entropy of the zero-shot logits (`classifier`, D x C) for the target class (the
    teacher's prediction on the clean crop, or `label`), as an 8-bit RGB image."""
    pil_steps, normalise = split_preprocess(teacher.preprocess)
    clean = TF.to_tensor(pil_steps(image.convert("RGB")))[None].to(teacher.device)
    if config.target == "label" and label is not None and label >= 0:
        target = torch.tensor([label], device=teacher.device)
    else:
        with torch.no_grad():
            target = _logits(teacher, normalise, clean, classifier).argmax(-1)
    generator = torch.Generator().manual_seed(seed)
    start = (torch.rand(clean.shape, generator=generator, dtype=torch.float32) * 2 - 1) * config.eps
    adversarial = (clean + start.to(clean.device)).clamp(0, 1)
    for _ in range(config.steps):
        adversarial.requires_grad_(True)
        loss = F.cross_entropy(_logits(teacher, normalise, adversarial, classifier), target)
        (grad,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            moved = adversarial + config.step_size * grad.sign()
            adversarial = (clean + (moved - clean).clamp(-config.eps, config.eps)).clamp(0, 1)
    return TF.to_pil_image(adversarial[0].detach().cpu())
