"""Percentile bootstrap intervals and paired differences, with numpy only.

Resampling n values with replacement and taking the mean depends only on how many times each distinct
value is drawn, and those counts are Multinomial(n, observed frequencies). Drawing the counts costs
O(resamples x distinct values) instead of O(resamples x n), so a 50,000-image cell (values 0/1, or
-1/0/1 for a paired difference) takes microseconds and no memory; the interval is the same bootstrap.

Every interval has its own generator, seeded from `--seed` and what the cell holds (`cell_key`: task,
method, teacher and a digest of its sample ids), so an interval depends only on the data and the seed:
not on other methods or tasks in the report, the table it is shown in, or the run id."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def generator(seed: int, key: str) -> np.random.Generator:
    """The generator of one cell: `default_rng([seed, crc32(key)])`."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def cell_key(kind: str, task: str, method: str, model: str, pretrained: str, *ids: int) -> str:
    """The key of a cell's generator. `kind` names the statistic (top1, top5, paired), `ids` the
    digests of the sample ids it is drawn from (harness.report.digest; a paired cell has the
    method's and the baseline's). The cell's label, its run id and where it is shown are left out
    on purpose: they are not the data."""
    return "|".join((kind, task, method, model, pretrained, *(f"{i:016x}" for i in ids)))


def bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`resamples` means of n values drawn with replacement from `values` (empty when n is 0)."""
    distinct, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    return bootstrap_means_of_counts(distinct, counts, resamples, rng)


def bootstrap_means_of_counts(distinct: np.ndarray, counts: np.ndarray, resamples: int,
                              rng: np.random.Generator) -> np.ndarray:
    """The same bootstrap from a tally: `counts[i]` samples have value `distinct[i]` (sorted)."""
    n = int(np.sum(counts))
    if n == 0:
        return np.empty(0)
    draws = rng.multinomial(n, np.asarray(counts) / n, size=resamples)
    return draws @ np.asarray(distinct, dtype=np.float64) / n


def percentile_interval(means: np.ndarray, level: float = LEVEL) -> tuple[float, float] | tuple[None, None]:
    if len(means) == 0:
        return None, None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Estimate:
    """A mean in percent (or percentage points) with its bootstrap interval."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    replicates: tuple[float, ...] = ()
    """The bootstrap means (percent), kept so that averages over columns get an interval too."""


def estimate(values: np.ndarray, key: str, seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """Mean of `values` (0/1 outcomes or paired differences) x 100, with its 95% percentile interval."""
    distinct, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    return estimate_counts(distinct, counts, key, seed, resamples)


def estimate_counts(distinct: np.ndarray, counts: np.ndarray, key: str, seed: int = 0,
                    resamples: int = RESAMPLES) -> Estimate:
    """`estimate` from a tally (e.g. distinct (0, 1) with counts (misses, hits)): the same result."""
    distinct, counts = np.asarray(distinct, dtype=np.float64), np.asarray(counts)
    kept = counts > 0  # as np.unique would tally it: the same draws as `estimate` on the raw values
    distinct, counts = distinct[kept], counts[kept]
    n = int(np.sum(counts))
    if n == 0:
        return Estimate(None, None, None, 0)
    means = 100.0 * bootstrap_means_of_counts(distinct, counts, resamples, generator(seed, key))
    low, high = percentile_interval(means)
    value = 100.0 * float(np.dot(distinct, counts)) / n
    return Estimate(value, low, high, n, tuple(means.tolist()))


def mean_of(estimates: list[Estimate]) -> Estimate | None:
    """The unweighted mean over columns; its interval comes from averaging the columns' replicates
    (the columns are independent samples). None unless every column has data."""
    if not estimates or any(e.value is None for e in estimates):
        return None
    value = float(np.mean([e.value for e in estimates]))
    replicates = np.mean([np.asarray(e.replicates) for e in estimates], axis=0)
    low, high = percentile_interval(replicates)
    return Estimate(value, low, high, sum(e.n for e in estimates), tuple(replicates.tolist()))


@dataclass(frozen=True)
class Pairing:
    """A method's outcomes against the baseline's on the same sample ids."""

    differences: np.ndarray
    """Per paired sample: method correct minus baseline correct (a sample seen twice is averaged)."""
    unpaired_method: int
    """Sample ids the method scored that the baseline did not."""
    unpaired_baseline: int
    """Sample ids the baseline scored that the method did not."""

    @property
    def unpaired(self) -> int:
        return self.unpaired_method + self.unpaired_baseline


def pair(method: dict[str, float], baseline: dict[str, float]) -> Pairing:
    """`method` and `baseline` map sample id -> mean correctness of that id's scored rows."""
    common = sorted(method.keys() & baseline.keys())
    diffs = np.array([method[s] - baseline[s] for s in common], dtype=np.float64)
    return Pairing(diffs, len(method.keys() - baseline.keys()), len(baseline.keys() - method.keys()))
