"""How many items (classes through the text tower, views through the image tower) a worker runs through
a network at once, and the out-of-memory fallback that shrinks it: a computation that ran out of
device memory is tried again with half the chunk, and the smaller chunk stays for the worker, since
the next sample needs as much memory as this one. Only a chunk of one item that does not fit fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class Chunks:
    """A worker's chunk size for one kind of item; `limit` 0 means all items at once."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit

    def size(self, n: int) -> int:
        """Items per chunk out of `n`."""
        return min(n, self.limit) if self.limit > 0 else n

    def spans(self, n: int) -> list[slice]:
        """The chunks of `n` items, in order (the last one may be shorter)."""
        size = max(1, self.size(n))
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def fit(self, n: int, attempt: Callable[[], T]) -> T:
        """`attempt()` (which reads `size(n)` itself), tried again with half the chunk for as long as it
        runs out of memory. The attempt must leave nothing behind when it fails (a gradient it had
        half accumulated is zeroed at its start, not here). The retry happens after the except block
        has ended, so the failed attempt's tensors, held by its traceback, are freed first."""
        while True:
            size = self.size(n)
            try:
                return attempt()
            except torch.cuda.OutOfMemoryError:
                if size <= 1:
                    raise
                self.limit = size // 2
            torch.cuda.empty_cache()
