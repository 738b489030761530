"""The trust table (`apm-bench report --table trust`) from rows made here, each number recomputed
independently (scikit-learn, the metric module on the raw values, McNemar by hand), in every format."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import cli
from harness import resultfiles
from harness.report import trust_metrics as tm
from harness.report.render import render
from harness.report.trust import build_trust
from harness.report.trust_render import TRUST_FORMATS
from test_report_tables import make_row, write_run

ATTACK = "pgd:eps=1/255,steps=7"
N = 40


def _hits(method: str, task: str, i: int) -> bool:
    if task == "t1":
        return i < (30 if method == "zeroshot" else 36)  # m alone right on 30..35: McNemar b = 6, c = 0
    return i % 2 == 0  # t2: both right on the same half


def _confidence(method: str, i: int) -> float:
    return 0.9 if method == "zeroshot" else 0.6 + 0.01 * (i % 10)


def trust_rows() -> list:
    rows = []
    for method in ("zeroshot", "m"):
        for task in ("t1", "t2"):
            for i in range(N):
                c = _confidence(method, i)
                rows.append(dataclasses.replace(make_row(task, method, i, _hits(method, task, i)), confidence=c, msp=c,
                                                mcm=c / 2))
        for i in range(20):  # out-of-distribution images scored over t1's classes
            score = 0.3 + 0.02 * i
            rows.append(dataclasses.replace(make_row("o@t1", method, 100 + i, None), label=-1, prediction=0,
                                            confidence=score, msp=score, mcm=score / 2, ood_of="t1"))
        for i in range(N):  # t1 under attack: right on the first quarter only
            rows.append(dataclasses.replace(make_row("t1", method, i, i < 10), confidence=0.5, msp=0.5, attack=ATTACK))
    return rows


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pd.DataFrame:
    return resultfiles.read_rows([write_run(tmp_path_factory.mktemp("trust"), trust_rows())])


def _line(report, method):
    return next(line for line in report.lines if line.method == method)


def test_every_number_is_the_metric_of_the_rows(frame):
    report = build_trust(frame, resamples=200)
    m, zs = _line(report, "m"), _line(report, "zeroshot")
    assert m.accuracy.value == pytest.approx(100 * (36 / 40 + 20 / 40) / 2)
    assert m.delta.value == pytest.approx(100 * (6 / 40 + 0) / 2) and (m.better, m.worse, m.tasks) == (1, 0, 2)
    assert zs.delta.note == "baseline" and zs.tasks == 0
    hits = {t: np.array([_hits("m", t, i) for i in range(N)]) for t in ("t1", "t2")}
    conf = np.array([_confidence("m", i) for i in range(N)])
    assert m.ece.value == pytest.approx(100 * np.mean([tm.ece(conf, hits[t]) for t in ("t1", "t2")]))
    ood = 0.3 + 0.02 * np.arange(20)
    truth, scores = np.r_[np.ones(N), np.zeros(20)], np.r_[conf, ood]
    assert m.auroc.value == pytest.approx(100 * roc_auc_score(truth, scores))
    assert m.auroc_mcm.value == pytest.approx(100 * roc_auc_score(truth, scores / 2))  # ranks do not change at T
    assert zs.auroc.value == 100.0 and zs.fpr95.value == 0.0  # 0.9 everywhere in distribution, at most 0.68 out
    assert m.robust.value == pytest.approx(25.0) and zs.robust.value == pytest.approx(25.0)
    assert m.accuracy.low < m.accuracy.value < m.accuracy.high and m.auroc.low <= m.auroc.value <= m.auroc.high
    paired = [r for r in report.records if r["metric"] == "vs_zeroshot" and r["task"] == "t1"][0]
    assert (paired["method_only"], paired["baseline_only"]) == (6, 0) and paired["mcnemar_p"] == pytest.approx(2 / 64)


def test_intervals_follow_the_seed_and_nothing_else(frame):
    a, b, c = build_trust(frame, seed=0, resamples=200), build_trust(frame, seed=0, resamples=200), build_trust(frame, seed=1, resamples=200)
    assert a.lines == b.lines and a.lines != c.lines


def test_every_format_carries_both_tables(frame):
    report = build_trust(frame, resamples=200)
    text = TRUST_FORMATS.get("markdown")(report)
    assert "Trust: accuracy" in text and "Out-of-distribution detection" in text and "McNemar +/-" in text
    assert "+1 / -0 of 2" in text and max(len(line) for line in text.splitlines()) <= 160
    assert "\\begin{table}" in TRUST_FORMATS.get("latex")(report)
    html = TRUST_FORMATS.get("html")(report)
    assert html.count("<table") == 2 and "robust accuracy" in html
    records = json.loads(TRUST_FORMATS.get("json")(report))
    assert {r["metric"] for r in records} >= {"accuracy", "ece", "auroc_msp", "fpr95_mcm", "vs_zeroshot",
                                              f"robust_accuracy ({ATTACK})"}
    assert "mcnemar_p" in TRUST_FORMATS.get("csv")(report).splitlines()[0]


def test_accuracy_tables_leave_ood_rows_out_and_show_attacked_rows_apart(frame):
    text = render(frame, "markdown", resamples=200)
    assert "o@t1" not in text and f"m [{ATTACK}]" in text


def test_without_ood_or_attacked_rows_the_table_says_what_would_fill_it(frame):
    clean = frame[frame["ood_of"].isna() & frame["attack"].isna()]
    text = TRUST_FORMATS.get("markdown")(build_trust(clean, resamples=200))
    assert "robust accuracy |" not in text and "--attack pgd" in text and "--ood ID:OOD" in text


def test_report_table_trust_from_a_run_directory(tmp_path):
    run = write_run(tmp_path, trust_rows())
    done = CliRunner().invoke(cli.app, ["report", str(run), "--table", "trust", "--resamples", "200"])
    assert done.exit_code == 0, done.output
    assert "Out-of-distribution detection" in done.stdout and "| m " in done.stdout


def test_runs_side_by_side_get_their_spread_over_seeds(frame):
    clean = frame[frame["ood_of"].isna() & frame["attack"].isna()]
    second = clean.assign(run="seed1", correct=[bool(c) and i % 4 != 0 for i, c in enumerate(clean["correct"])])
    both = pd.concat([clean.assign(run="seed0"), second], ignore_index=True)
    report = build_trust(both, resamples=200)
    m = next(s for s in report.stability if s.method == "m")
    per_run = [line.accuracy.value for line in report.lines if line.method == "m"]
    assert m.runs == 2 and m.accuracy.mean == pytest.approx(np.mean(per_run))
    assert m.accuracy.sd == pytest.approx(np.std(per_run, ddof=1)) and m.accuracy.worst == min(per_run)
    assert m.ece is not None and m.auroc is None  # no OOD rows in these runs
    text = TRUST_FORMATS.get("markdown")(report)
    assert "Stability over runs side by side" in text and "(worst " in text
    assert TRUST_FORMATS.get("html")(report).count("<table") == 2


def test_reliability_diagrams_bin_as_the_ece_does(frame, tmp_path):
    from harness.report.reliability_figure import reliability_bins, reliability_diagram, reliability_figure

    bins = reliability_bins(frame)
    mine = bins[bins["method"] == "m"]
    hits = np.r_[[_hits("m", "t1", i) for i in range(N)], [_hits("m", "t2", i) for i in range(N)]]
    conf = np.r_[[_confidence("m", i) for i in range(N)] * 2]
    expected = tm.reliability(conf, hits)
    assert dict(zip(mine["bin"], mine["n"])) == {b: int(n) for b, n in enumerate(expected.counts) if n}
    assert np.allclose(mine["accuracy"], expected.accuracy[expected.counts > 0])
    assert len(reliability_figure(frame).axes) == 4  # a panel per method, attacked ones apart; no OOD rows
    assert reliability_diagram(frame, tmp_path / "figures" / "reliability.png").stat().st_size > 10_000
    assert reliability_figure(frame.assign(confidence=None)) is None


def test_the_ece_interval_holds_its_estimate_although_resamples_inflate_ece():
    """Calibrated by construction (hits drawn at the stated confidence): resampled ECEs lie above the
    estimate; the interval keeps their spread, centred on the estimate."""
    rng = np.random.default_rng(2)
    rows = []
    for i in range(100):
        c = float(rng.uniform(0.3, 1.0))
        rows.append(dataclasses.replace(make_row("t1", "zeroshot", i, bool(rng.uniform() < c)), confidence=c, msp=c))
    report = build_trust(pd.DataFrame([dataclasses.asdict(r) for r in rows]), resamples=400)
    ece = report.lines[0].ece
    raw = tm.ece_replicates(np.array([r.confidence for r in rows]), np.array([r.correct for r in rows]), 400,
                            np.random.default_rng(0))
    assert 100 * np.median(raw) > ece.value  # the bias
    assert ece.low < ece.value < ece.high
    low, high = np.percentile(100 * raw, [2.5, 97.5])
    assert ece.high - ece.low == pytest.approx(high - low, rel=0.3)  # the same spread (another generator)


def test_the_notes_say_what_an_empty_column_needs_from_what_was_read(frame):
    from harness.report.trust_text import ATTACKED_OOD, NO_ATTACK, NO_CLEAN, NO_MCM, NO_OOD

    def notes(rows):
        return TRUST_FORMATS.get("markdown")(build_trust(rows, resamples=100))

    attacked = frame[frame["attack"].notna()]
    alone = notes(attacked)
    assert NO_CLEAN.split(":")[0] in alone and "No confidences" not in alone and "robust accuracy" in alone
    assert NO_OOD.split(":")[0] in alone and "ECE:" not in alone  # the legend names the shown columns only
    unknown = frame[frame["ood_of"].notna()].assign(attack=ATTACK)
    assert ATTACKED_OOD.split(";")[0] in notes(pd.concat([attacked, unknown]))
    clean = notes(frame[frame["attack"].isna()])
    assert NO_ATTACK.split(":")[0] in clean and NO_MCM not in clean  # both methods have MCM scores
    no_mcm = frame.assign(mcm=np.where(frame["method"] == "m", None, frame["mcm"]))
    assert NO_MCM in notes(no_mcm)
