"""Shards and manifests are readable by others on a shared cluster: their mode is 0o666 less the umask
(as for any file the user writes), not mkstemp's 0600, and they are still written atomically."""

import os
import stat

import pytest

from harness import resultfiles, rundir
from harness.store import rows_to_table
from test_report_tables import make_row


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_shard_and_manifest_modes_follow_the_umask(tmp_path, umask):
    run_dir = tmp_path / "run"
    rundir.write_manifest(run_dir, {"run_id": "run"})
    shard = resultfiles.write_shard(run_dir, "t-00000", rows_to_table([make_row("imagenet", "zeroshot", 0, True)]), "f")
    expected = 0o666 & ~umask  # 0644 under the usual 022
    assert mode(run_dir / rundir.MANIFEST) == expected
    assert mode(shard) == expected
    rundir.write_manifest(run_dir, {"run_id": "run", "finished": "now"})  # rewriting keeps the mode
    assert mode(run_dir / rundir.MANIFEST) == expected
    assert leftovers(run_dir) == [] and leftovers(shard.parent) == []
    assert rundir.read_manifest(run_dir)["finished"] == "now" and len(resultfiles.read_rows([run_dir])) == 1


def test_a_failed_write_leaves_no_temporary_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    rundir.write_manifest(run_dir, {"run_id": "run", "n": 1})
    table = rows_to_table([make_row("imagenet", "zeroshot", 0, True)])
    resultfiles.write_shard(run_dir, "t-00000", table, "f")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        rundir.write_manifest(run_dir, {"run_id": "run", "n": 2})
    with pytest.raises(OSError, match="disk full"):
        resultfiles.write_shard(run_dir, "t-00000", table, "f")
    with pytest.raises(TypeError):  # not JSON: fails while writing, before the rename
        rundir.write_manifest(run_dir, {1j: "complex keys are not JSON"})
    monkeypatch.undo()
    assert leftovers(run_dir) == [] and leftovers(run_dir / rundir.SHARDS) == []
    assert rundir.read_manifest(run_dir)["n"] == 1 and resultfiles.done_shards(run_dir) == {"t-00000"}
