"""Run directories that survive storage faults: every result file verified against its record; a
truncated, emptied, shortened or foreign file is set aside and its shards run again; a full disk stops
the run with one line and leaves no temporary file; each case ends in rows equal to an undisturbed run's."""

import errno
import re
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import cli
from harness import resultfiles, rundir
from harness.config import ExecConfig, RunConfig
from harness.engine import runner
from harness.engine.shards import task_key
from harness.errors import HarnessError, StorageError
from harness.report.inputs import read_report_input

SHARD = task_key("synthetic:2")
CONFIG = RunConfig(tasks=("synthetic:2",), methods=("zeroshot", "ensemble"), shard_size=3)  # 24 samples, 8 shards
RESULT = ["task", "sample_id", "method", "prediction", "top5", "confidence", "seed", "error"]
DAMAGE = {  # shard -> (what happens to its file, the reason verify gives)
    f"{SHARD}-00001": ("truncated", "not a readable Parquet file"),  # an interrupted copy
    f"{SHARD}-00002": ("zero-byte", "empty file (0 bytes)"),
    f"{SHARD}-00004": ("rows-missing", "5 rows, 6 recorded"),  # a valid Parquet file, footer and all
    f"{SHARD}-00006": ("other-run", "from another run"),  # the same shard of another run, copied in
}


def _run(root, run_id, config=CONFIG):
    return runner.run(config, ExecConfig(out_root=str(root), run_id=run_id, workers=1, progress=False))


def _resume(run_dir):
    return runner.run(RunConfig.from_dict(rundir.read_manifest(run_dir)["config"]),
                      ExecConfig(out_root=str(run_dir.parent), run_id=run_dir.name, workers=1, progress=False))


def _rows(run_dir) -> pd.DataFrame:
    rows = resultfiles.read_rows([run_dir]).sort_values(["sample_id", "method"]).reset_index(drop=True)
    return rows[RESULT].assign(top5=rows["top5"].map(list))


def _leftovers(run_dir) -> list[str]:
    return [p.name for p in run_dir.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory):
    """An undisturbed run: its directory and its rows."""
    root = tmp_path_factory.mktemp("reference")
    _run(root, "ref")
    return root / "ref", _rows(root / "ref")


def _damage(path, kind):
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "rows-missing":
        pq.write_table(pq.read_table(path).slice(1), path)
    else:  # rows and footer of a run with another fingerprint
        table = pq.read_table(path)
        other = table.set_column(table.schema.get_field_index("fingerprint"), "fingerprint",
                                 pa.array(["0" * 16] * table.num_rows))
        pq.write_table(other.replace_schema_metadata({resultfiles.FINGERPRINT_KEY: b"0" * 16}), path)


def test_damaged_shards_are_found_refused_and_repaired(tmp_path, reference, monkeypatch):
    monkeypatch.setattr(runner.Compactor, "flush", lambda self: None)  # shards left unmerged, as an interrupted run
    _run(tmp_path, "run")
    monkeypatch.undo()
    run_dir = tmp_path / "run"
    for shard, (kind, _) in DAMAGE.items():
        _damage(resultfiles.shard_path(run_dir, shard), kind)
    stray = run_dir / rundir.SHARDS / "zz-stray.parquet"  # a file no shard of the run is in: set aside, nothing re-run
    shutil.copy(resultfiles.shard_path(run_dir, f"{SHARD}-00000"), stray)
    verdict = resultfiles.verify(run_dir, rundir.read_manifest(run_dir)["fingerprint"])
    assert {p.stem: r.split(" (")[0] for p, r in verdict.bad} == {
        **{s: r.split(" (")[0] for s, (_, r) in DAMAGE.items()}, "zz-stray": "not recorded as finished"}
    assert verdict.shards.isdisjoint(DAMAGE) and len(verdict.shards) == 4
    first = resultfiles.shard_path(run_dir, f"{SHARD}-00001")
    with pytest.raises(HarnessError, match=re.escape(f"{first}: not a readable Parquet file") + ".*"
                       + re.escape(f"(and 4 more file(s)); repair it with: apm-bench run --resume {run_dir}")):
        read_report_input([run_dir], tmp_path)
    notes = read_report_input([run_dir], tmp_path, allow_incomplete=True).notes
    assert any(n.startswith(f"INCOMPLETE: {run_dir} has 5 result file(s)") for n in notes)
    summary = _resume(run_dir)
    assert sorted(line.split(":")[0] for line in summary.repaired) == sorted(
        [f"shards/{s}.parquet" for s in DAMAGE] + ["shards/zz-stray.parquet"])
    assert summary.rerun == 4 and summary.rows_written == 4 * 6  # 4 shards x 3 samples x 2 methods
    assert not resultfiles.verify(run_dir).bad
    pd.testing.assert_frame_equal(_rows(run_dir), reference[1], check_exact=True)
    assert len(list((run_dir / rundir.QUARANTINE).iterdir())) == 5  # kept for inspection, never read


