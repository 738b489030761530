"""Prompt templates as named data. open_clip ships the 80 OpenAI ImageNet templates as callables;
calling each with "{}" turns it into a format string that can be pickled, hashed and recorded."""

from __future__ import annotations

from open_clip import OPENAI_IMAGENET_TEMPLATES

SINGLE_TEMPLATE = "a photo of a {}."
"""TPT's CLIP row: one template for every dataset."""

OPENAI_IMAGENET: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
