"""`--limit N`: a class-stratified subset drawn with a fixed seed, in the task's own order."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from harness.seeding import derive_seed
from tasks.base import SampleRef


def stratified_subset(refs: Sequence[SampleRef], limit: int | None, seed: int, task: str) -> list[SampleRef]:
    """Each class gets its share of `limit` in proportion to its size (largest remainders first),
    chosen at random with a seed from (seed, task): the same subset on every machine."""
    if limit is None or limit >= len(refs):
        return list(refs)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, ref in enumerate(refs):
        by_class[ref.label].append(i)
    exact = {label: limit * len(idx) / len(refs) for label, idx in by_class.items()}
    quota = {label: int(share) for label, share in exact.items()}
    by_remainder = sorted(by_class, key=lambda label: (-(exact[label] - quota[label]), label))
    for label in by_remainder[: limit - sum(quota.values())]:
        quota[label] += 1
    rng = random.Random(derive_seed(seed, task, "limit"))
    chosen: list[int] = []
    for label in sorted(by_class):
        chosen += rng.sample(by_class[label], quota[label])
    return [refs[i] for i in sorted(chosen)]
