"""Finished shards merged into segment files: few files for a large run, nothing lost or duplicated
when a compaction is cut short, and resume still knows every finished shard."""

import pyarrow.parquet as pq

from harness import resultfiles, rundir
from harness.engine import work
from harness.engine.shards import Shard
from harness.report.accuracy import cells
from harness.report.inputs import read_report_input
from harness.store import rows_to_table
from test_report_tables import make_row


def _segments(run_dir):
    return sorted((run_dir / rundir.SEGMENTS).glob("*.parquet"))


def _loose(run_dir):
    return sorted(p.stem for p in (run_dir / rundir.SHARDS).glob("*.parquet"))


def _shards(run_dir, count=10, per=3, task="imagenet"):
    rundir.write_manifest(run_dir, {"run_id": run_dir.name, "started": "2026-01-01T00:00:00", "shards_total": count,
                                   "fingerprint": "f"})
    shards = []
    for k in range(count):
        shard = Shard(f"{task}-{k:05d}", task, ())
        rows = [make_row(task, "zeroshot", per * k + i, i % 2 == 0) for i in range(per)]
        resultfiles.write_shard(run_dir, shard.shard_id, rows_to_table(rows), "f")
        shards.append(shard)
    return shards


def test_segments_replace_shard_files_and_keep_every_row(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shards = _shards(run_dir)
    before = cells(read_report_input([run_dir], tmp_path).rows)
    monkeypatch.setattr(work, "SEGMENT_SHARDS", 4)
    compactor = work.Compactor(run_dir, shards, "f", resultfiles.verify(run_dir, "f").files)
    assert sum(len(v) for v in compactor.loose.values()) == 10  # finished by an earlier session: picked up
    compactor.loose.clear()
    for shard in shards:
        compactor.finished(shard)  # segments of 4 as shards finish
    assert len(_segments(run_dir)) == 2 and len(_loose(run_dir)) == 2
    compactor.flush()
    assert len(_segments(run_dir)) == 3 and not _loose(run_dir)
    verdict = resultfiles.verify(run_dir, "f")
    assert verdict.shards == {s.shard_id for s in shards} and not verdict.bad
    assert sorted(pq.ParquetFile(p).metadata.num_rows for p in _segments(run_dir)) == [6, 12, 12]
    assert sorted(len(resultfiles.segment_shards(p)) for p in _segments(run_dir)) == [2, 4, 4]
    after = cells(read_report_input([run_dir], tmp_path).rows)
    assert after.equals(before)


def test_a_compaction_cut_short_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shards = _shards(run_dir, count=4)
    monkeypatch.setattr(resultfiles.Path, "unlink", lambda self, missing_ok=False: None)  # the crash: no shard deleted
    resultfiles.compact(run_dir, [s.shard_id for s in shards[:3]], "imagenet", "f")
    monkeypatch.undo()
    assert len(_loose(run_dir)) == 4  # segment in place and recorded, its shards still there
    verdict = resultfiles.verify(run_dir, "f")
    assert [p.name for p in verdict.files][1:] == ["imagenet-00003.parquet"] and not verdict.bad
    assert read_report_input([run_dir], tmp_path).runs[0].rows == 12  # each row once
    assert verdict.shards == {s.shard_id for s in shards}
    resultfiles.tidy(run_dir, verdict)  # what the next run or resume does first
    assert _loose(run_dir) == ["imagenet-00003"]
