"""Everything checked before a run starts: names, the teacher's source, every task's data. It imports
no torch, open_clip or Ray (a pretrained tag is checked against open_clip's table read as text), so a
mistake comes back in about a second, all mistakes at once."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from harness import rundir
from harness.config import ExecConfig, RunConfig
from harness.errors import HarnessError, MissingData, Problems, collect
from harness.methods import METHODS
from harness.models.sources import resolve_source, weights_sha256
from tasks.base import Task
from tasks.registry import planned_task, resolve_task

log = logging.getLogger("apm_bench")


def check(config: RunConfig, execution: ExecConfig | None = None,
          plan_missing: bool = False) -> tuple[RunConfig, list[Task], list[str]]:
    """The run's tasks (resolved, their versions pinned in the config) and the problems found; missing
    data is a problem unless --skip-missing, which skips those tasks. `plan_missing` (`apm-bench plan`):
    a task whose data is absent is priced from its published test-set size (a PlannedTask) where its
    family knows it, so a suite can be planned before its data is fetched."""
    execution = execution or ExecConfig()
    problems = missing_work(config)
    for name in config.methods:
        collect(problems, METHODS.get, name)
    collect(problems, resolve_source, config.teacher.model, config.teacher.pretrained)
    for name, settings in config.settings:  # teachers a method loads besides the run's (RLCF's reward model)
        for model, pretrained, _ in getattr(settings, "extra_teachers", lambda: ())():
            try:
                resolve_source(model, pretrained)
            except HarnessError as exc:
                problems.append(f"{name}: {exc}")
    found: dict[str, Task] = {}
    missing = 0
    for spec in config.tasks:
        try:
            found[spec] = resolve_task(spec, config.data, execution.data_root, execution.splits_dir)
        except MissingData as exc:
            planned = planned_task(spec, config.data, exc) if plan_missing and not execution.skip_missing else None
            if planned is not None:
                found[spec] = planned
            elif execution.skip_missing:
                log.warning("skipping: %s", exc)
            else:
                problems.append(str(exc))
                missing += 1
        except HarnessError as exc:
            problems.append(str(exc))
    if missing and found:
        problems.append(f"{missing} task(s) without data; --skip-missing runs the {len(found)} that have it")
    names = [t.name for t in found.values()]
    if len(set(names)) != len(names):
        problems.append(f"two tasks share a name: {names}")
    if config.tasks and not found and not problems:
        problems.append("no task has its data; nothing to run")
    versions = tuple((spec, task.version) for spec, task in found.items())
    return replace(config, tasks=tuple(found), task_versions=versions), list(found.values()), problems


def missing_work(config: RunConfig) -> list[str]:
    return ([] if config.tasks else ["no tasks: give --suite or --task"]) + (
        [] if config.methods else ["no methods: give --suite or --method"])


def prepare(config: RunConfig, execution: ExecConfig | None = None) -> tuple[RunConfig, list[Task]]:
    """Check everything (raising every problem at once), then pin the teacher's weights by content."""
    config, tasks, problems = check(config, execution)
    if problems:
        raise Problems(problems)
    return pin_weights(config), tasks


def pin_weights(config: RunConfig) -> RunConfig:
    """The config with the teacher's weights hash filled in, and a local checkpoint or directory given
    by a relative path made absolute (every worker resolves `--pretrained` again, in its own working
    directory, on its own node). A config that already names a hash (a resume) must find the same
    weights."""
    teacher = config.teacher
    pretrained, digest = _pinned(teacher.model, teacher.pretrained, teacher.weights_sha256, "--pretrained")
    settings = []
    for name, chosen in config.settings:  # a method's own teachers (RLCF's reward model) are pinned alike
        extra = getattr(chosen, "extra_teachers", lambda: ())()
        if extra:
            try:
                chosen = chosen.with_weights(tuple(_pinned(m, p, sha, f"{name}'s teacher") for m, p, sha in extra))
            except HarnessError as exc:
                hint = getattr(chosen, "EXTRA_TEACHER_HINT", "")
                raise HarnessError(f"{name}: {exc}" + (f" ({hint})" if hint else "")) from None
        settings.append((name, chosen))
    return replace(config, teacher=replace(teacher, pretrained=pretrained, weights_sha256=digest), settings=tuple(settings))


def _pinned(model: str, pretrained: str, expected: str | None, flag: str) -> tuple[str, str | None]:
    """(pretrained as any node resolves it: a local path made absolute, sha256 of the weights); a run
    that already names a hash (a resume) must find the same weights."""
    source = resolve_source(model, pretrained)
    digest = weights_sha256(source)
    if expected is not None and digest != expected:
        raise HarnessError(
            f"the weights of {flag} {pretrained} changed since this run started "
            f"(sha256 {expected[:12]}... then, {str(digest)[:12]}... now); "
            "finishing it would mix two teachers: start a new run instead, or restore the weights"
        )
    return (source.path if source.kind in ("file", "local-dir") else pretrained), digest


def resume_config(run_dir: Path) -> RunConfig:
    """The config a run directory was started with, read back from its manifest."""
    manifest = rundir.read_manifest(run_dir)
    where = run_dir / rundir.MANIFEST
    config = manifest.get("config") or {}
    if not config.get("tasks") or not config.get("methods"):
        raise HarnessError(f"{where} names no tasks and methods: not a run that can be resumed")
    if "settings" not in config:  # apm and tpt sections: before settings were data (#16)
        raise HarnessError(f"{run_dir} was made by an earlier apm-bench ({manifest.get('code_version', '?')}), whose "
                           "method settings this one no longer reads; finish it with that version")
    try:
        return RunConfig.from_dict(config)
    except HarnessError as exc:
        raise HarnessError(f"{where}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise HarnessError(f"{where}: its config cannot be read back ({type(exc).__name__}: {exc})") from None
