"""Named sets of one method's settings: `--set apm.preset=cpu-small`, or `preset = "cpu-small"` in a run
file's `[apm]` table, instead of four `--set` flags. A preset is expanded into the fields it stands for
before the method's config dataclass is built, so the config, the manifest and the fingerprint hold the
values, never the name (a preset changed later cannot make two runs look alike), and a field given
beside the preset, in the same place or a later one, wins over it. Torch-free: read while a run is
checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.registry import Registry

FIELD = "preset"
"""The pseudo-setting that names a preset (`apm.preset`); no config dataclass has it."""


@dataclass(frozen=True)
class Preset:
    fields: Mapping[str, Any]
    """Setting name -> value, as the method's config dataclass takes them."""
    description: str


PRESETS: dict[str, Registry[Preset]] = {"apm": Registry("APM preset (apm.preset)")}
"""method -> its presets."""

PRESETS["apm"].add("cpu-small", Preset(
    {"image_size": 64, "patch_size": 8, "hidden": (256, 256, 128), "steps": 20, "lr": 1e-3},
    "the smoke and fashion-mnist-c suites' APM: 64 px input, 8 px patches, widths 256,256,128, 20 steps, "
    "lr 1e-3; well under a second per sample on a CPU, where the paper's size (448 px, 20 steps) takes ~30 s",
))


def preset_fields(method: str, name: str) -> dict[str, Any]:
    """The fields `METHOD.preset=NAME` stands for; one line naming the known presets otherwise."""
    if method not in PRESETS:
        raise HarnessError(f"{method} has no presets (methods with presets: {', '.join(sorted(PRESETS))})")
    return dict(PRESETS[method].get(name).fields)


def expand(method: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` with its preset, if any, replaced by the preset's fields; the other given fields win."""
    if FIELD not in fields:
        return dict(fields)
    rest = {k: v for k, v in fields.items() if k != FIELD}
    return {**preset_fields(method, str(fields[FIELD])), **rest}
