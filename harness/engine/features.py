"""The feature cache (`--feature-cache DIR`): the frozen teacher's image embeddings, written once per
canonical shard (the shards `plan_shards` cuts: the task's order and --shard-size) and read by every
method that needs nothing else, so 100 streams of an online method cost one pass of the image tower
and 100 replays, and a new training-free method can be scored on an earlier run's samples without
the teacher.

An embedding depends on the whole batch it was computed in (kernels tile a batch differently), so
every embedding of a run that uses the cache comes from the same canonical batches, read or made: the
rows do not depend on what was cached before, on the worker count or on the stream order. A cache
file's name is a hash of everything its embeddings depend on: the teacher (architecture, weights'
sha256, precision), the device type and torch's version, deterministic kernels, the task (name,
version, data options, the run seed that draws a --limit subset) and the shard; the file holds the
sample ids, the content hashes of their images and the reasons of those that could not be read, and
a sha256 over its tensors, checked on every read (a damaged file is made again). On a cluster, DIR
must be a folder every node sees."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors

from harness.config import RunConfig
from harness.engine.shards import Shard, task_key
from harness.engine.stepping import save_signed
from harness.state_files import check_tensors, header_metadata, write_bytes_atomic
from tasks.base import Task

KEY = "apm_bench.feature_key"
SAMPLES = "apm_bench.samples"


@dataclass(frozen=True)
class Features:
    """A canonical shard's embeddings: (n, D) for the samples that loaded, and why the others did not."""

    ids: tuple[str, ...]
    hashes: tuple[str, ...]
    embeddings: torch.Tensor
    failed: dict[str, str]


def feature_key(config: RunConfig, task: Task, shard_id: str) -> str:
    teacher = config.teacher
    payload = {"model": teacher.model, "pretrained": teacher.pretrained, "sha256": teacher.weights_sha256,
               "precision": teacher.precision, "device": config.device_type, "torch": torch.__version__,
               "deterministic": config.deterministic, "task": task.name, "version": task.version,
               "data": asdict(config.data), "seed": config.sample_seed if config.data.limit else None,
               "shard_size": config.shard_size, "shard": shard_id,
               **({"attack": config.attack.label, "attack_seed": config.seed} if config.attack else {})}  # its start
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def feature_path(root: Path, task: Task, key: str) -> Path:
    return root / task_key(task.name) / f"{key[:32]}.safetensors"


def read_features(root: Path, config: RunConfig, task: Task, shard: Shard, device: torch.device) -> Features | None:
    """The shard's cached features, or None when absent or failing its check (it is then made again)."""
    key = feature_key(config, task, shard.shard_id)
    path = feature_path(root, task, key)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if check_tensors(data, {KEY: key}) is not None:
        return None
    meta = json.loads(header_metadata(data)[SAMPLES])
    embeddings = load_tensors(data)["embeddings"].to(device)
    return Features(tuple(meta["ids"]), tuple(meta["hashes"]), embeddings, dict(meta["failed"]))


def write_features(root: Path, config: RunConfig, task: Task, shard: Shard, features: Features) -> None:
    """Atomic: written under a temporary name and renamed; two workers making the same shard write the
    same bytes, and either rename wins."""
    key = feature_key(config, task, shard.shard_id)
    meta = {KEY: key, SAMPLES: json.dumps({"ids": features.ids, "hashes": features.hashes, "failed": features.failed})}
    write_bytes_atomic(feature_path(root, task, key), save_signed({"embeddings": features.embeddings.float()}, meta))
