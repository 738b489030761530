"""Where a teacher's weights come from, and which weights they are.

`--model/--pretrained` map onto open_clip's own schemes (a tag, `hf-hub:ORG/REPO`, a checkpoint file,
a local open_clip directory), plus two kinds of names: weights shipped in the package and teachers
that `apm-bench teacher train` writes to a fixed, documented place. Names, not paths, go into the
config, so a fingerprint does not depend on where the package or the home folder lies; the content
hash of the weights (`weights_sha256`) goes in beside them, so retraining a teacher in place changes
the fingerprint instead of mixing two sets of weights in one run.

Nothing here imports torch or open_clip, except to list or fetch the files of a pretrained tag."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.openclip_meta import model_names
from harness.registry import unknown_name_message

HOME_ENV = "APM_BENCH_HOME"
SHIPPED_WEIGHTS = {"synthetic-teacher": Path(__file__).parent / "weights" / "synthetic-teacher"}
"""--pretrained names for weights shipped in the package (open_clip local-dir form)."""

TRAINED_TEACHERS = {"fashion-mnist-teacher": ("fashion-mnist", "apm-bench teacher train --data fashion-mnist --steps 1200")}
"""--pretrained names for teachers trained here: name -> (folder under teacher_home(), how to make it)."""

WEIGHT_FILES = ("open_clip_config.json", "*.safetensors", "*.bin", "*.pt", "*.pth")
"""What a weights directory's hash covers: the files open_clip loads, not notes beside them."""


def home() -> Path:
    """$APM_BENCH_HOME, default ~/.apm-bench: trained teachers and the hash cache live here."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".apm-bench").expanduser().absolute()


def teacher_home() -> Path:
    return home() / "teachers"


def trained_teacher_dir(name: str) -> Path:
    return teacher_home() / TRAINED_TEACHERS[name][0]


@dataclass(frozen=True)
class ModelSource:
    """What open_clip is asked for: its own (model_name, pretrained) pair."""

    model_name: str
    pretrained: str | None
    kind: str
    """tag, hf-hub, file, local-dir, shipped, trained or none: recorded so a row says where its
    weights came from."""
    path: str | None = None
    """The local file or directory of the weights, where they are local."""


def resolve_source(model: str, pretrained: str) -> ModelSource:
    """Map --model/--pretrained onto open_clip's schemes, with one-line errors for what cannot work."""
    if pretrained.startswith("hf-hub:"):
        return ModelSource(pretrained, None, "hf-hub")
    known = model_names()
    if model not in known:
        raise HarnessError(unknown_name_message("model (--model)", model, known))
    if pretrained in ("none", ""):
        return ModelSource(model, None, "none")
    if pretrained in SHIPPED_WEIGHTS:
        return _local_dir(SHIPPED_WEIGHTS[pretrained], "shipped")
    if pretrained in TRAINED_TEACHERS:
        folder = trained_teacher_dir(pretrained)
        if not (folder / "open_clip_config.json").is_file():
            raise HarnessError(
                f"--pretrained {pretrained}: no teacher at {folder} yet; make it with: "
                f"{TRAINED_TEACHERS[pretrained][1]} (or set {HOME_ENV}, or give --pretrained DIR)"
            )
        return _local_dir(folder, "trained")
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return _local_dir(path.absolute(), "local-dir")
    if path.is_file():
        return ModelSource(model, str(path.absolute()), "file", str(path.absolute()))
    if os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
        raise HarnessError(f"--pretrained {pretrained}: no such checkpoint file or directory")
    import open_clip  # the tag table lives in open_clip's code

    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        raise HarnessError(unknown_name_message(f"pretrained tag for {model} (--pretrained)", pretrained, tags or ["none"]))
    return ModelSource(model, pretrained, "tag")


def _local_dir(path: Path, kind: str) -> ModelSource:
    return ModelSource(f"local-dir:{path}", None, kind, str(path))


def weights_path(source: ModelSource) -> Path | None:
    """The local file or directory holding the weights, fetched into open_clip's cache first for a tag
    or a hub model (the same cache open_clip then loads from). None for random weights."""
    if source.path is not None:
        return Path(source.path)
    if source.kind == "none":
        return None
    try:
        if source.kind == "tag":
            import open_clip

            return Path(open_clip.download_pretrained(open_clip.get_pretrained_cfg(source.model_name, source.pretrained)))
        from huggingface_hub import snapshot_download

        repo = source.model_name.removeprefix("hf-hub:")
        return Path(snapshot_download(repo, allow_patterns=list(WEIGHT_FILES)))
    except Exception as exc:  # offline, no such repo, no access: one line naming the weights
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        name = source.model_name if source.kind == "hf-hub" else f"{source.model_name} {source.pretrained}"
        raise HarnessError(f"cannot fetch the weights of {name} to hash them: {first}") from None


def weights_sha256(source: ModelSource) -> str | None:
    """sha256 of the weights' content: the file's bytes, or for a directory the sorted (name, sha256)
    list of its weight files. Hashes are cached by (path, size, mtime), so a 4 GB checkpoint is read
    once per machine, not once per run."""
    path = weights_path(source)
    if path is None:
        return None
    if path.is_file():
        return _file_sha256(path)
    files = sorted({p for pattern in WEIGHT_FILES for p in path.glob(pattern) if p.is_file()})
    if not files:
        raise HarnessError(f"{path}: no weight files ({', '.join(WEIGHT_FILES)})")
    listing = "".join(f"{p.name}\0{_file_sha256(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns]
    cache_file = home() / "cache" / "sha256.json"
    cache = _read_json(cache_file)
    if cache.get(key, {}).get("stamp") == stamp:
        return cache[key]["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    value = digest.hexdigest()
    cache = _read_json(cache_file)  # re-read: another process may have added entries meanwhile
    cache[key] = {"stamp": stamp, "sha256": value}
    _write_json(cache_file, cache)
    return value


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    """Atomically; a cache that cannot be written (read-only home) only costs a re-hash next time."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sha256.", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
