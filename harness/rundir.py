"""A run directory: its name, its layout, who may create and remove it, and its manifest.

Everything that touches a run's folder goes through here, so the rules hold in one place:
- a run id is a name, never a path: one folder under --out-root, of safe characters;
- a run directory is removed only by the process that created it, proven by identity (the folder's
  device and inode, and a token written into it when it was made), never by a path test, and only the
  run's own files in it are deleted, never through a symbolic link;
- a run's own files and folders (manifest, records, shards, segments, quarantine) are never symbolic
  links, so nothing written, moved or deleted for the run lands outside it;
- a manifest is read only if it has the shape this harness writes.
The result files themselves (shards, segments and their records) are harness.resultfiles'."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import interrupts
from harness.errors import HarnessError

MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
SHARDS = "shards"
SEGMENTS = "segments"
STATES = "states"
"""Online methods' checkpoints (harness.state_files), one per stream."""
"""Finished shards merged into larger files (compact), so 50,000 images leave tens of files, not 47,000."""
QUARANTINE = "quarantine"
"""Files that failed verification, kept for inspection, never read."""
OWNER = ".apm-bench-owner"
"""Written when a run directory is created, holding a token only the creating process knows."""
FOLDERS = (SHARDS, SEGMENTS, STATES, QUARANTINE)
FILES = (MANIFEST, RECORDS)

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
RUN_ID_MAX = 100
RUN_ID_RULE = (f"a run id is one folder name of letters, digits, '.', '_', '+' and '-', starting with a letter or "
               f"digit, at most {RUN_ID_MAX} characters")


def check_run_id(run_id: str, flag: str = "--run-id") -> str:
    """`run_id` if it is a safe new folder name; else one line naming the rule. Names of runs that
    already exist are checked with `check_existing_name` instead (older runs may hold other characters)."""
    shown = run_id if len(run_id) <= 40 else f"{run_id[:40]}... ({len(run_id)} characters)"
    if len(run_id) > RUN_ID_MAX or not RUN_ID.fullmatch(run_id):
        raise HarnessError(f"{flag} {shown!r}: {RUN_ID_RULE}")
    return run_id


def check_existing_name(name: str, flag: str = "--run-id") -> str:
    """A folder name at least: one path component, not `.` or `..`."""
    if not name or name in (".", "..") or "/" in name or "\0" in name or (os.altsep and os.altsep in name):
        raise HarnessError(f"{flag} {name[:40]!r}: {RUN_ID_RULE}")
    return name


def run_path(out_root: Path, run_id: str, flag: str = "--run-id") -> Path:
    """The run directory `run_id` names under `out_root`: an existing run keeps its name, a new one must
    follow the rule."""
    path = Path(out_root) / check_existing_name(run_id, flag)
    if not (path / MANIFEST).exists():
        check_run_id(run_id, flag)
    return path


@dataclass(frozen=True)
class Claim:
    """Proof that this process created a run directory: what a cleanup must find before it removes one."""

    path: Path
    device: int
    inode: int
    token: str


def claim_new(run_dir: Path) -> Claim | None:
    """Create `run_dir` (and its parents) for this process and mark it as ours; None when it exists
    already (someone's: never ours to remove). A signal meanwhile waits until the claim is whole."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with interrupts.deferred():
        try:
            os.mkdir(run_dir)
        except FileExistsError:
            return None
        token = secrets.token_hex(16)
        fd = os.open(run_dir / OWNER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        info = os.lstat(run_dir)
        return Claim(run_dir, info.st_dev, info.st_ino, token)


def claim_fresh(out_root: Path, base: str) -> Claim:
    """A new run directory named `base`, or `base-2`, `base-3`, ... if that is taken."""
    for n in range(1, 1000):
        claim = claim_new(Path(out_root) / (base if n == 1 else f"{base}-{n}"))
        if claim is not None:
            return claim
    raise HarnessError(f"{out_root}: no free run directory name like {base}")


def release(claim: Claim) -> bool:
    """Remove the run directory `claim` proves this process created, if it still is that directory:
    the run's own files in it are deleted (never a symbolic link's target), then the folder if that
    leaves it empty. Anything else found in it is left, and with it the folder. True if removed."""
    try:
        fd = os.open(claim.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False  # gone, replaced by a symbolic link, or not a folder any more: not ours
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (claim.device, claim.inode) or _token(fd) != claim.token:
            return False
        for name in os.listdir(fd):
            if name in FOLDERS:
                _remove_own_folder(fd, name)
            elif name in (*FILES, OWNER) or _is_temporary(name):
                _unlink(fd, name)
    finally:
        os.close(fd)
    try:
        os.rmdir(claim.path)
    except OSError:
        return False
    return True


def _token(dir_fd: int) -> str | None:
    try:
        fd = os.open(OWNER, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd) as fh:
        return fh.read(64)


def _remove_own_folder(dir_fd: int, name: str) -> None:
    """A run folder's result and temporary files, then the folder if empty; a link is never followed."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return
    try:
        for entry in os.listdir(fd):
            if entry.endswith(".parquet") or _is_temporary(entry):
                _unlink(fd, entry)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


