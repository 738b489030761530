"""Method names and where each method's code lives. Importing a method pulls in torch and open_clip
(seconds); checking a name must not, so the registry holds import paths and loads a method's module
only when a worker builds it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.registry import Registry

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.methods.base import Method


@dataclass(frozen=True)
class MethodEntry:
    module: str
    factory: str
    """A function of the module taking the RunConfig and returning the method."""
    summary: str

    def __call__(self, config: RunConfig) -> Method:
        return getattr(importlib.import_module(self.module), self.factory)(config)


METHODS: Registry[MethodEntry] = Registry("method (--method)")
METHODS.add("zeroshot", MethodEntry("harness.methods.zeroshot", "zeroshot",
                                    "CLIP zero-shot, one template (TPT's CLIP row)"))
METHODS.add("ensemble", MethodEntry("harness.methods.zeroshot", "ensemble",
                                    "CLIP zero-shot with the task's template set (80 templates on ImageNet)"))
METHODS.add("tpt", MethodEntry("harness.methods.tpt", "tpt",
                               "test-time prompt tuning (Shu et al., NeurIPS 2022)"))
METHODS.add("apm", MethodEntry("harness.methods.apm", "apm",
                               "Asynchronous Perception Machine test-time training (Modi & Rawat, NeurIPS 2024)"))
