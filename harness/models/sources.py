"""Where a teacher's weights come from, and which weights they are.

`--model/--pretrained` map onto open_clip's own schemes (a tag, `hf-hub:ORG/REPO`, a checkpoint file,
a local open_clip directory), plus two kinds of names: weights shipped in the package and teachers
that `apm-bench teacher train` writes to a fixed, documented place. Names, not paths, go into the
config, so a fingerprint does not depend on where the package or the home folder lies; the content
hash of the weights (`weights_sha256`) goes in beside them, so retraining a teacher in place changes
the fingerprint instead of mixing two sets of weights in one run.

Nothing here imports torch or open_clip, except to fetch the files of a pretrained tag (its table is
read from open_clip's source as data: harness/openclip_meta.py). Before anything is fetched the hub is
asked whether it answers at all (harness/models/hub.py), so a machine without network stops in
seconds with one line, or uses the copy already in the cache."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from harness.errors import HarnessError
from harness.jsoncache import read_json, write_json
from harness.models import hub
from harness.openclip_meta import model_names, pretrained_tags
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
    tags = list(pretrained_tags().get(model, {}))
    if pretrained not in tags:
        raise HarnessError(unknown_name_message(f"pretrained tag for {model} (--pretrained)", pretrained, tags or ["none"]))
    return ModelSource(model, pretrained, "tag")


def _local_dir(path: Path, kind: str) -> ModelSource:
    return ModelSource(f"local-dir:{path}", None, kind, str(path))


HF_WEIGHTS = "open_clip_pytorch_model.bin"
HF_SAFE_WEIGHTS = "open_clip_model.safetensors"
"""open_clip's default weight file names in a hub repo (open_clip/constants.py)."""
CLIP_CACHE = Path("~/.cache/clip")
"""Where open_clip keeps weights fetched from a tag's URL (tags without a hub copy)."""


@dataclass(frozen=True)
class RemoteWeights:
    """Where a tag's or a hub model's weights are fetched from, and where the cache would hold them."""

    name: str
    """As a message names them: `ViT-B-16 openai`, `hf-hub:ORG/REPO`."""
    url: str
    """The server that is asked: the hub (HF_ENDPOINT), or a tag's own URL."""
    repo: str | None = None
    files: tuple[str, ...] = ()
    """A tag's candidate files in `repo`, in open_clip's order (safetensors first); empty for a whole
    hub model (its snapshot)."""

    def cached(self) -> Path | None:
        if self.repo is None:
            path = (CLIP_CACHE / Path(urlsplit(self.url).path).name).expanduser()
            return path if path.is_file() else None
        if self.files:
            return hub.cached_file(self.repo, self.files)
        return hub.cached_snapshot(self.repo, WEIGHT_FILES)


def remote_weights(source: ModelSource) -> RemoteWeights | None:
    """None for weights that are local (or none)."""
    if source.kind == "hf-hub":
        return RemoteWeights(source.model_name, hub.endpoint(), source.model_name.removeprefix("hf-hub:"))
    if source.kind != "tag":
        return None
    entry = pretrained_tags()[source.model_name][str(source.pretrained)]
    name = f"{source.model_name} {source.pretrained}"
    if not entry.hf_hub:  # open_clip prefers the hub copy where a tag has one
        return RemoteWeights(name, entry.url)
    repo, filename = os.path.split(entry.hf_hub)  # `ORG/REPO/` means open_clip's default file, as open_clip reads it
    filename = filename or HF_WEIGHTS
    safe = (HF_SAFE_WEIGHTS,) if filename == HF_WEIGHTS else (
        (filename.rsplit(".", 1)[0] + ".safetensors",) if filename.endswith((".bin", ".pth")) else ())
    return RemoteWeights(name, hub.endpoint(), repo, (*safe, filename))


def weights_path(source: ModelSource) -> Path | None:
    """The local file or directory holding the weights, fetched into open_clip's cache first for a tag
    or a hub model (the same cache open_clip then loads from). None for random weights.

    The hub is asked first whether it answers at all (a few seconds at most): when it does not, or
    HF_HUB_OFFLINE is set, the cached copy is used, or one line says the weights cannot be had. When
    the cache serves because the hub did not answer, HF_HUB_OFFLINE=1 is set for the processes this one
    starts (a local Ray instance's workers), which would otherwise each wait out the hub's retries."""
    if source.path is not None:
        return Path(source.path)
    remote = remote_weights(source)
    if remote is None:
        return None
    if hub.offline():
        return _from_cache(remote, f"{hub.OFFLINE_ENV} is set")
    why = hub.unreachable(remote.url)
    if why is not None:
        found = _from_cache(remote, f"{hub.host(remote.url)} is unreachable ({why})")
        os.environ[hub.OFFLINE_ENV] = "1"
        return found
    try:
        if source.kind == "tag":
            import open_clip

            return Path(open_clip.download_pretrained(open_clip.get_pretrained_cfg(source.model_name, source.pretrained)))
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(remote.repo, allow_patterns=list(WEIGHT_FILES)))
    except Exception as exc:  # no such repo, no access, a broken download: one line naming the weights
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HarnessError(f"cannot fetch the weights of {remote.name} to hash them: {first}") from None


def _from_cache(remote: RemoteWeights, why: str) -> Path:
    found = remote.cached()
    if found is not None:
        return found
    where = CLIP_CACHE if remote.repo is None else hub.cache_dir()
    raise HarnessError(
        f"cannot fetch the weights of {remote.name}: {why}, and they are not in the cache ({where}); give local "
        "weights instead (a checkpoint file or an open_clip model folder), or fetch them once where the hub "
        f"answers (then {hub.OFFLINE_ENV}=1 uses the cache without asking the network)")


def weights_status(source: ModelSource) -> tuple[bool, str]:
    """(whether a run would find them, in a few words): what `apm-bench plan` says of a run's weights,
    fetching nothing."""
    if source.kind == "none":
        return True, "random weights"
    remote = remote_weights(source)
    if remote is None:
        return True, f"{source.kind}, {source.path}"
    if remote.cached() is not None:
        return True, "in the cache"
    if hub.offline():
        return False, f"not in the cache, and {hub.OFFLINE_ENV} is set: the run would stop"
    why = hub.unreachable(remote.url)
    if why is not None:
        return False, f"not in the cache, and {hub.host(remote.url)} is unreachable ({why}): the run would stop"
    return True, f"not in the cache: fetched from {hub.host(remote.url)} when the run starts"


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
    cache = read_json(cache_file)
    if cache.get(key, {}).get("stamp") == stamp:
        return cache[key]["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    value = digest.hexdigest()
    cache = read_json(cache_file)  # re-read: another process may have added entries meanwhile
    cache[key] = {"stamp": stamp, "sha256": value}
    write_json(cache_file, cache)
    return value
