"""The paper layouts: golden markdown from a known Parquet fixture, numbers recomputed here independently
(accuracies, averages, bootstrap intervals, paired differences), reference rows against the CSVs."""

import csv
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness import resultfiles, rundir
from harness.errors import HarnessError
from harness.report.digest import python_digest
from harness.report.paper import build_report
from harness.report.render import render, render_table
from harness.report.stats import cell_key as content_key
from harness.report.tables import REFERENCE_DIR, TABLES, load_reference, teacher_label
from harness.store import Row, rows_to_table


# (method, task) -> outcomes of samples s0, s1, ... (None = an error row); teacher ViT-B-16/openai
OUTCOMES = {
    ("zeroshot", "imagenet"): [1, 1, 1, 0],
    ("zeroshot", "imagenet-a"): [1, 0, 0, 0],
    ("zeroshot", "imagenet-v2"): [1, 1, 0, 0],
    ("zeroshot", "imagenet-r"): [1, 1, 1, 1],
    ("zeroshot", "imagenet-sketch"): [0, 0, 0, 0],
    ("apm", "imagenet"): [1, 1, 1, 1],
    ("apm", "imagenet-a"): [1, 1, 0, 0],
    ("apm", "imagenet-v2"): [1, 0, 1, None],  # s3 failed: excluded, counted, and unpaired
    ("apm", "imagenet-r"): [1, 1, 1, 0],
    ("apm", "imagenet-sketch"): [0, 1, 0, 0, 1],  # s4 has no zero-shot partner
    ("ensemble", "imagenet"): [1, 1, 0, 1],  # the other four columns have no data
}
TASKS = ("imagenet", "imagenet-a", "imagenet-v2", "imagenet-r", "imagenet-sketch")


def make_row(task, method, i, correct, error=None, model="ViT-B-16", pretrained="openai", seconds=None, losses=()):
    return Row(
        run_id="r", fingerprint="f", code_version="c", task=task, task_version="1", data_source="disk",
        sample_id=f"s{i}", content_hash="h", label=1, n_classes=10, protocol="clip-imagenet", method=method, model=model, pretrained=pretrained,
        weights_source="tag", weights_sha256=None, seed=i, prediction=None if correct is None else int(correct), correct=correct,
        top5=[1], top5_correct=correct, confidence=0.5, prediction_before=None, n_templates=1, template_set="single",
        ttt_steps=20 if method == "apm" else 0, loss_first=None, loss_last=None, losses=list(losses),
        seconds=seconds if seconds is not None else (2.0 + i if method == "apm" else 0.01), flops=None,
        peak_memory_bytes=None, peak_memory_samples=None, device="cpu", precision="fp32",
        worker="w", error=error,
    )


def fixture_rows() -> list[Row]:
    rows = []
    for (method, task), outcomes in OUTCOMES.items():
        for i, hit in enumerate(outcomes):
            rows.append(make_row(task, method, i, None if hit is None else bool(hit),
                                 error="cannot decode" if hit is None else None))
    return rows


def write_run(tmp_path: Path, rows: list[Row], name: str = "run") -> Path:
    """A finished run of one shard (its manifest records the end, as a finished run's does)."""
    run_dir = tmp_path / name
    rundir.write_manifest(run_dir, {"run_id": name, "started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:01:00"})
    resultfiles.write_shard(run_dir, "s-00000", rows_to_table(rows), "f")
    return run_dir


@pytest.fixture
def rows(tmp_path) -> pd.DataFrame:
    return resultfiles.read_rows([write_run(tmp_path, fixture_rows())])


# --- independent recomputation ------------------------------------------------------------------

def scored(method, task):
    return [h for h in OUTCOMES.get((method, task), []) if h is not None]


def accuracy(method, task):
    values = scored(method, task)
    return 100.0 * sum(values) / len(values)


