"""What open_clip knows that a command needs before it loads a model: its architecture names, its
pretrained tags (and where each tag's weights are fetched from) and its zero-shot metadata (CLIP's 80
ImageNet templates and curated class names). Read from open_clip's own files without importing the
package, whose import (torch and all its models) takes seconds: argument errors must come back at
once, `apm-bench plan` must price a run in about a second, and listing tasks needs no network.

Tests check that these equal what `import open_clip` gives."""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PretrainedEntry:
    """Where open_clip fetches one tag's weights from (its `_pcfg(url=..., hf_hub=...)` entry)."""

    hf_hub: str
    """`ORG/REPO/` (open_clip's default weight file) or `ORG/REPO/FILE`; empty when only a URL exists."""
    url: str


class _NotPlainData(Exception):
    """A construct of pretrained.py that the reader does not evaluate (open_clip changed its table)."""


@cache
def pretrained_tags() -> dict[str, dict[str, PretrainedEntry]]:
    """open_clip's `_PRETRAINED` table (model -> tag -> entry), as `list_pretrained()` gives it, read
    from the text of open_clip/pretrained.py: the table is nested `dict(...)` calls of `_pcfg`-style
    helpers whose arguments are literals, evaluated here as data, nothing executed; the `-quickgelu`
    aliases are added as open_clip adds them. A table written another way is read by importing
    open_clip instead (slow, never wrong); a test checks the two agree."""
    try:
        return _read_pretrained_table(_package_dir() / "pretrained.py")
    except (_NotPlainData, OSError, SyntaxError):
        import open_clip  # the table changed shape: ask open_clip itself

        return {model: {tag: PretrainedEntry(str(open_clip.get_pretrained_cfg(model, tag).get("hf_hub", "")),
                                             str(open_clip.get_pretrained_cfg(model, tag).get("url", "")))
                        for tag in open_clip.list_pretrained_tags_by_model(model)}
                for model in dict.fromkeys(m for m, _ in open_clip.list_pretrained())}


def _read_pretrained_table(path: Path) -> dict[str, dict[str, PretrainedEntry]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    helpers = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    names: dict[str, object] = {}

    def value(node: ast.expr) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.Dict) and None not in node.keys:
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
            if node.func.id == "dict" and all(k.arg for k in node.keywords):
                return {k.arg: value(k.value) for k in node.keywords}
            if node.func.id in helpers:  # a config helper: where the weights are must be literal
                where = [k for k in node.keywords if k.arg in ("url", "hf_hub", "quick_gelu")]
                if all(isinstance(k.value, ast.Constant) for k in where):
                    return {k.arg: k.value.value for k in where}
        raise _NotPlainData(ast.dump(node)[:80])

    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = value(node.value)
            except _NotPlainData:
                if node.targets[0].id == "_PRETRAINED":
                    raise
    table = names.get("_PRETRAINED")
    if not isinstance(table, dict) or not all(isinstance(tags, dict) for tags in table.values()):
        raise _NotPlainData("no _PRETRAINED table")
    table = copy.deepcopy(table)
    quick = {f"{model}-quickgelu": {t: c for t, c in tags.items() if c.get("quick_gelu", False)}
             for model, tags in table.items()}
    table.update({model: tags for model, tags in quick.items() if tags})
    return {model: {tag: PretrainedEntry(str(c.get("hf_hub", "")), str(c.get("url", ""))) for tag, c in tags.items()}
            for model, tags in table.items()}
