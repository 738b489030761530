"""The prompt choices of OnZeta and ECALP: the shared `single` and `task` (online_ranking.prompts),
and the 7 ImageNet templates both authors' text comes from. OnZeta's main_online.py uses them as its
proxies on ImageNet; ECALP's features come from DMN's `tip_cupl` text, these 7 (Tip-Adapter's copy
of the subset CLIP's ImageNet notebook found best) plus CuPL's GPT-3 sentences, which are not here."""

from __future__ import annotations

from harness.methods.online_ranking import prompts
from tasks.base import Task
from tasks.templates import TemplateSet

CLIP_IMAGENET_7 = TemplateSet("clip-imagenet-7", (
    "itap of a {}.",
    "a origami {}.",
    "a bad photo of the {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
))
"""Spelt as the authors spell them ("a origami"): the prompt text changes the class embeddings."""


def prompt_choice(choice: str, task: Task) -> TemplateSet:
    """`single`, `task` (as TDA's and DMN's) or `clip-imagenet-7` (on any task: its class names are
    put in the ImageNet sentences)."""
    return CLIP_IMAGENET_7 if choice == CLIP_IMAGENET_7.name else prompts(choice, task)
