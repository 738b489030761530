"""An unfinished run is visible in the body of every format (issue #23, 2): a marker with how many
samples it misses in markdown, LaTeX and HTML, a `finished` flag and the missing count per cell in CSV
and JSON; an Average is left blank unless every column it averages is complete."""

import dataclasses
import io
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from harness import resultfiles, rundir
from harness.store import rows_to_table
from test_report_tables import make_row

FORMATS = ("markdown", "latex", "html", "csv", "json")
TASKS = ("imagenet", "imagenet-a")
MARKER = "not finished: 4 of 10 samples missing"


def _run(root, name, rows, **manifest):
    run_dir = root / name
    rundir.write_manifest(run_dir, {"run_id": name, "started": "2026-01-01T00:00:00", **manifest})
    for i in range(0, len(rows), 8):
        resultfiles.write_shard(run_dir, f"s-{i:05d}", rows_to_table(rows[i:i + 8]), "f")
    return run_dir


def _rows(run_id, tasks=TASKS, samples=range(3)):
    return [dataclasses.replace(make_row(t, m, i, i % 2 == 0), run_id=run_id)
            for t in tasks for m in ("zeroshot", "apm") for i in samples]


def interrupted(tmp_path):
    """Two tasks of 5 samples each planned; 3 of each done: 4 of 10 missing."""
    return _run(tmp_path, "cut", _rows("cut"), samples_total=10, shards_total=4)


def report(run_dirs, *args):
    done = CliRunner().invoke(__import__("cli").app, ["report", *map(str, run_dirs), *args])
    assert done.exit_code == 0, done.output
    return done.stdout


def records(fmt: str, text: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
    doc = json.loads(text)
    return pd.DataFrame(doc["cells"] if isinstance(doc, dict) else doc)


@pytest.mark.parametrize("table", [None, "natural-shift"])
def test_every_format_says_the_run_is_not_finished_in_its_body(tmp_path, table):
    run_dir = interrupted(tmp_path)
    extra = ["--table", table] if table else []
    for fmt in FORMATS:
        text = report([run_dir], "--format", fmt, *extra)
        if fmt in ("csv", "json"):
            found = records(fmt, text)
            measured = found[found["kind"] == "measured"] if "kind" in found else found
            assert "finished" in found and not measured["finished"].astype(bool).any(), fmt
            assert measured["status"].str.lower().str.contains(MARKER).all(), fmt
        else:
            assert MARKER in text.lower(), fmt
            assert f"apm-bench run --resume {run_dir}" in text.replace("\\_", "_").replace("\\\\", "/"), fmt


def test_json_of_a_paper_layout_says_so_at_the_top(tmp_path):
    doc = json.loads(report([interrupted(tmp_path)], "--format", "json", "--table", "natural-shift"))
    assert doc["finished"] is False and MARKER in doc["unfinished"][0].lower()


def test_a_finished_run_has_no_marker_and_its_averages(tmp_path):
    run_dir = _run(tmp_path, "whole", _rows("whole"), samples_total=6)
    text = report([run_dir])
    assert "not finished" not in text.lower() and "66.7 [" in text.split("Average")[1]
    found = records("csv", report([run_dir], "--format", "csv"))
    assert found["finished"].all() and (found["missing"] == 0).all() and found["status"].isna().all()


def test_an_average_is_blank_unless_every_column_is_complete(tmp_path):
    run_dir = interrupted(tmp_path)
    plain = report([run_dir])
    top1 = plain.split("Top-5")[0]
    assert top1.count("- (not finished)") == 2  # zero-shot's and APM's Average, though every column has data
    doc = json.loads(report([run_dir], "--format", "json", "--table", "natural-shift"))
    averages = [c for c in doc["cells"] if c["kind"] in ("measured", "paired") and c["column"] == "average"]
    assert averages and all(c["value"] is None and c["note"] == "not finished" for c in averages)


def test_per_task_completeness_where_the_runs_say_it(tmp_path):
    """A run of one task knows that task's total; a finished run's tasks are complete. Pooled with an
    unfinished run, only that run's column is incomplete, with how many samples it misses."""
    whole = _run(tmp_path, "whole", _rows("whole", tasks=("imagenet",)), samples_total=3)
    cut = _run(tmp_path, "cut", _rows("cut", tasks=("imagenet-a",)), samples_total=5)
    found = records("csv", report([whole, cut], "--format", "csv")).set_index(["task", "method"])
    assert found.loc[("imagenet", "apm"), "finished"] and found.loc[("imagenet", "apm"), "missing"] == 0
    assert not found.loc[("imagenet-a", "apm"), "finished"] and found.loc[("imagenet-a", "apm"), "missing"] == 2
    assert found.loc[("imagenet-a", "apm"), "status"] == "not finished: 2 of 5 samples missing (cut)"
    assert found.loc[("imagenet", "apm"), "run"] == "whole" and found.loc[("imagenet-a", "apm"), "run"] == "cut"
    assert "- (not finished)" in report([whole, cut]).split("Top-5")[0]