def _unlink(dir_fd: int, name: str) -> None:
    """Unlink a file or link (never a folder) in the folder `dir_fd`."""
    try:
        if not stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def check_layout(run_dir: Path) -> None:
    """Refuse, in one line, a run directory whose own files could lead elsewhere: a result folder,
    the manifest or the records as a symbolic link, a folder where a file belongs or the reverse."""
    if run_dir.exists() and not run_dir.is_dir():
        raise HarnessError(f"{run_dir} is a file, not a run directory")
    for name in (*FOLDERS, *FILES):
        path = run_dir / name
        if path.is_symlink():
            raise HarnessError(f"{path} is a symbolic link (to {os.readlink(path)}); a run's own files and folders "
                               "must lie inside its directory, so this run is not touched")
        if name in FOLDERS and path.exists() and not path.is_dir():
            raise HarnessError(f"{path} is a file, where the run keeps a folder")
        if name in FILES and path.exists() and not path.is_file():
            raise HarnessError(f"{path} is not a regular file")


MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "fingerprint": (str,), "config": (dict,), "execution": (dict,), "versions": (dict,),
    "code_version": (str,), "started": (str,), "finished": (str, type(None)), "failed_shards": (dict,),
    "shards_total": (int, type(None)), "samples_total": (int, type(None)), "layout": (int,), "environments": (dict,),
    "streams_total": (int,),
}
"""The manifest's fields and the JSON types they may hold (any may be missing in an older run)."""
CONFIG_FIELDS: dict[str, tuple[type, ...]] = {"tasks": (list,), "methods": (list,), "teacher": (dict,),
                                              "settings": (dict,), "data": (dict,), "seed": (int,)}


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomic (a temporary file renamed over the old one), with the mode 0o666 less the umask; no
    temporary file survives a failure, and a signal meanwhile waits until the file is whole."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = str(run_dir / f".manifest.{secrets.token_hex(8)}.tmp")
    with interrupts.deferred():
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
            os.replace(tmp, run_dir / MANIFEST)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest, after its layout is checked; one line for anything that is not one."""
    check_layout(run_dir)
    path = run_dir / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        what = "no such folder" if not run_dir.exists() else f"no {MANIFEST}"
        raise HarnessError(f"not a run directory ({what}): {run_dir}") from None
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise HarnessError(f"{path} is not an apm-bench manifest: not JSON ({exc})") from None
    problem = _shape_problem(manifest)
    if problem:
        raise HarnessError(f"{path} is not an apm-bench manifest: {problem}")
    return manifest


def _shape_problem(manifest: object) -> str | None:
    if not isinstance(manifest, dict):
        return f"a JSON {_json_type(manifest)}, not an object"
    for fields, where, data in ((MANIFEST_FIELDS, "", manifest), (CONFIG_FIELDS, "config.", manifest.get("config") or {})):
        for key, kinds in fields.items():
            value = data.get(key)
            if key in data and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
                return f"{where}{key} is a JSON {_json_type(value)}"
    teacher = (manifest.get("config") or {}).get("teacher") or {}
    if any(not isinstance(teacher.get(k, ""), str) for k in ("model", "pretrained")):
        return "config.teacher names no model and pretrained weights"
    return None


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")
