"""The trust table (`apm-bench report --table trust`): per method and teacher, beside top-1 accuracy,
what accuracy alone hides. Every number comes from the per-sample rows (harness.report.trust_metrics
defines each metric):

- accuracy: the unweighted mean over the in-distribution tasks, with a bootstrap interval;
- vs zero-shot: the same mean of the per-task paired differences against zero-shot on the same
  samples, with an interval that resamples the tasks as clusters as well as their samples, and per
  task McNemar's exact test, counted as the tasks where the method is significantly better or worse
  (p < 0.05);
- ECE (%): the mean over tasks of each task's ECE of the rows' `confidence`;
- AUROC, FPR95, AUPR (%): per out-of-distribution task (rows with `ood_of`) against its
  in-distribution task, from the maximum-softmax score (`msp`) and, where a method's output is
  logits, the MCM score (`mcm`); means over the OOD tasks;
- robust accuracy: the accuracy of the attacked rows (`attack` set, `apm-bench run --attack pgd`).

Intervals are 95% percentile bootstraps seeded from the cell's content (stats.cell_key), as the
accuracy tables'; an average over tasks draws from its tasks' replicates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.report.accuracy import method_rank
from harness.report.rowset import RowSet, as_rowset
from harness.report.stats import RESAMPLES, Estimate, estimate_counts, generator, mean_of, percentile_interval
from harness.report.tables import BASELINE
from harness.report import trust_metrics as tm
from harness.report.values import Cell

TRUST_TABLE = "trust"
"""What `apm-bench report --table` takes for this table."""
SIGNIFICANCE = 0.05
LINE = ["run", "method", "model", "pretrained"]
SAMPLES_SQL = """
SELECT run, method, model, pretrained, task, attack, ood_of,
       list(correct::INTEGER ORDER BY sample_id) FILTER (WHERE correct IS NOT NULL) AS correct,
       list(confidence ORDER BY sample_id) FILTER (WHERE confidence IS NOT NULL AND correct IS NOT NULL) AS confidence,
       list(correct::INTEGER ORDER BY sample_id) FILTER (WHERE confidence IS NOT NULL AND correct IS NOT NULL) AS calibrated,
       list(msp ORDER BY sample_id) FILTER (WHERE msp IS NOT NULL) AS msp,
       list(mcm ORDER BY sample_id) FILTER (WHERE mcm IS NOT NULL) AS mcm
FROM all_rows WHERE error IS NULL GROUP BY ALL
"""
"""Per cell (clean or attacked, in or out of distribution), its scored rows' values in sample order,
each list without the rows that lack its value (`calibrated`: the outcomes of the rows with a confidence)."""
PAIRS_SQL = """
WITH s AS (SELECT run, method, model, pretrained, task, sample_id, avg(correct::DOUBLE) AS c
           FROM all_rows WHERE error IS NULL AND correct IS NOT NULL AND attack IS NULL GROUP BY ALL)
SELECT m.run, m.method, m.model, m.pretrained, m.task, m.c - b.c AS d, count(*) AS k
FROM s m JOIN s b USING (run, model, pretrained, task, sample_id)
WHERE b.method = ? AND m.method <> ? GROUP BY ALL
"""
"""Per (line, task), the tally of paired differences against zero-shot on the same clean samples."""


@dataclass(frozen=True)
class TrustLine:
    run: str
    method: str
    model: str
    pretrained: str
    accuracy: Cell
    delta: Cell
    """Mean paired difference against zero-shot (points), tasks as clusters; None for zero-shot itself."""
    better: int
    worse: int
    tasks: int
    """Tasks where McNemar's test finds the method better / worse than zero-shot (p < 0.05), of `tasks` paired."""
    ece: Cell
    auroc: Cell
    fpr95: Cell
    aupr: Cell
    auroc_mcm: Cell
    fpr95_mcm: Cell
    robust: Cell

    @property
    def label(self) -> str:
        return self.method + (f" [{self.run}]" if self.run else "")


@dataclass(frozen=True)
class Spread:
    """One metric over runs (seeds): mean, sample standard deviation and the worst run's value."""

    mean: float
    sd: float | None
    worst: float


@dataclass(frozen=True)
class StabilityLine:
    """A method and teacher measured by several runs side by side (`run --seeds`): each run's mean
    over tasks, summarised."""

    method: str
    model: str
    pretrained: str
    runs: int
    accuracy: Spread
    ece: Spread | None
    auroc: Spread | None


def spread(values: list[float], worst: str) -> Spread | None:
    """`worst` is min (higher is better) or max (lower is better); None without values."""
    if not values:
        return None
    return Spread(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None,
                  float(min(values) if worst == "min" else max(values)))