def bootstrap(values, key, resamples=1000, seed=0):
    """The documented definition: counts of each distinct value ~ Multinomial(n, frequencies), written
    out here from the numpy docs, then the 2.5/97.5 percentiles of the resampled means."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    distinct = np.unique(values)
    freq = np.array([(values == v).mean() for v in distinct])
    means = 100.0 * (rng.multinomial(len(values), freq, size=resamples) @ distinct) / len(values)
    return means, np.percentile(means, [2.5, 97.5])


def scored_ids(method, task):
    return [f"s{i}" for i, h in enumerate(OUTCOMES.get((method, task), [])) if h is not None]


def cell_key(method, task):
    """What seeds a cell's interval: its content (statistic, task, method, teacher, the digest of its
    scored sample ids, computed here with hashlib), never its label or run."""
    return content_key("top1", task, method, "ViT-B-16", "openai", python_digest(scored_ids(method, task)))


def paired_key(method, task):
    return content_key("paired", task, method, "ViT-B-16", "openai", python_digest(scored_ids(method, task)),
                       python_digest(scored_ids("zeroshot", task)))


def paired_values(method, task):
    ours = {f"s{i}": h for i, h in enumerate(OUTCOMES[(method, task)]) if h is not None}
    base = {f"s{i}": h for i, h in enumerate(OUTCOMES[("zeroshot", task)]) if h is not None}
    common = sorted(ours.keys() & base.keys())
    return [ours[s] - base[s] for s in common], len(ours.keys() ^ base.keys())


GOLDEN = """\
### Table 1: natural distribution shift, top-1 accuracy (%)

Columns 1-4 of 7:

| Method   | Teacher   | ImageNet                   | ImageNet-A              | ImageNet-V2             | ImageNet-R                 |
|----------|-----------|----------------------------|-------------------------|-------------------------|----------------------------|
| CLIP     | ViT-B/16  | 75.0 [25.0, 100.0] (n=4)   | 25.0 [0.0, 75.0] (n=4)  | 50.0 [0.0, 100.0] (n=4) | 100.0 [100.0, 100.0] (n=4) |
| Ensemble | ViT-B/16  | 75.0 [25.0, 100.0] (n=4)   | - (n=0)                 | - (n=0)                 | - (n=0)                    |
| APM      | ViT-B/16  | 100.0 [100.0, 100.0] (n=4) | 50.0 [0.0, 100.0] (n=4) | 66.7 [0.0, 100.0] (n=3) | 75.0 [25.0, 100.0] (n=4)   |

Columns 5-7 of 7:

| Method   | Teacher   | ImageNet-Sketch        | Average                  | OOD Average              |
|----------|-----------|------------------------|--------------------------|--------------------------|
| CLIP     | ViT-B/16  | 0.0 [0.0, 0.0] (n=4)   | 50.0 [35.0, 65.0] (n=20) | 43.8 [31.2, 62.5] (n=16) |
| Ensemble | ViT-B/16  | - (n=0)                | - (1/5 tasks)            | - (n=0)                  |
| APM      | ViT-B/16  | 40.0 [0.0, 80.0] (n=5) | 66.3 [47.3, 84.3] (n=20) | 57.9 [34.2, 80.4] (n=16) |"""

GOLDEN_PAIRED = """\
#### Paired difference vs CLIP (zeroshot) of the same teacher, on the same sample ids (points)

Columns 1-4 of 7:

| Method          | Teacher   | ImageNet                  | ImageNet-A                | ImageNet-V2                             | ImageNet-R                |
|-----------------|-----------|---------------------------|---------------------------|-----------------------------------------|---------------------------|
| Ensemble - CLIP | ViT-B/16  | +0.0 [-50.0, +75.0] (n=4) | - (n=0)                   | - (n=0)                                 | - (n=0)                   |
| APM - CLIP      | ViT-B/16  | +25.0 [+0.0, +75.0] (n=4) | +25.0 [+0.0, +75.0] (n=4) | +0.0 [-100.0, +100.0] (n=3, 1 unpaired) | -25.0 [-75.0, +0.0] (n=4) |

Columns 5-7 of 7:

| Method          | Teacher   | ImageNet-Sketch                       | Average                     | OOD Average                |
|-----------------|-----------|---------------------------------------|-----------------------------|----------------------------|
| Ensemble - CLIP | ViT-B/16  | - (n=0)                               | - (1/5 tasks)               | - (n=0)                    |
| APM - CLIP      | ViT-B/16  | +25.0 [+0.0, +75.0] (n=4, 1 unpaired) | +10.0 [-13.3, +36.7] (n=19) | +6.2 [-22.9, +35.4] (n=15) |

- Sample ids that did not pair (left out of the differences): APM ViT-B/16 imagenet-v2: 0 only in apm, 1 only in zeroshot; APM ViT-B/16 imagenet-sketch: 1 only
  in apm, 0 only in zeroshot.
