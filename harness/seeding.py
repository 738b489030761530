"""Per-sample seeds: a pure function of (run seed, task, sample id), so that results do not depend
on shard order, worker count or resume."""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, *parts: str) -> int:
    """A 63-bit seed from the run seed and any number of string parts (task, sample id, purpose)."""
    h = hashlib.sha256(str(run_seed).encode())
    for part in parts:
        h.update(b"\0" + part.encode())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)
