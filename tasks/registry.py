"""Task lookup and suites. A task spec is `family[/param...][:arg]`: `synthetic:3`,
`imagefolder:/data/pets`, `imagenet-c/fog/5`, `imagenet-a:/data/imagenet-a`."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config import DataConfig
from harness.errors import HarnessError
from harness.registry import Registry
from tasks import fashion_mnist, finegrained, imagefolder, imagenet, imagenet_c, synthetic  # noqa: F401  (modules register families)
from tasks.base import Task
from tasks.families import TASKS
from tasks.fashion_mnist import FASHION_MNIST_C
from tasks.hub import build_hub_task
from tasks.finegrained import FINE_GRAINED
from tasks.imagenet import NATURAL_SHIFT
from tasks.imagenet_c import IMAGENET_C
from tasks.request import TaskRequest

SOURCES = ("disk", "hub")


def resolve_task(
    spec: str, data: DataConfig | None = None, data_root: str | None = None, splits_dir: str | None = None
) -> Task:
    request = TaskRequest.parse(spec, data, data_root, splits_dir)
    family = TASKS.get(request.family)
    if request.data.source not in SOURCES:
        raise HarnessError(f"--source must be one of {', '.join(SOURCES)}, not '{request.data.source}'")
    if request.data.source == "hub" and family.hub is not None:
        return build_hub_task(request, family.hub)
    if request.data.source == "hub" and not family.local:
        raise HarnessError(f"task {spec} has no hub copy; use --source disk")
    return family.build(request)


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


SUITES: Registry[Suite] = Registry("suite")
SMALL_APM = {"image_size": 64, "patch_size": 8, "hidden": (256, 256, 128), "steps": 20, "lr": 1e-3}
"""The tiny suites' APM: the paper-size network costs ~30 s per sample on 2 CPU cores."""
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
    Suite(NATURAL_SHIFT, PAPER_METHODS, "ViT-B-16", "openai", "Table 1: ImageNet, -A, -V2, -R, -Sketch"),
)
SUITES.add(
    "imagenet-c",
    Suite(IMAGENET_C, ("zeroshot", "ensemble", "apm"), "ViT-L-14", "openai",
          "Table 2: the 15 ImageNet-C corruptions at severity 5 (the paper has no TPT row there)"),
)
SUITES.add(
    "fine-grained",
    Suite(FINE_GRAINED, PAPER_METHODS, "ViT-B-16", "openai", "Table 3: the 9 fine-grained sets, CoOp test splits"),
)
SUITES.add(
    "fashion-mnist-c",
    Suite(
        ("fashion-mnist",) + FASHION_MNIST_C,
        EVERY_METHOD,
        "apm-mini",
        "fashion-mnist-teacher",  # $APM_BENCH_HOME/teachers/fashion-mnist, made by `apm-bench teacher train`
        "clean Fashion-MNIST + Table 2's 15 corruptions at severity 5, on a teacher trained here (README)",
        settings={"apm": SMALL_APM, "rlcf": {"reward_model": "teacher"}},  # no bigger CLIP offline
    ),
)
