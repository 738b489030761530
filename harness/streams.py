"""Stream protocols: the order in which an online method sees a task's samples. An order is a function
of the samples (their ids and labels, in the task's fixed order), the protocol and the stream's seed,
and of nothing else, so a stream is the same on every worker, after a resume, and for every method.

- `iid`: a seeded uniform shuffle (TTA-VLM's one shuffled pass; OGA's runs).
- `dirichlet:GAMMA`: StatA's correlated label shift (Zanella et al., CVPR 2025, sampler.py): the stream
  is cut into S = min(N // 128, C) slots; one C x S matrix of Dirichlet(GAMMA) proportions is drawn
  per stream; each class's samples, in the task's order, are split over the slots at the cumulative
  proportions; each slot is shuffled and the slots follow one another. StatA's batch of 128 sets the
  slot count only: every sample is seen, one at a time. StatA draws the proportions from an unseeded
  generator; here every draw comes from the stream's seed. GAMMA 0.1, 0.01, 0.001: StatA's low,
  medium and high correlation.
- `class-sequential`: StatA's "separate" scenario (its gamma = -1): the classes in a random order, each
  class's samples together and shuffled.
- `continual`: the tasks of the run one after another, in the run's order (a suite's: ImageNet-C's 15
  corruptions in the order of Hendrycks & Dietterich, as CoTTA and Döbler et al. run them), each
  task's samples shuffled, the state carried from one task to the next.

`--streams N` runs N streams whose seeds derive from the run seed."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from harness.errors import HarnessError
from harness.seeding import derive_seed

PROTOCOLS = ("iid", "dirichlet:GAMMA", "class-sequential", "continual")
STATA_BATCH = 128
"""StatA's online batch (scripts/StatA_online.sh): it sets the number of slots of a Dirichlet stream."""
MAX_STREAMS = 10_000
"""Streams per task: 100 times OGA's and StatA's 100."""
_DIRICHLET = re.compile(r"dirichlet:(\d+(?:\.\d*)?(?:[eE]-?\d+)?)")


def check_protocol(text: str) -> str:
    """`text` if it names a protocol, else a one-line error naming --stream and the choices."""
    if text in ("iid", "class-sequential", "continual"):
        return text
    match = _DIRICHLET.fullmatch(text)
    if match and float(match.group(1)) > 0:
        return text
    raise HarnessError(f"--stream must be one of {', '.join(PROTOCOLS)} (GAMMA > 0, e.g. dirichlet:0.1), not '{text}'")


def stream_seed(run_seed: int, protocol: str, index: int) -> int:
    """The seed of stream `index`: derived from the run seed, so `--streams 20` holds the 10 streams
    of `--streams 10` and each stream is the same whatever else the run holds."""
    return derive_seed(run_seed, "stream", protocol, str(index))


def order(labels: Sequence[int], protocol: str, seed: int) -> list[int]:
    """Indices into one task's samples (given by their labels, in the task's order), in stream order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    if protocol in ("iid", "continual"):
        return rng.permutation(len(labels)).tolist()
    classes = np.unique(labels)
    if protocol == "class-sequential":
        out: list[int] = []
        for c in rng.permutation(classes):
            members = np.flatnonzero(labels == c)
            out += members[rng.permutation(len(members))].tolist()
        return out
    return _dirichlet(labels, classes, float(protocol.split(":", 1)[1]), rng)


def _dirichlet(labels: np.ndarray, classes: np.ndarray, gamma: float, rng: np.random.Generator) -> list[int]:
    slots = max(1, min(len(labels) // STATA_BATCH, len(classes)))
    proportions = rng.dirichlet([gamma] * slots, size=len(classes))
    pieces: list[list[int]] = [[] for _ in range(slots)]
    for c, share in zip(classes, proportions):
        members = np.flatnonzero(labels == c)
        cuts = (np.cumsum(share)[:-1] * len(members)).astype(np.int64)
        for slot, part in enumerate(np.split(members, cuts)):
            pieces[slot] += part.tolist()
    out: list[int] = []
    for piece in pieces:
        out += [piece[i] for i in rng.permutation(len(piece))]
    return out
