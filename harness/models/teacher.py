"""The frozen CLIP teacher: open_clip loading from any source, batched image embeddings and the
zero-shot text classifier, cached per (class names, templates) so it is built once per task."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
from torchvision import transforms

from harness.models.teacher_config import TeacherConfig
from harness.errors import HarnessError
from harness.flops import count_flops
from harness.precision import autocast
from harness.models.sources import ModelSource, resolve_source, weights_sha256

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)  # registers `apm-tiny` and `apm-mini` beside open_clip's own configs

@dataclass
class Teacher:
    model: torch.nn.Module
    preprocess: Callable
    """The model's own eval transform (resize, centre crop, its normalisation)."""
    tokenizer: Callable
    device: torch.device
    config: TeacherConfig
    source: ModelSource
    embed_dim: int
    logit_scale: float
    """CLIP's learned temperature, read once (a model on the meta device has no value: callers give one)."""
    _classifiers: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)
    _image_flops: int | None = field(default=None, repr=False)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised image embeddings (B, D) in fp32: the APM target."""
        if self.device.type == "cuda" and pixels.device.type == "cpu":
            # page-locked host memory lets the copy overlap; pixels pinned on a data thread are taken as
            # they are (pin_memory returns a pinned tensor itself), and pixels on the GPU cannot be pinned
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        else:
            pixels = pixels.to(self.device)
        with autocast(self.device, self.config.precision):
            out = self.model.encode_image(pixels, normalize=False)
        return out.float()

    @torch.no_grad()
    def classifier(self, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(D, C): per class, the normalised mean of its normalised prompt embeddings."""
        key = (tuple(classnames), tuple(templates))
        if key not in self._classifiers:
            with autocast(self.device, self.config.precision):
                weights = open_clip.build_zero_shot_classifier(
                    self.model, self.tokenizer, list(classnames), list(templates), device=self.device
                )
            self._classifiers[key] = weights.float()
        return self._classifiers[key]

    def export_classifiers(self) -> dict[tuple, torch.Tensor]:
        """Every classifier built so far, on the CPU, to hand to other workers via the object store."""
        return {key: weights.cpu() for key, weights in self._classifiers.items()}

    def adopt_classifiers(self, classifiers: dict[tuple, torch.Tensor]) -> None:
        """Use classifiers another worker built with the same teacher instead of encoding the prompts again."""
        for key, weights in classifiers.items():
            self._classifiers.setdefault(key, weights.to(self.device))

    @property
    def input_size(self) -> int:
        """The side of the square the image tower takes (its preprocessing's centre crop, or for a
        model that squashes instead of cropping, as open_clip's SigLIP configs do, its resize)."""
        side = getattr(self.model.visual, "image_size", None)
        if side is not None:
            return int(side[0] if isinstance(side, (tuple, list)) else side)
        for t in getattr(self.preprocess, "transforms", []):
            if type(t).__name__ in ("CenterCrop", "Resize") and isinstance(t.size, (int, tuple, list)):
                return int(t.size[0] if isinstance(t.size, (tuple, list)) else t.size)
        raise HarnessError(f"cannot tell the input size of {self.config.model}'s preprocessing")

    @property
    def image_flops(self) -> int:
        """FLOPs of one image forward, counted once."""
        if self._image_flops is None:
            side = self.input_size
            zeros = torch.zeros(1, 3, side, side)
            self._image_flops = count_flops(lambda: self.encode_images(zeros))
        return self._image_flops



def split_preprocess(preprocess: Callable) -> tuple[Callable, Callable]:
    """A model's eval transform split at ToTensor: its PIL steps (resize, crop, RGB) and its Normalize,
    so pixels can be changed in [0, 1] (an attack, a teacher's training batches) and normalised after."""
    steps = list(getattr(preprocess, "transforms", ()))
    cut = next((i for i, t in enumerate(steps) if isinstance(t, transforms.ToTensor)), None)  # open_clip's MaybeToTensor too
    if cut is None or type(steps[-1]).__name__ != "Normalize":
        raise HarnessError("the teacher's preprocessing must be PIL steps, ToTensor, ..., Normalize")
    return transforms.Compose(steps[:cut]), steps[-1]


def _refused(config: TeacherConfig, exc: pickle.UnpicklingError) -> str:
    """torch's weights_only refusal is a page of advice ending in `add_safe_globals`, which would run
    the file's code: one line instead, naming the weights and what they hold."""
    name = f"--model {config.model} --pretrained {config.pretrained}"
    text = str(exc)
    if "Weights only load failed" not in text:  # not a refusal: a damaged file
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        return f"cannot load teacher {name}: its weights are not a readable checkpoint ({first})"
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]{1,200})", text)
    what = f" (it holds {found[1]})" if found else f" (torch: {detail[1].strip()})" if detail else ""
    return (f"cannot load teacher {name}: its weights were refused because they are not plain tensors{what}; "
            "they load only with torch.load(weights_only=False), which runs code from the file: use a "
            "safetensors copy, or tensors saved with torch.save(model.state_dict())")


def load_teacher(config: TeacherConfig, device: str | torch.device = "cpu") -> Teacher:
    device = torch.device(device)
    source = resolve_source(config.model, config.pretrained)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)  # `none` means the same random teacher everywhere
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                source.model_name, pretrained=source.pretrained, device=device, weights_only=True
            )
        except pickle.UnpicklingError as exc:
            raise HarnessError(_refused(config, exc)) from None
        except EOFError:
            raise HarnessError(f"cannot load teacher --model {config.model} --pretrained {config.pretrained}: "
                               "its weights file ends too soon (empty, or cut short)") from None
        except (RuntimeError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HarnessError(
                f"cannot load teacher --model {config.model} --pretrained {config.pretrained}: {first}"
            ) from exc
    if config.weights_sha256 is not None and weights_sha256(source) != config.weights_sha256:
        raise HarnessError(
            f"the weights of --pretrained {config.pretrained} here ({source.path or source.model_name}) are not the "
            f"ones this run started with (sha256 {config.weights_sha256[:12]}...); every node must hold the same weights"
        )
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(source.model_name)
    with torch.no_grad():
        embed_dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    return Teacher(model, preprocess, tokenizer, device, config, source, embed_dim, float(model.logit_scale.exp()))



def meta_teacher(config: TeacherConfig, source: ModelSource | None = None) -> Teacher:
    """The architecture of `config.model` on torch's meta device: no weights, no memory, every shape.
    What `apm-bench plan` and the workers count FLOPs on. `source`: a loaded teacher's, whose own
    architecture is built then (a local or hub model's config; its weights are not read)."""
    name = source.model_name if source is not None else config.model
    model, _, preprocess = open_clip.create_model_and_transforms(name, device="meta", load_weights=False)
    model.eval().requires_grad_(False)  # frozen, as a loaded teacher: no weight gradients to count
    tokenizer = open_clip.get_tokenizer(name)
    device = torch.device("meta")
    embed_dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    return Teacher(model, preprocess, tokenizer, device, config, source or resolve_source(config.model, "none"),
                   embed_dim, logit_scale=100.0)  # FLOPs only
