"""Prompt templates as named data. A row records the name of the set its classifier was built from,
so a reader can tell which prompts produced a number. open_clip ships the 80 OpenAI ImageNet
templates as callables; calling each with "{}" turns it into a format string that can be pickled,
hashed and recorded. They are read from open_clip's metadata file, without importing open_clip."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.openclip_meta import zero_shot_metadata


@dataclass(frozen=True)
class TemplateSet:
    """Format strings with one `{}` for the class name, under a stable name."""

    name: str
    templates: tuple[str, ...]

    def __post_init__(self) -> None:
        bad = [t for t in self.templates if t.count("{}") != 1]
        if not self.templates or bad:
            raise HarnessError(f"template set {self.name}: every template needs exactly one '{{}}' (bad: {bad[:3]})")

    def __iter__(self) -> Iterator[str]:
        return iter(self.templates)

    def __len__(self) -> int:
        return len(self.templates)


SINGLE_TEMPLATE = "a photo of a {}."
SINGLE = TemplateSet("single", (SINGLE_TEMPLATE,))
"""TPT's CLIP row: one template for every dataset (the `zeroshot` method)."""

OPENAI_IMAGENET = TemplateSet("openai-imagenet-80", tuple(t("{}") for t in zero_shot_metadata().OPENAI_IMAGENET_TEMPLATES))
"""CLIP's 80 ImageNet templates (open_clip's copy): the ensemble of the ImageNet tasks."""


def from_clip_benchmark(name: str, lines: list[str]) -> TemplateSet:
    """CLIP_benchmark writes its templates with a `{c}` placeholder, one per line."""
    return TemplateSet(name, tuple(line.strip().replace("{c}", "{}") for line in lines if line.strip()))
