"""The devices and software a run's rows were computed with, kept in its manifest as workers report
them (each row names its environment by key). Equal fingerprints promise equal rows only on the same
GPU model and software, so a resume whose workers have another GPU model than the run was started on
is refused unless the user asks for it (--allow-other-device)."""

from __future__ import annotations

from pathlib import Path

from harness import rundir
from harness.errors import HarnessError


class Environments:
    def __init__(self, run_dir: Path, manifest: dict, allow_other_device: bool = False) -> None:
        self.run_dir = run_dir
        self.manifest = manifest
        self.known: dict[str, dict] = manifest.setdefault("environments", {})
        self.earlier_gpus = {env.get("device") for env in self.known.values() if env.get("cuda")}
        """GPU models of the sessions before this one (none for a new run, or one made on CPUs)."""
        self.allow_other_device = allow_other_device

    def seen(self, info: dict) -> None:
        """A worker loaded (or came back): record its environment in the manifest at once, so every row
        it writes can be traced even if the run stops; refuse a GPU model the run was not made on."""
        env, key = info.get("environment"), info.get("environment_id")
        if not isinstance(env, dict) or not isinstance(key, str):
            return
        gpu = env.get("device") if env.get("cuda") else None
        if gpu and self.earlier_gpus and gpu not in self.earlier_gpus and not self.allow_other_device:
            raise HarnessError(
                f"this run's rows were computed on {', '.join(sorted(self.earlier_gpus))}; a worker on "
                f"{env.get('host', '?')} has {gpu}, whose results may differ in rounding: finish the run on the "
                "same GPU model, or pass --allow-other-device to mix them (each row names its device)")
        if key not in self.known:
            self.known[key] = env
            rundir.write_manifest(self.run_dir, self.manifest)
