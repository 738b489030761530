"""`--config run.toml`: a run written down. Top-level keys are `apm-bench run` options (dashes or
underscores: `shard-size = 8`, `method = ["tpt", "zero"]`); each table is one method's settings
(`[tpt]` with `steps = 2`). Options given on the command line win over the file, and the file's
method settings over a suite's; `--set` wins over both. Plain TOML, read with tomllib: nothing in
it is executed."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import typer

from harness.errors import HarnessError
from harness.registry import unknown_name_message


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise HarnessError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"--config {path}: not valid TOML ({exc})") from None


def use_run_file(ctx: typer.Context, path: Path | None) -> Path | None:
    """An eager option's callback: the file's options become this command's defaults (click's
    default map) before any other option is read, so the command line still wins and every value
    goes through the same type checks as a flag."""
    if path is None or ctx.resilient_parsing:
        return path
    known = {p.name: p for p in ctx.command.params if p.name not in ("config_file", "set_", "ctx")}
    defaults: dict[str, Any] = {}
    unknown = []
    for key, value in read_toml(path).items():
        if isinstance(value, dict):
            continue  # a method's settings: read by the command itself
        name = key.replace("-", "_")
        if name not in known:
            unknown.append(unknown_name_message(f"option in {path}", key, [k.replace("_", "-") for k in known]))
            continue
        multiple = getattr(known[name], "multiple", False)
        defaults[name] = [value] if multiple and not isinstance(value, list) else value
    if unknown:
        raise HarnessError("\n".join(unknown))
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


def read_settings_tables(path: Path) -> dict[str, dict[str, Any]]:
    """method -> its settings, from the file's tables."""
    return {key: value for key, value in read_toml(path).items() if isinstance(value, dict)}
