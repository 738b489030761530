"""Task lookup and suites. A task spec is `family[/param...][:arg]`: `synthetic:3`,
`imagefolder:/data/pets`, `imagenet-c/fog/5`, `imagenet-a:/data/imagenet-a`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from harness.config import DataConfig
from harness.errors import HarnessError, MissingData
from harness.presets import preset_fields
from harness.registry import Registry
from tasks import fashion_mnist, finegrained, imagefolder, imagenet, imagenet_c, open_set, synthetic  # noqa: F401  (modules register families)
from tasks.base import Task
from tasks.families import TASKS
from tasks.fashion_mnist import FASHION_MNIST_C, FASHION_MNIST_OPEN
from tasks.hub import build_hub_task
from tasks.finegrained import FINE_GRAINED
from tasks.imagenet import NATURAL_SHIFT
from tasks.imagenet_c import IMAGENET_C
from tasks.open_set import MCM_SUITE, planned_against, scored_against, split_spec
from tasks.planned import PlannedTask
from tasks.request import TaskRequest

SOURCES = ("disk", "hub")


def resolve_task(
    spec: str, data: DataConfig | None = None, data_root: str | None = None, splits_dir: str | None = None
) -> Task:
    pair = split_spec(spec)
    if pair is not None:
        inner = _resolve_one(pair[0], data, data_root, splits_dir, ood=True)
        return scored_against(inner, resolve_task(pair[1], data, data_root, splits_dir))
    return _resolve_one(spec, data, data_root, splits_dir)


def _resolve_one(spec: str, data: DataConfig | None, data_root: str | None, splits_dir: str | None,
                 ood: bool = False) -> Task:
    request = TaskRequest.parse(spec, data, data_root, splits_dir)
    family = TASKS.get(request.family)
    if family.ood_only and not ood:
        raise HarnessError(f"task {spec} is out-of-distribution data with no classes of its own: name the task it "
                           f"is scored against, e.g. {spec}@imagenet (or --ood imagenet:{spec})")
    if request.data.source not in SOURCES:
        raise HarnessError(f"--source must be one of {', '.join(SOURCES)}, not '{request.data.source}'")
    if request.data.source == "hub" and family.hub is not None:
        return build_hub_task(request, family.hub)
    if request.data.source == "hub" and not family.local:
        raise HarnessError(f"task {spec} has no hub copy; use --source disk")
    return family.build(request)


def planned_task(spec: str, data: DataConfig | None, missing: MissingData) -> PlannedTask | None:
    """The task as `apm-bench plan` prices it when its data is absent (`missing` says where it looked):
    its family's published test-set size and class space; None where only the data knows its size."""
    pair = split_spec(spec)
    if pair is not None:
        inner = planned_task(pair[0], data, missing)
        try:
            known: Task | None = resolve_task(pair[1], data)
        except MissingData as absent:
            known = planned_task(pair[1], data, absent)
        return planned_against(inner, known) if inner is not None and known is not None else None
    request = TaskRequest.parse(spec, data)
    family = TASKS.get(request.family)
    if family.known is None or request.data.source == "hub":
        return None
    return replace(family.known(request), missing=str(missing))


@dataclass(frozen=True)
class Suite:
    """A named bundle of tasks, methods and a teacher, with settings that make it the right size."""

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    model: str
    pretrained: str
    description: str
    settings: dict[str, dict[str, object]] = field(default_factory=dict)
    """Method settings the suite applies before --config and --set do (method -> field -> value)."""
    table: str | None = None
    """The report layout its rows fill (`apm-bench report --table`), named in the hint after a run."""


SUITES: Registry[Suite] = Registry("suite")
SMALL_APM = preset_fields("apm", "cpu-small")
"""The tiny suites' APM, the `cpu-small` preset (`--set apm.preset=cpu-small`): the paper-size network
costs ~30 s per sample on a CPU. Its fields, not its name, so the suites' settings read as values."""
SUITES.add(
    "smoke",
    Suite(
        tasks=("synthetic",),
        methods=("zeroshot", "ensemble", "apm"),
        model="apm-mini",
        pretrained="synthetic-teacher",  # shipped: `apm-bench teacher train --data synthetic --dtype fp16 --steps 400`
        description="48 drawn shapes, zero-shot / ensemble / APM on the shipped tiny teacher trained on them",
        settings={"apm": SMALL_APM, "rlcf": {"reward_model": "teacher"}},  # no bigger CLIP offline
    ),
)
EVERY_METHOD = ("zeroshot", "ensemble", "tpt", "c-tpt", "r-tpt", "tps", "rlcf", "ttl", "zero", "mta", "apm")
"""The offline benchmark compares every built-in method on the same samples."""
PAPER_METHODS = ("zeroshot", "ensemble", "tpt", "apm")
"""The rows the paper reports for methods this harness runs (its Tables 1 and 3 have TPT rows)."""
SUITES.add(
    "natural-shift",
    Suite(NATURAL_SHIFT, PAPER_METHODS, "ViT-B-16", "openai", "Table 1: ImageNet, -A, -V2, -R, -Sketch",
          table="natural-shift"),
)
SUITES.add(
    "imagenet-c",
    Suite(IMAGENET_C, ("zeroshot", "ensemble", "apm"), "ViT-L-14", "openai",
          "Table 2: the 15 ImageNet-C corruptions at severity 5 (the paper has no TPT row there)", table="imagenet-c"),
)
SUITES.add(
    "fine-grained",
    Suite(FINE_GRAINED, PAPER_METHODS, "ViT-B-16", "openai", "Table 3: the 9 fine-grained sets, CoOp test splits",
          table="fine-grained"),
)
SUITES.add(
    "fashion-mnist-c",
    Suite(
        ("fashion-mnist",) + FASHION_MNIST_C + FASHION_MNIST_OPEN,
        EVERY_METHOD,
        "apm-mini",
        "fashion-mnist-teacher",  # $APM_BENCH_HOME/teachers/fashion-mnist, made by `apm-bench teacher train`
        "clean Fashion-MNIST + Table 2's 15 corruptions at severity 5 + the open-set pair (5 classes in, 5 out), "
        "on a teacher trained here (README)",
        settings={"apm": SMALL_APM, "rlcf": {"reward_model": "teacher"}},  # no bigger CLIP offline
        table="fashion-mnist-c",
    ),
)
SUITES.add(
    "ood-mcm",
    Suite(MCM_SUITE, PAPER_METHODS, "ViT-B-16", "openai",
          "MCM's zero-shot OOD protocol: ImageNet in distribution; iNaturalist, SUN, Places, Textures out",
          table="trust"),
)