"""

def test_golden_markdown_for_table_1(rows):
    text = render_table(rows, "natural-shift", "markdown", reference=False)
    assert text.startswith(GOLDEN + "\n\n- Cells: top-1 accuracy %")


def test_golden_cells_agree_with_independent_computation(rows):
    """Every number in GOLDEN: accuracy, interval and n recomputed from OUTCOMES, not read from the code.
    The table comes in parts of consecutive columns (under 160 characters each): joined here by label."""
    lines = [line for line in GOLDEN.splitlines() if line.startswith("| ") and "Method" not in line]
    table: dict[str, list[str]] = {}
    for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines):
        table.setdefault(cells[0], []).extend(cells[2:])
    for label, method in (("CLIP", "zeroshot"), ("APM", "apm"), ("Ensemble", "ensemble")):
        replicates = {}
        for column, task in enumerate(TASKS):
            values = scored(method, task)
            if not values:
                assert table[label][column] == "- (n=0)"
                continue
            means, (low, high) = bootstrap(values, cell_key(method, task))
            replicates[task] = means
            assert table[label][column] == f"{accuracy(method, task):.1f} [{low:.1f}, {high:.1f}] (n={len(values)})"
        if len(replicates) == len(TASKS):
            for column, subset in ((5, TASKS), (6, TASKS[1:])):
                mean = np.mean([accuracy(method, t) for t in subset])
                low, high = np.percentile(np.mean([replicates[t] for t in subset], axis=0), [2.5, 97.5])
                n = sum(len(scored(method, t)) for t in subset)
                assert table[label][column] == f"{mean:.1f} [{low:.1f}, {high:.1f}] (n={n})"


def test_bootstrap_matches_textbook_resampling_and_binomial_quantiles():
    """The multinomial shortcut is the ordinary bootstrap: its interval agrees with resampling indices
    and with the exact binomial quantiles, to within one step of the value grid."""
    from harness.report.stats import estimate

    values = np.array([1] * 15 + [0] * 5, dtype=float)
    est = estimate(values, "k", resamples=4000)
    rng = np.random.default_rng(123)
    naive = 100 * values[rng.integers(0, len(values), size=(20000, len(values)))].mean(axis=1)
    low, high = np.percentile(naive, [2.5, 97.5])
    step = 100 / len(values)
    assert abs(est.low - low) <= step and abs(est.high - high) <= step
    from math import comb

    cdf = np.cumsum([comb(20, k) * 0.75**k * 0.25 ** (20 - k) for k in range(21)])
    q_low, q_high = 100 * np.searchsorted(cdf, 0.025) / 20, 100 * np.searchsorted(cdf, 0.975) / 20
    assert abs(est.low - q_low) <= step and abs(est.high - q_high) <= step


def test_paired_difference_pairs_by_sample_id_and_reports_unpaired(rows):
    report = build_report(rows, TABLES.get("natural-shift"), reference=False)
    apm = next(line for line in report.paired if line.method == "apm")
    for column, task in enumerate(TASKS):
        diffs, unpaired = paired_values("apm", task)
        _, (low, high) = bootstrap(diffs, paired_key("apm", task))
        cell = apm.cells[column]
        assert (cell.n, cell.unpaired) == (len(diffs), unpaired)
        assert cell.value == pytest.approx(100 * np.mean(diffs)) and (cell.low, cell.high) == pytest.approx((low, high))
    assert [c.unpaired for c in apm.cells[:5]] == [0, 0, 1, 0, 1]
    replicates = {t: bootstrap(paired_values("apm", t)[0], paired_key("apm", t))[0] for t in TASKS}
    for cell, subset in ((apm.cells[5], TASKS), (apm.cells[6], TASKS[1:])):  # Average, OOD Average
        assert cell.value == pytest.approx(np.mean([100 * np.mean(paired_values("apm", t)[0]) for t in subset]))
        low, high = np.percentile(np.mean([replicates[t] for t in subset], axis=0), [2.5, 97.5])
        assert (cell.low, cell.high) == pytest.approx((low, high))
    assert [c.unpaired for c in next(line for line in report.paired if line.method == "ensemble").cells] == [0] * 7
    text = render_table(rows, "natural-shift", "markdown", reference=False)
    assert GOLDEN_PAIRED in text  # the golden's numbers are the ones checked above


def test_pairing_ignores_row_order_and_a_missing_baseline_is_said(tmp_path):
    rows = [make_row("imagenet", "apm", i, i % 2 == 0) for i in (3, 1, 2, 0)]
    rows += [make_row("imagenet", "zeroshot", i, True) for i in (0, 1, 2, 3)]
    rows += [make_row("imagenet", "apm", 0, True, model="ViT-L-14")]  # no zero-shot with this teacher
    report = build_report(resultfiles.read_rows([write_run(tmp_path, rows)]), TABLES.get("natural-shift"), reference=False)
    b16 = next(line for line in report.paired if line.teacher == "ViT-B/16")
    assert (b16.cells[0].value, b16.cells[0].n, b16.cells[0].unpaired) == (-50.0, 4, 0)
    l14 = next(line for line in report.paired if line.teacher == "ViT-L/14")
    assert (l14.cells[0].n, l14.cells[0].unpaired) == (0, 1)
    assert any("no zeroshot rows with this teacher" in note for note in report.paired_notes)


def test_errors_are_excluded_from_scores_and_counted(rows):
    text = render_table(rows, "natural-shift", "markdown", reference=False)
    assert "66.7 [0.0, 100.0] (n=3)" in text  # 2 of 3 scored, the error row is not a miss
    assert "Error rows excluded from scoring (1): APM ViT-B/16 imagenet-v2: 1." in text
    cost = next(c for c in build_report(rows, TABLES.get("natural-shift")).cost if c.method == "apm")
    assert (cost.n, cost.errors) == (20, 1)


def test_reference_rows_match_the_csvs_and_sit_beside_ours(rows):
    spec = TABLES.get("natural-shift")
    report = build_report(rows, spec, reference=True)
    with open(REFERENCE_DIR / spec.reference, newline="") as fh:
        printed = list(csv.DictReader(fh))
    paper = [line for line in report.lines if line.kind == "paper"]
    assert len(paper) == len(printed)
    for line in paper:
        rec = next(r for r in printed if r["method"] == line.method and r["backbone"] == line.teacher)
        assert [c.value for c in line.cells[:5]] == [float(rec[c.header]) for c in spec.columns]
        assert line.cells[5].value == pytest.approx(np.mean([float(rec[c.header]) for c in spec.columns]))
        assert line.cells[6].value == pytest.approx(np.mean([float(rec[c.header]) for c in spec.columns[1:]]))
    kinds = [(line.kind, line.label) for line in report.lines]
    at = kinds.index(("measured", "APM"))
    assert kinds[at + 1] == ("paper", "APM [paper]") and kinds[at + 2] == ("vs-paper", "APM [ours - paper]")
    diff = report.lines[at + 2]
    assert diff.cells[0].value == pytest.approx(100.0 - 68.1)
    text = render_table(rows, "natural-shift", "markdown")
    assert "| APM [paper]" in text and "+31.9" in text and "CoOp [paper] (ImageNet train)" in text
    assert "stated" not in text  # Table 1's stated averages agree with its columns within rounding
    assert "[paper]" not in render_table(rows, "natural-shift", "markdown", reference=False)


def test_table_2_shows_stated_averages_that_differ_and_says_so(tmp_path):
    rows = [make_row("imagenet-c/fog/5", "apm", 0, True, model="ViT-L-14")]
    text = render_table(resultfiles.read_rows([write_run(tmp_path, rows)]), "imagenet-c", "markdown")
    assert "49.7 (stated 50.3)" in text and "44.2 (stated 42.1)" in text and "43.3 (stated 44.4)" in text
    assert "APM ViT-L/14: the paper states Average 50.3, but its own columns average 49.72" in text
    assert "| APM [ours - paper]" in text and "+35.2" in text  # fog: 100 - 64.8


def test_specs_are_the_task_registry_and_the_csv_headers():
    from tasks.finegrained import FINE_GRAINED
    from tasks.imagenet import NATURAL_SHIFT
    from tasks.imagenet_c import IMAGENET_C

    for name, tasks in (("natural-shift", NATURAL_SHIFT), ("imagenet-c", IMAGENET_C), ("fine-grained", FINE_GRAINED)):
        spec = TABLES.get(name)
        assert spec.tasks == tasks
        with open(REFERENCE_DIR / spec.reference, newline="") as fh:
            header = next(csv.reader(fh))
        assert [c.header for c in spec.columns] == [h for h in header[3:] if not h.endswith("_stated")]
        assert len(load_reference(spec)) > 0


def test_teacher_labels():
    assert teacher_label("ViT-B-16", "openai") == "ViT-B/16"
    assert teacher_label("ViT-B-16", "laion2b_s34b_b88k") == "ViT-B-16/laion2b_s34b_b88k"
    assert teacher_label("ViT-L-14", "openai") == "ViT-L/14"
    assert teacher_label("ViT-H-14-quickgelu", "dfn5b") == "ViT-H/14"
    assert teacher_label("apm-tiny", "none") == "apm-tiny/none"


def test_unknown_methods_keep_their_names_and_follow_the_paper_order(tmp_path):
    rows = [make_row("imagenet", m, 0, True) for m in ("apm", "my-method", "tpt", "zeroshot")]
    report = build_report(resultfiles.read_rows([write_run(tmp_path, rows)]), TABLES.get("natural-shift"), reference=False)
    assert [line.label for line in report.lines] == ["CLIP", "TPT", "APM", "my-method"]


def test_cost_uses_optional_columns_when_present(rows):
    spec = TABLES.get("natural-shift")
    plain = build_report(rows, spec)
    assert all(c.flops is None and c.peak_memory is None for c in plain.cost)
    assert "FLOPs and peak memory not recorded" in render_table(rows, "natural-shift", "markdown")
    richer = rows.assign(flops=2e9, peak_memory_bytes=[float(2**20 * (i + 1)) for i in range(len(rows))])
    apm = next(c for c in build_report(richer, spec).cost if c.method == "apm")
    scored_apm = richer[(richer["method"] == "apm") & richer["error"].isna()]
    assert apm.flops == 2e9 and apm.peak_memory == scored_apm["peak_memory_bytes"].max()
    assert apm.seconds == float(np.median(scored_apm["seconds"])) and apm.steps == 20


def test_every_format(rows, tmp_path):
    spec = TABLES.get("imagenet-c")
    corrupted = [make_row("imagenet-c/fog/5", m, i, i % 2 == 0) for m in ("zeroshot", "apm") for i in range(4)]
    rows = pd.concat([rows, resultfiles.read_rows([write_run(tmp_path, corrupted, "c")])], ignore_index=True)
    lat = render_table(rows, "imagenet-c", "latex")
    assert "\\toprule" in lat and "defocus\\_blur" in lat and "\\caption{Table 2" in lat
    html = render_table(rows, "natural-shift", "html")  # the page itself is tested in test_html_report.py
    assert html.startswith("<!DOCTYPE html>") and "ImageNet-A" in html
    report = build_report(rows, spec)
    long = pd.read_csv(io.StringIO(render_table(rows, "imagenet-c", "csv")))
    lines = len(report.lines) + len(report.paired)
    assert len(long) == lines * len(spec.keys) + len(report.cost) * 6
    assert set(long["kind"]) == {"measured", "paper", "paired", "cost"}
    doc = json.loads(render_table(rows, "imagenet-c", "json"))
    assert doc["table"] == "imagenet-c" and len(doc["cells"]) == len(long)
    assert [c["header"] for c in doc["columns"]][-1] == "Average"


def test_generic_report_has_html_and_json_too(rows):
    assert "<table" in render(rows, "html")
    records = json.loads(render(rows, "json"))
    assert {r["task"] for r in records} == set(TASKS)


def test_cli_report_table_and_errors(tmp_path):
    import cli

    run_dir = write_run(tmp_path, fixture_rows())
    runner = CliRunner()
    done = runner.invoke(cli.app, ["report", str(run_dir), "--table", "natural-shift", "--no-reference"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(GOLDEN)
    plain = runner.invoke(cli.app, ["report", str(run_dir)])
    assert plain.output.startswith("Top-1 accuracy (%)\n\nColumns 1-4 of 7:\n\n| method ")  # wide: in parts
    bad = runner.invoke(cli.app, ["report", str(run_dir), "--table", "table-9"])
    assert isinstance(bad.exception, HarnessError)
    assert "unknown table (--table) 'table-9'" in str(bad.exception)
