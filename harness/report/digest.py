"""An order-free digest of a cell's sample ids, computed by the query engine while it counts the cell.

A bootstrap interval is drawn from a generator seeded by what the cell holds (harness.report.stats
`cell_key`): its task, method, teacher and sample ids, never its label, position or run id. So the same
rows give the same interval in the plain pivot and under `--table`, and in two runs that measured the
same samples. Hashing the sorted list of ids would mean sorting and holding every id of a cell; the
sum (mod 2**64) of each id's own hash is the same for any order of the same ids and is computed in one
streaming pass (it adds about 0.05 s per million rows). Each id's hash is 64 bits of its MD5, so the
digest is defined independently of DuckDB's internal `hash()`, which may change between versions;
`python_digest` is the definition, and the tests hold the SQL to it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

MODULUS = 2**64


def digest_sql(condition: str = "true") -> str:
    """The SQL aggregate of the digest over the ids of the rows where `condition` holds (0 for none).
    DuckDB's `md5_number` is the digest read as a little-endian 128-bit integer; its upper half is
    the digest's bytes 8 to 15. The sum is exact (HUGEINT) before it is cut to 64 bits."""
    return (f"(coalesce(sum((md5_number(sample_id) >> 64)::UBIGINT) FILTER (WHERE {condition}), 0)"
            f" % {MODULUS})::UBIGINT")


def id_hash(sample_id: str) -> int:
    return int.from_bytes(hashlib.md5(sample_id.encode()).digest()[8:], "little")


def python_digest(sample_ids: Iterable[str]) -> int:
    """What `digest_sql` computes, in Python: the definition."""
    return sum(id_hash(s) for s in sample_ids) % MODULUS
