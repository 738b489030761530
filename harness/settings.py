"""Method settings as data: `--set METHOD.FIELD=VALUE` and TOML tables, type-checked against each
method's config dataclass, with did-you-mean on a typo; and each field's docstring, read from the
source, for `apm-bench ls methods`. Torch-free: all of it runs before anything heavy is imported."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from harness import presets
from harness.errors import HarnessError
from harness.registry import unknown_name_message

Settings = tuple[tuple[str, Any], ...]
"""(method name, its config dataclass) pairs, in the run's method order."""

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def settings_class(method: str) -> type | None:
    """The method's config dataclass, or None for a method without settings (and for an unknown name:
    that is reported where methods are checked)."""
    from harness.methods import METHODS

    return METHODS.get(method).settings_class() if method in METHODS else None


def method_kind_episodic(method: str) -> bool:
    """Whether a method is episodic (reset per sample) rather than online (a state along a stream);
    an unknown name counts as episodic (it is reported where methods are checked)."""
    from harness.methods import METHODS

    return METHODS.get(method).episodic if method in METHODS else True


def complete(methods: Iterable[str], given: Mapping[str, Any]) -> Settings:
    """Every method of the run with its settings: the given ones, defaults for the rest; settings of
    methods not in the run are dropped (they cannot change its rows)."""
    out = []
    for name in methods:
        kind = settings_class(name)
        if kind is not None:
            value = given.get(name)
            out.append((name, kind() if value is None else value))
    return tuple(out)


def parse_assignment(text: str) -> tuple[str, str, str]:
    """`tpt.steps=2` -> ("tpt", "steps", "2")."""
    key, sep, value = text.partition("=")
    method, dot, field = key.strip().partition(".")
    if not sep or not dot or not method or not field:
        raise HarnessError(f"--set expects METHOD.FIELD=VALUE (e.g. tpt.steps=2), not '{text}'")
    return method, field.strip().replace("-", "_"), value.strip()


def apply(
    methods: tuple[str, ...], base: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Mapping[str, Any]],
    problems: list[str], where: str = "--set",
) -> dict[str, Any]:
    """Build each method's config from `base` (a suite's values) and then `overrides` (TOML values or
    --set strings), collecting every problem: unknown method or field (with the closest name), a value
    of the wrong type, a value its config refuses, a method that is not in the run. Method `*` sets a
    field in every method of the run that has it (`--set '*.views=16'`); a method's own value wins.
    A preset (`apm.preset=cpu-small`) becomes its fields in the layer that names it (harness.presets)."""
    from harness.methods import METHODS

    overrides = _expand_presets(methods, _expand_wildcard(methods, overrides, problems, where), problems, where)
    base = _expand_presets(methods, base, problems, "a suite's")
    out: dict[str, Any] = {}
    for method in dict.fromkeys([*base, *overrides]):
        fields = {**base.get(method, {}), **overrides.get(method, {})}
        if method not in METHODS:
            if method in overrides:
                problems.append(f"{where} {method}: {unknown_name_message('method', method, METHODS.names())}")
            continue
        if method not in methods:
            if method in overrides:
                problems.append(f"{where} {method}.{next(iter(fields))}: {method} is not among the run's methods "
                                f"({', '.join(methods) or 'none'})")
            continue
        kind = METHODS.get(method).settings_class()
        if kind is None:
            if method in overrides:
                problems.append(f"{where} {method}: {method} has no settings")
            continue
        values, ok = {}, True
        for field, raw in fields.items():
            try:
                values[field] = coerce(kind, field, raw)
            except HarnessError as exc:
                problems.append(f"{where} {method}.{field}: {exc}")
                ok = False
        if ok:
            try:
                out[method] = kind(**values)
            except HarnessError as exc:
                problems.append(f"{where} {method}: {exc}")
    return out


def resolve(
    methods: tuple[str, ...], suite: Mapping[str, Mapping[str, Any]], file_tables: Mapping[str, Mapping[str, Any]],
    file_label: str, assignments: list[tuple[str, str, str]], problems: list[str],
) -> dict[str, Any]:
    """A run's method settings: a suite's, then a --config file's tables, then --set, the later
    winning, each problem named by where it came from. A file's table for a known method the run does
    not have is ignored (the command line may narrow a file's methods); a table naming no method is
    an error."""
    from harness.methods import METHODS

    tables = {m: t for m, t in file_tables.items() if m in methods or m == "*" or m not in METHODS}
    found = len(problems)
    apply(methods, {}, tables, problems, file_label)  # the file's own values, checked and named as its
    merged = (_expand_presets(methods, _expand_wildcard(methods, tables, [], file_label), [], file_label)
              if len(problems) == found else {})
    given: dict[str, dict[str, Any]] = {}
    for method, field, value in assignments:
        given.setdefault(method, {})[field] = value
    for method, fields in _expand_presets(methods, _expand_wildcard(methods, given, problems, "--set"), problems,
                                          "--set").items():
        merged[method] = {**merged.get(method, {}), **fields}  # each layer's preset expanded first: --set wins
    return apply(methods, suite, merged, problems)


