"""What open_clip knows that a command needs before it loads a model: its architecture names and its
zero-shot metadata (CLIP's 80 ImageNet templates and curated class names). Read from open_clip's own
files without importing the package, whose import (torch and all its models) takes seconds: argument
errors must come back at once, and listing tasks needs no network.

Tests check that these equal what `import open_clip` gives."""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from pathlib import Path
from types import ModuleType

LOCAL_CONFIGS = Path(__file__).parent / "models" / "configs"
"""The harness's own architectures (apm-tiny, apm-mini), registered with open_clip when a model loads."""


def _package_dir() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed (pip install open_clip_torch)")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def zero_shot_metadata() -> ModuleType:
    """open_clip's zero_shot_metadata.py (plain data: no imports), loaded on its own."""
    path = _package_dir() / "zero_shot_metadata.py"
    spec = importlib.util.spec_from_file_location("_apm_bench_open_clip_zero_shot_metadata", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot read {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _natural_key(name: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


@cache
def model_names() -> tuple[str, ...]:
    """The architectures open_clip.list_models() lists once the harness's configs are added: every
    JSON config (in open_clip's model_configs and ours) with embed_dim, vision_cfg and text_cfg."""
    names = set()
    for folder in (_package_dir() / "model_configs", LOCAL_CONFIGS):
        for path in folder.glob("*.json"):
            config = json.loads(path.read_text())
            if all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg")):
                names.add(path.stem)
    return tuple(sorted(names, key=_natural_key))
