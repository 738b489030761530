"""Reports computed by the query engine over the run's files equal the same report over the rows in
memory, and files written before a column existed still report (the column reads as null)."""

import pyarrow.parquet as pq

from harness import resultfiles, rundir
from harness.report.inputs import read_report_input
from harness.report.render import render, render_table
from harness.store import rows_to_table
from test_report_tables import fixture_rows


def _run(tmp_path):
    run_dir = tmp_path / "run"
    rows = fixture_rows()
    config = {"tasks": list(dict.fromkeys(r.task for r in rows)), "methods": list(dict.fromkeys(r.method for r in rows)),
              "teacher": {"model": rows[0].model, "pretrained": rows[0].pretrained}}
    rundir.write_manifest(run_dir, {"run_id": "run", "started": "2026-01-01T00:00:00", "config": config})
    for i in range(0, len(rows), 7):
        resultfiles.write_shard(run_dir, f"s-{i:05d}", rows_to_table(rows[i:i + 7]), "f")
    return run_dir


def test_files_and_memory_give_the_same_reports(tmp_path):
    run_dir = _run(tmp_path)
    files = read_report_input([run_dir], tmp_path).rows  # the files, ordered by the run's config
    frame = resultfiles.read_rows([run_dir])
    for fmt in ("markdown", "csv", "json"):
        assert render(files, fmt) == render(frame, fmt)
        assert render_table(files, "natural-shift", fmt) == render_table(frame, "natural-shift", fmt)


def test_files_without_the_newer_columns_still_report(tmp_path):
    run_dir = _run(tmp_path)
    old = ["weights_sha256", "n_classes", "protocol", "template_set", "flops", "peak_memory_bytes"]
    for path in resultfiles.row_files(run_dir):
        table = pq.read_table(path)
        pq.write_table(table.drop(old), path)
    (run_dir / rundir.RECORDS).unlink()  # files of a run from before records were kept
    read = read_report_input([run_dir], tmp_path)
    text = render_table(read.rows, "natural-shift", "markdown")
    assert "FLOPs and peak memory not recorded" in text
    assert render(read.rows, "csv") == render(resultfiles.read_rows([run_dir]), "csv")
