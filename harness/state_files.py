"""Checkpoints of online methods' states, as safetensors files (tensors and a string header: nothing
in them is executed when read). The header's metadata names the run (its fingerprint), the stream and
the position the state follows, and a sha256 over every tensor's bytes in name order, so a file cut
short, altered or copied from another run or stream is refused before a resume continues from it.
Read here without torch: the driver checks what a worker will load. The feature cache's files are
checked the same way (harness.engine.features)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections.abc import Iterable
from pathlib import Path

DIGEST = "apm_bench.sha256"
FINGERPRINT = "apm_bench.fingerprint"
STREAM = "apm_bench.stream"
POSITION = "apm_bench.position"


def digest(chunks: Iterable[bytes]) -> str:
    """sha256 over the tensors' bytes, given in their names' sorted order."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def metadata(fingerprint: str, stream: str, position: int) -> dict[str, str]:
    """What a checkpoint says it is (the engine adds the tensors' sha256 when it saves them)."""
    return {FINGERPRINT: fingerprint, STREAM: stream, POSITION: str(position)}


def check_state(data: bytes, fingerprint: str, stream: str, position: int) -> str | None:
    """Why `data` is not this stream's state after `position` samples, in a few words; None if it is."""
    return check_tensors(data, metadata(fingerprint, stream, position))


def header_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file's header (a file check_tensors accepted)."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]).get("__metadata__", {}) or {}


def write_bytes_atomic(final: Path, data: bytes) -> None:
    """Written beside `final` under a temporary name (O_EXCL: never another's file), flushed to disk
    and renamed into place: a reader sees the whole file or none; two writers of the same bytes race
    harmlessly. Mode 0o666 less the umask."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.stem}.{secrets.token_hex(8)}.tmp"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def check_tensors(data: bytes, expected: dict[str, str]) -> str | None:
    """Why `data` is not a whole safetensors file whose metadata holds `expected` and whose tensors
    match the sha256 it records; None if it is (checkpoints here, cached features in the engine)."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + size])
        body = data[8 + size:]
        meta = header.pop("__metadata__", {}) or {}
        spans = [header[name]["data_offsets"] for name in sorted(header)]
    except (struct.error, ValueError, KeyError, TypeError):
        return "not a readable safetensors file"
    for key, value in expected.items():
        if meta.get(key) != value:
            return f"its {key.split('.')[-1]} is {meta.get(key)!r}, not {value!r}"
    if any(end > len(body) or begin > end for begin, end in spans):
        return "cut short"
    if digest(body[begin:end] for begin, end in spans) != meta.get(DIGEST):
        return "its tensors do not match their sha256 (altered or damaged)"
    return None
