"""Which runs a report reads and how their rows combine: a sample is never counted twice, the runs
read are named, unfinished ones are marked, empty ones are skipped, a table without its tasks fails."""

import dataclasses

import pytest
from typer.testing import CliRunner

from harness import resultfiles, rundir
from harness.errors import HarnessError
from harness.report.accuracy import cells
from harness.report.inputs import read_report_input
from harness.store import rows_to_table
from test_report_tables import fixture_rows, make_row


def _run(root, name, rows, started="2026-01-01T00:00:00", **manifest):
    run_dir = root / name
    rundir.write_manifest(run_dir, {"run_id": name, "started": started, **manifest})
    for i in range(0, len(rows), 8):
        resultfiles.write_shard(run_dir, f"s-{i:05d}", rows_to_table(rows[i:i + 8]), "f")
    return run_dir


def _rows(task, run_id, n=6):
    return [dataclasses.replace(make_row(task, m, i, i % 2 == 0), run_id=run_id) for m in ("zeroshot", "apm") for i in range(n)]


def test_two_runs_of_the_same_samples_are_side_by_side_never_pooled(tmp_path):
    a = _run(tmp_path, "run-a", _rows("imagenet", "run-a"))
    b = _run(tmp_path, "run-b", _rows("imagenet", "run-b")[:9])  # an interrupted twin
    read = read_report_input([a, b], tmp_path)
    long = cells(read.rows)
    assert sorted(zip(long["run"], long["method"], long["n"])) == [
        ("run-a", "apm", 6), ("run-a", "zeroshot", 6), ("run-b", "apm", 3), ("run-b", "zeroshot", 6)]
    assert any("not pooled" in note for note in read.notes)


def test_disjoint_runs_are_pooled(tmp_path):
    a = _run(tmp_path, "run-a", _rows("imagenet", "run-a"))
    b = _run(tmp_path, "run-b", _rows("imagenet-a", "run-b"))
    read = read_report_input([a, b], tmp_path)
    assert set(read.rows.query("SELECT DISTINCT run FROM rows")["run"]) == {""}
    assert any("pooled" in note for note in read.notes)
    assert len(cells(read.rows)) == 4  # 2 methods x 2 tasks, one line each


def test_the_default_is_the_newest_run_with_rows_and_unfinished_runs_are_marked(tmp_path):
    _run(tmp_path, "old", _rows("imagenet", "old"), started="2026-01-01T00:00:00", samples_total=10)
    (tmp_path / "new" / "shards").mkdir(parents=True)
    rundir.write_manifest(tmp_path / "new", {"run_id": "new", "started": "2026-02-01T00:00:00"})
    read = read_report_input(None, tmp_path)
    assert [r.run_dir.name for r in read.runs] == ["old"]
    assert "Skipped 1 newer run(s)" in " ".join(read.notes)
    assert "NOT FINISHED: 4 of 10 samples missing" in read.notes[0] and str(tmp_path / "old") in read.notes[0]
    with pytest.raises(HarnessError, match="no finished shard yet"):
        read_report_input([tmp_path / "new"], tmp_path)


def test_cli_report_names_the_runs_and_refuses_a_table_without_its_tasks(tmp_path):
    import cli

    run_dir = _run(tmp_path, "run-a", _rows("synthetic", "run-a"), samples_total=6, shards_total=2)
    runner = CliRunner()
    plain = runner.invoke(cli.app, ["report", str(run_dir)])
    assert plain.exit_code == 0 and f"note: Read: {run_dir} (12 rows, 6 samples; finished)" in plain.stderr
    table = runner.invoke(cli.app, ["report", str(run_dir), "--table", "natural-shift"])
    assert table.exit_code != 0 and "--table natural-shift: none of its tasks" in str(table.exception)
    good = _run(tmp_path, "run-b", fixture_rows())
    text = runner.invoke(cli.app, ["report", str(good), "--table", "natural-shift"]).output
    assert f"Read: {good}" in text  # the paper table says what it read in its notes