def stability(lines: list[TrustLine]) -> tuple[StabilityLine, ...]:
    """Per (method, teacher) with clean accuracy from more than one run: the spread over the runs."""
    groups: dict[tuple[str, str, str], list[TrustLine]] = {}
    for line in lines:
        if line.run and line.accuracy.value is not None:
            groups.setdefault((line.method, line.model, line.pretrained), []).append(line)
    out = []
    for (method, model, pretrained), group in groups.items():
        if len(group) < 2:
            continue
        values = {f: [getattr(g, f).value for g in group if getattr(g, f).value is not None] for f in ("accuracy", "ece", "auroc")}
        out.append(StabilityLine(method, model, pretrained, len(group), spread(values["accuracy"], "min"),  # type: ignore[arg-type]
                                 spread(values["ece"], "max"), spread(values["auroc"], "min")))
    return tuple(out)


@dataclass(frozen=True)
class TrustReport:
    lines: tuple[TrustLine, ...]
    records: tuple[dict, ...]
    """Per (line, task, metric): value, interval, n and, for the paired rows, McNemar's counts and p."""
    notes: tuple[str, ...]
    seed: int
    resamples: int
    stability: tuple[StabilityLine, ...] = ()
    """The spread over runs side by side, where a method has several (`run --seeds`)."""
    kinds: frozenset[str] = frozenset()
    """Which rows were read: `clean`, `attacked` (in distribution), `ood`, `attacked-ood`; the notes
    say what an empty column needs from them."""


def _key(*parts: object) -> str:
    return "|".join(str(p) for p in parts)


def _estimate(value: float, replicates: np.ndarray, n: int) -> Estimate:
    low, high = percentile_interval(100.0 * replicates)
    return Estimate(100.0 * value, low, high, n, tuple((100.0 * replicates).tolist()))


def _cell(estimate: Estimate | None) -> Cell:
    if estimate is None or estimate.value is None:
        return Cell(None)
    return Cell(estimate.value, estimate.low, estimate.high, estimate.n)


def _mean(estimates: list[Estimate]) -> Cell:
    """The unweighted mean over tasks, its interval from their replicates (None when there are none)."""
    return _cell(mean_of(estimates)) if estimates else Cell(None)


def _values(cell: pd.Series, column: str) -> np.ndarray:
    values = cell[column]  # a list, or NULL (NA) where the filter left nothing
    return np.asarray(values, dtype=np.float64) if isinstance(values, (list, np.ndarray)) else np.empty(0)


class _Builder:
    """Computes the cells' estimates (seeded from the cell's content) and keeps the long-form records."""

    def __init__(self, seed: int, resamples: int) -> None:
        self.seed, self.resamples = seed, resamples
        self.records: list[dict] = []

    def record(self, line: tuple, task: str, metric: str, est: Estimate | None, **extra: object) -> None:
        if est is None or est.value is None:
            return
        self.records.append(dict(zip(LINE, line), task=task, metric=metric, value=est.value, low=est.low,
                                 high=est.high, n=est.n, **extra))

    def accuracy(self, line: tuple, cell: pd.Series, metric: str) -> Estimate:
        hits = _values(cell, "correct")
        est = estimate_counts(np.array([0.0, 1.0]), np.array([hits.size - hits.sum(), hits.sum()]),
                              _key(metric, *line[1:], cell.task), self.seed, self.resamples)
        self.record(line, cell.task, metric, est)
        return est

    def ece(self, line: tuple, cell: pd.Series) -> Estimate | None:
        conf, hits = _values(cell, "confidence"), _values(cell, "calibrated")
        if conf.size == 0:
            return None
        rng = generator(self.seed, _key("ece", *line[1:], cell.task))
        point = tm.ece(conf, hits)
        # resampling inflates ECE (a bin's |sum| grows with noise), so the resamples' percentiles can lie
        # wholly above the estimate: their spread is kept, centred on it (their median moved to it)
        replicates = tm.ece_replicates(conf, hits, self.resamples, rng)
        est = _estimate(point, replicates - np.median(replicates) + point, conf.size)
        self.record(line, cell.task, "ece", est)
        return est

    def ood(self, line: tuple, known: pd.Series, unknown: pd.Series, score: str) -> dict[str, Estimate]:
        ids, oods = _values(known, score), _values(unknown, score)
        if not ids.size or not oods.size:
            return {}
        rng = generator(self.seed, _key("ood", score, *line[1:], unknown.task))
        point, reps = tm.ood_metrics(ids, oods), tm.ood_replicates(ids, oods, self.resamples, rng)
        out = {}
        for metric in ("auroc", "fpr95", "aupr"):
            out[metric] = _estimate(point[metric], reps[metric], ids.size + oods.size)
            self.record(line, unknown.task, f"{metric}_{score}", out[metric], in_distribution=known.task)
        return out

    def paired(self, line: tuple, task: str, tally: pd.DataFrame) -> tuple[Estimate, float, int, int]:
        ordered = tally.sort_values("d")
        d, k = ordered["d"].to_numpy(dtype=np.float64), ordered["k"].to_numpy(dtype=np.int64)
        est = estimate_counts(d, k, _key("paired", *line[1:], task), self.seed, self.resamples)
        better, worse = int(k[d > 0].sum()), int(k[d < 0].sum())
        p = tm.mcnemar(better, worse)
        self.record(line, task, "vs_zeroshot", est, method_only=better, baseline_only=worse, mcnemar_p=p)
        return est, p, better, worse