def test_a_damaged_segment_is_run_again(tmp_path, reference):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    [segment] = sorted((run_dir / rundir.SEGMENTS).glob("*.parquet"))
    segment.write_bytes(segment.read_bytes()[:-100])
    done = CliRunner().invoke(cli.app, ["verify", str(run_dir)])
    assert done.exit_code == 1 and f"{segment}: not a readable Parquet file" in done.stderr
    assert _resume(run_dir).rows_written == 48
    pd.testing.assert_frame_equal(_rows(run_dir), reference[1], check_exact=True)
    assert CliRunner().invoke(cli.app, ["verify", str(run_dir)]).exit_code == 0


def _full_disk_on(monkeypatch, module, name, call):
    """The `call`-th call of module.name raises ENOSPC, as a full disk does mid-write."""
    real, calls = getattr(module, name), []

    def fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise OSError(errno.ENOSPC, "No space left on device", str(args[1] if len(args) > 1 else "file"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fail)


def test_a_full_disk_during_a_shard_write_stops_with_one_line(tmp_path, reference, monkeypatch):
    _full_disk_on(monkeypatch, resultfiles.pq, "write_table", 3)
    with pytest.raises(StorageError) as stopped:
        _run(tmp_path, "run")
    message = str(stopped.value)
    run_dir = tmp_path / "run"
    assert "\n" not in message and "No space left on device" in message
    assert "the 2/8 finished shards are kept" in message and f"apm-bench run --resume {run_dir}" in message
    assert _leftovers(run_dir) == [] and len(resultfiles.verify(run_dir).shards) == 2
    monkeypatch.undo()
    _resume(run_dir)
    pd.testing.assert_frame_equal(_rows(run_dir), reference[1], check_exact=True)


def test_a_full_disk_during_the_manifest_write_stops_with_one_line(tmp_path, reference, monkeypatch):
    real = rundir.json.dump

    def full_at_the_end(manifest, fh, **kwargs):  # the writes at the start succeed, the one recording the end fails
        if manifest.get("finished"):
            raise OSError(errno.ENOSPC, "No space left on device", "manifest.json")
        return real(manifest, fh, **kwargs)

    monkeypatch.setattr(rundir.json, "dump", full_at_the_end)
    with pytest.raises(StorageError, match="cannot write .*No space left on device; the 8/8 finished shards"):
        _run(tmp_path, "run")
    run_dir = tmp_path / "run"
    assert _leftovers(run_dir) == [] and rundir.read_manifest(run_dir)["finished"] is None
    monkeypatch.undo()
    _resume(run_dir)  # nothing left to run: it only records the end
    assert rundir.read_manifest(run_dir)["finished"] is not None
    pd.testing.assert_frame_equal(_rows(run_dir), reference[1], check_exact=True)
