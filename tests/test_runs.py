"""`apm-bench runs`: one line per run under the results folder, newest first, from hand-written manifests
and tiny shards; progress comes from the Parquet footers (no table is read)."""

import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from harness import resultfiles, rundir
from harness.report.runs import HEADERS, list_runs, render_runs
from harness.store import rows_to_table
from test_report_tables import make_row


def manifest(run_id, started, methods, shards_total, suite=None, failed=None, **extra):
    return {"run_id": run_id, "fingerprint": "f", "started": started, "finished": None,
            "failed_shards": failed or {}, "shards_total": shards_total,
            "config": {"tasks": ["synthetic"], "methods": list(methods), "suite": suite,
                       "teacher": {"model": "apm-mini", "pretrained": "synthetic-teacher"}}, **extra}


def shard(run_dir, shard_id, methods, samples):
    rows = [make_row("synthetic", m, i, True) for i in samples for m in methods]
    resultfiles.write_shard(run_dir, shard_id, rows_to_table(rows), "f")


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    old = root / "smoke-old"  # an older manifest without samples_total: progress in shards
    rundir.write_manifest(old, manifest("smoke-old", "2026-01-02T10:00:00+00:00", ("zeroshot", "ensemble", "apm"), 3,
                                       suite="smoke"))
    shard(old, "synthetic-00000", ("zeroshot", "ensemble", "apm"), range(2))
    shard(old, "synthetic-00001", ("zeroshot", "ensemble", "apm"), range(2, 4))
    new = root / "run-new"  # samples_total recorded; one shard failed, one not yet run
    rundir.write_manifest(new, manifest("run-new", "2026-01-03T09:00:00+00:00", ("zeroshot", "apm"), 3,
                                       failed={"synthetic-00001": "worker died"}, samples_total=10))
    shard(new, "synthetic-00000", ("zeroshot", "apm"), range(4))
    resumed = root / "resumed"  # failed once, finished on resume: not counted as failed
    rundir.write_manifest(resumed, manifest("resumed", "2026-01-01T08:00:00+00:00", ("zeroshot",), 1,
                                           failed={"synthetic-00000": "oom"}, samples_total=2))
    shard(resumed, "synthetic-00000", ("zeroshot",), range(2))
    (root / "not-a-run").mkdir()  # no manifest: not listed
    return root


def cells(text: str) -> list[list[str]]:
    lines = text.splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[:1] + lines[2:]]  # without the --- rule


def test_records_newest_first_with_progress(results):
    records = list_runs(results)
    assert [r.run_id for r in records] == ["run-new", "smoke-old", "resumed"]
    new, old, resumed = records
    assert (new.samples_done, new.samples_total, new.shards_finished, new.shards_unfinished, new.shards_failed) == (
        4, 10, 1, 1, 1)
    assert (old.rows, old.samples_total, old.shards_finished, old.shards_unfinished, old.shards_failed) == (
        12, None, 2, 1, 0)
    assert (resumed.shards_finished, resumed.shards_failed, resumed.shards_unfinished) == (1, 0, 0)
    assert old.suite == "smoke" and new.suite is None and new.teacher == "apm-mini/synthetic-teacher"


def test_rendered_table(results):
    table = cells(render_runs(list_runs(results), results))
    assert table == [
        list(HEADERS),
        ["run-new", "-", "apm-mini/synthetic-teacher", "zeroshot,apm", "4/10", "1", "1", "1",
         "2026-01-03T09:00:00+00:00"],
        ["smoke-old", "smoke", "apm-mini/synthetic-teacher", "zeroshot,ensemble,apm", "2/3 shards", "2", "1", "0",
         "2026-01-02T10:00:00+00:00"],
        ["resumed", "-", "apm-mini/synthetic-teacher", "zeroshot", "2/2", "1", "0", "0", "2026-01-01T08:00:00+00:00"],
    ]


def test_only_footers_are_read(results, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a table was loaded")

    monkeypatch.setattr(pq, "read_table", forbidden)
    monkeypatch.setattr(pq.ParquetFile, "read", forbidden)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", forbidden)
    monkeypatch.setattr(resultfiles, "read_rows", forbidden)
    assert [r.rows for r in list_runs(results)] == [8, 12, 2]


def test_a_damaged_run_is_named_and_does_not_hide_the_others(results):
    (results / "broken").mkdir()
    (results / "broken" / rundir.MANIFEST).write_text("{not json")
    (results / "smoke-old" / rundir.SHARDS / "synthetic-00002.parquet").write_bytes(b"not parquet")
    text = render_runs(list_runs(results), results)
    assert [row[0] for row in cells(text.split("\n" + str(results))[0])[1:]] == ["run-new", "smoke-old", "resumed"]
    assert f"{results / 'broken'}: {results / 'broken' / rundir.MANIFEST} is not an apm-bench manifest: not JSON" in text
    assert f"{results / 'smoke-old'}: unreadable result file synthetic-00002.parquet" in text


def test_cli_runs(results, tmp_path):
    import cli

    runner = CliRunner()
    done = runner.invoke(cli.app, ["runs", "--out-root", str(results)])
    assert done.exit_code == 0, done.output
    assert [row[0] for row in cells(done.stdout)] == ["run", "run-new", "smoke-old", "resumed"]
    empty = runner.invoke(cli.app, ["runs", "--out-root", str(tmp_path / "none")])
    assert empty.exit_code == 0
    assert empty.stdout == f"no runs under {tmp_path / 'none'}/ (start one with `apm-bench run`)\n"


def test_a_finished_run_whose_shards_are_merged_into_a_segment_counts_them(results):
    old = results / "smoke-old"
    before = next(r for r in list_runs(results) if r.run_id == "smoke-old")
    resultfiles.compact(old, ["synthetic-00000", "synthetic-00001"], "synthetic", "f")
    assert not list((old / rundir.SHARDS).glob("*.parquet"))  # the shards now live in one segment
    after = next(r for r in list_runs(results) if r.run_id == "smoke-old")
    assert (after.rows, after.shards_finished, after.shards_unfinished) == (before.rows, 2, 1) == (12, 2, 1)