def build_trust(rows: RowSet | pd.DataFrame, seed: int = 0, resamples: int = RESAMPLES,
                notes: tuple[str, ...] = ()) -> TrustReport:
    """One line per (run, method, teacher) with rows. The per-sample values are read per cell as lists
    (four numbers a row: about 0.5 GB for 12 million rows), the accuracy tables' counts stay in DuckDB."""
    rowset = as_rowset(rows)
    cells = rowset.query(SAMPLES_SQL)
    pairs = rowset.query(PAIRS_SQL, [BASELINE, BASELINE])
    build = _Builder(seed, resamples)
    orders = rowset.orders
    keys = sorted({tuple(k) for k in cells[LINE].itertuples(index=False)},
                  key=lambda k: (orders.rank("teachers", (k[2], k[3])), method_rank(orders, k[1]), orders.rank("runs", k[0])))
    lines = []
    for key in keys:
        mine = cells[(cells[LINE] == pd.Series(key, index=LINE)).all(axis=1)]
        clean = mine[mine["attack"].isna() & mine["ood_of"].isna()]
        attacked = mine[mine["attack"].notna() & mine["ood_of"].isna()]
        unknown = mine[mine["attack"].isna() & mine["ood_of"].notna()]
        ordered = sorted(clean.itertuples(index=False), key=lambda c: orders.rank("tasks", c.task))
        accuracy = [build.accuracy(key, pd.Series(c._asdict()), "accuracy") for c in ordered]
        eces = [e for c in ordered if (e := build.ece(key, pd.Series(c._asdict()))) is not None]
        robust = [build.accuracy(key, pd.Series(c._asdict()), f"robust_accuracy ({c.attack})")
                  for c in attacked.itertuples(index=False)]
        ood: dict[str, list[Estimate]] = {}
        for row in unknown.itertuples(index=False):
            known = clean[clean["task"] == row.ood_of]
            if known.empty:
                continue
            for score in ("msp", "mcm"):
                for metric, est in build.ood(key, known.iloc[0], pd.Series(row._asdict()), score).items():
                    ood.setdefault(f"{metric}_{score}", []).append(est)
        delta, better, worse, paired = _versus(build, key, pairs, [c.task for c in ordered])
        lines.append(TrustLine(*key, _mean(accuracy), delta, better, worse, paired, _mean(eces),
                               _mean(ood.get("auroc_msp", [])), _mean(ood.get("fpr95_msp", [])),
                               _mean(ood.get("aupr_msp", [])), _mean(ood.get("auroc_mcm", [])),
                               _mean(ood.get("fpr95_mcm", [])), _mean(robust)))
    attacked, unknown = cells["attack"].notna(), cells["ood_of"].notna()
    kinds = {"clean": ~attacked & ~unknown, "attacked": attacked & ~unknown, "ood": ~attacked & unknown,
             "attacked-ood": attacked & unknown}
    return TrustReport(tuple(lines), tuple(build.records), notes, seed, resamples, stability(lines),
                       frozenset(k for k, mask in kinds.items() if bool(mask.any())))


def _versus(build: _Builder, key: tuple, pairs: pd.DataFrame, tasks: list[str]) -> tuple[Cell, int, int, int]:
    """The line's paired difference against zero-shot over its tasks (tasks as clusters) and the
    tasks McNemar's test finds it better and worse on."""
    if key[1] == BASELINE:
        return Cell(None, note="baseline"), 0, 0, 0
    mine = pairs[(pairs[LINE] == pd.Series(key, index=LINE)).all(axis=1)]
    estimates, better, worse = [], 0, 0
    for task in tasks:
        tally = mine[mine["task"] == task]
        if tally.empty:
            continue
        est, p, up, down = build.paired(key, task, tally)
        estimates.append(est)
        better += int(p < SIGNIFICANCE and up > down)
        worse += int(p < SIGNIFICANCE and down > up)
    if not estimates:
        return Cell(None), 0, 0, 0
    value = float(np.mean([e.value for e in estimates]))
    rng = generator(build.seed, _key("clusters", *key[1:], *tasks))
    low, high = percentile_interval(tm.cluster_replicates([np.asarray(e.replicates) for e in estimates], rng))
    return Cell(value, low, high, sum(e.n for e in estimates)), better, worse, len(estimates)