def _expand_presets(methods: tuple[str, ...], layer: Mapping[str, Mapping[str, Any]], problems: list[str],
                    where: str) -> dict[str, dict[str, Any]]:
    """Each of the run's methods' preset replaced by its fields (a method not in the run keeps its
    fields as given: `apply` says it is not in the run)."""
    out = {}
    for method, fields in layer.items():
        if method not in methods:
            out[method] = dict(fields)
            continue
        try:
            out[method] = presets.expand(method, fields)
        except HarnessError as exc:
            problems.append(f"{where} {method}.{presets.FIELD}: {exc}")
            out[method] = {k: v for k, v in fields.items() if k != presets.FIELD}
    return out


def _expand_wildcard(methods: tuple[str, ...], overrides: Mapping[str, Mapping[str, Any]], problems: list[str],
                     where: str) -> dict[str, dict[str, Any]]:
    out = {m: dict(f) for m, f in overrides.items() if m != "*"}
    for field, value in overrides.get("*", {}).items():
        having = [m for m in methods if (kind := settings_class(m)) is not None and field in _hints(kind)]
        if not having:
            known = {f for m in methods if (kind := settings_class(m)) is not None for f in _hints(kind)}
            close = difflib.get_close_matches(field, sorted(known), n=1)
            problems.append(f"{where} *.{field}: no method of the run ({', '.join(methods) or 'none'}) has a setting "
                            f"'{field}'" + (f"; did you mean '*.{close[0]}'?" if close else ""))
        for method in having:
            out.setdefault(method, {}).setdefault(field, value)
    return out


def coerce(kind: type, field: str, raw: Any) -> Any:
    """`raw` (a --set string, or a TOML value) as the type `kind.field` declares."""
    hints = _hints(kind)
    if field not in hints:
        raise HarnessError(unknown_name_message(f"setting of {kind.__name__}", field, hints))
    return _as(hints[field], raw)


def _as(hint: Any, raw: Any) -> Any:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if type(None) in args and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "unset", ""))):
            return None
        inner = [a for a in args if a is not type(None)]
        return _as(inner[0], raw)
    if typing.get_origin(hint) is tuple:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise HarnessError(f"expects a list, not {raw!r}")
        return tuple(_as(args[0], item.strip() if isinstance(item, str) else item) for item in items if item != "")
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in TRUE + FALSE:
            return raw.lower() in TRUE
        raise HarnessError(f"expects true or false, not {raw!r}")
    if hint in (int, float):
        if isinstance(raw, bool) or (hint is int and isinstance(raw, float)):
            raise HarnessError(f"expects {'an integer' if hint is int else 'a number'}, not {raw!r}")
        try:
            return hint(raw)
        except (TypeError, ValueError):
            raise HarnessError(f"expects {'an integer' if hint is int else 'a number'}, not {raw!r}") from None
    if hint is str:
        if not isinstance(raw, str):
            raise HarnessError(f"expects text, not {raw!r}")
        return raw
    raise HarnessError(f"cannot set a field of type {hint}")


@cache
def _hints(kind: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: v for k, v in typing.get_type_hints(kind).items() if k in names}


@cache
def field_docs(kind: type) -> dict[str, str]:
    """Field name -> the docstring under it in the class body (a base class's when the subclass does
    not redefine the field with its own)."""
    docs: dict[str, str] = {}
    for cls in reversed(kind.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def describe(kind: type) -> list[tuple[str, str, str, str]]:
    """(field, type, default, doc) for every field, in declaration order."""
    docs = field_docs(kind)
    hints = _hints(kind)
    rows = []
    for f in dataclasses.fields(kind):
        hint = hints[f.name]
        name = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
        rows.append((f.name, name or str(hint).replace("typing.", ""), _shown(f.default), docs.get(f.name, "")))
    return rows


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)
