"""The trust metrics, on numpy arrays, each with the bootstrap the report's intervals come from.

- ECE: C-TPT's (Yoon et al., ICLR 2024; TTA-VLM reuses it): 20 equal-width confidence bins, a
  sample in bin b when lower < confidence <= upper (a confidence of exactly 0 joins the first bin),
  ECE = sum over bins of n_b / N x |accuracy_b - mean confidence_b|, which is
  (1/N) x sum over bins of |sum over the bin of (confidence - correct)|.
- AUROC: the probability that an in-distribution score exceeds an out-of-distribution one, ties
  counting one half (the Mann-Whitney statistic; scikit-learn's roc_auc_score with ID positive).
- FPR95: the share of OOD samples at or above the highest threshold that keeps at least 95% of the ID
  samples (a threshold keeps every sample whose score equals it, so tied scores move together).
- AUPR: average precision with ID positive (scikit-learn's average_precision_score): the precision
  at each threshold, weighted by the recall it adds.
- McNemar's exact test: two-sided, the binomial probability of a split at least as uneven as the
  discordant pairs' (b method-only right, c baseline-only right) under p = 1/2, capped at 1.

The bootstraps resample samples with replacement (ID and OOD separately, as two samples). Resampling
n samples and keeping only how many times each distinct value is drawn is a multinomial draw over
the distinct values (harness.report.stats), so the OOD metrics cost O(resamples x distinct scores)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

ECE_BINS = 20
"""C-TPT's ECE_Loss(20, ...) in its Calculator (tpt_classification.py)."""
TPR_LEVEL = 0.95
CHUNK = 64
"""Resamples drawn at a time for ECE, whose draws are over samples (n x CHUNK values in memory)."""


def bin_index(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Each confidence's bin: b with b/bins < c <= (b+1)/bins, computed against the bin edges themselves
    (never c x bins, which rounds 0.35 x 20 up past 7); 0 joins the first bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's bars: per bin, its samples, mean confidence and accuracy (NaN when empty)."""

    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    conf, hit = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    index = bin_index(conf, bins)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, conf, minlength=bins) / counts
        accuracy = np.bincount(index, hit, minlength=bins) / counts
    return Reliability(counts, mean_conf, accuracy)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error (a fraction; the report shows it x 100)."""
    conf = np.asarray(confidence, dtype=np.float64)
    if conf.size == 0:
        return float("nan")
    gap = np.bincount(bin_index(conf, bins), conf - np.asarray(correct, dtype=np.float64), minlength=bins)
    return float(np.abs(gap).sum() / conf.size)


def ece_replicates(confidence: np.ndarray, correct: np.ndarray, resamples: int, rng: np.random.Generator,
                   bins: int = ECE_BINS) -> np.ndarray:
    """ECE of `resamples` bootstrap resamples of the samples."""
    conf = np.asarray(confidence, dtype=np.float64)
    n = conf.size
    if n == 0:
        return np.empty(0)
    index = bin_index(conf, bins)
    order = np.argsort(index, kind="stable")
    gap = (conf - np.asarray(correct, dtype=np.float64))[order]
    starts = np.searchsorted(index[order], np.arange(bins))
    present = np.unique(index)
    out = []
    for done in range(0, resamples, CHUNK):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(CHUNK, resamples - done))
        sums = np.add.reduceat(counts[:, order] * gap, starts[present], axis=1)
        out.append(np.abs(sums).sum(axis=1) / n)
    return np.concatenate(out)


@dataclass(frozen=True)
class Tally:
    """Scores of both samples tallied on one grid of distinct values, highest first."""

    known: np.ndarray
    """In-distribution samples at each value."""
    unknown: np.ndarray
    """Out-of-distribution samples at each value."""


def tally(id_scores: np.ndarray, ood_scores: np.ndarray) -> Tally:
    ids, oods = np.asarray(id_scores, dtype=np.float64), np.asarray(ood_scores, dtype=np.float64)
    values, inverse = np.unique(np.concatenate([ids, oods]), return_inverse=True)
    place = len(values) - 1 - inverse  # highest first
    known = np.bincount(place[: ids.size], minlength=len(values))
    unknown = np.bincount(place[ids.size :], minlength=len(values))
    return Tally(known, unknown)


def _ood_metrics(known: np.ndarray, unknown: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, FPR95 and AUPR from counts per value (rows: resamples; columns: values, highest first)."""
    known, unknown = np.atleast_2d(known).astype(np.float64), np.atleast_2d(unknown).astype(np.float64)
    n_in, n_out = known.sum(axis=1), unknown.sum(axis=1)
    above_in, above_out = np.cumsum(known, axis=1), np.cumsum(unknown, axis=1)  # at or above each value
    below_out = n_out[:, None] - above_out
    auroc = (known * (below_out + 0.5 * unknown)).sum(axis=1) / (n_in * n_out)
    first = np.argmax(above_in >= TPR_LEVEL * n_in[:, None] - 1e-9, axis=1)
    fpr = above_out[np.arange(len(first)), first] / n_out
    precision = above_in / np.maximum(above_in + above_out, 1)
    aupr = (known / n_in[:, None] * precision).sum(axis=1)
    return {"auroc": auroc, "fpr95": fpr, "aupr": aupr}


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """AUROC, FPR95 and AUPR (fractions) of a score that is higher in distribution."""
    t = tally(id_scores, ood_scores)
    if not t.known.sum() or not t.unknown.sum():
        return {"auroc": float("nan"), "fpr95": float("nan"), "aupr": float("nan")}
    return {k: float(v[0]) for k, v in _ood_metrics(t.known, t.unknown).items()}


def ood_replicates(id_scores: np.ndarray, ood_scores: np.ndarray, resamples: int,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The three metrics of `resamples` bootstrap resamples (ID and OOD resampled apart)."""
    t = tally(id_scores, ood_scores)
    n_in, n_out = int(t.known.sum()), int(t.unknown.sum())
    if not n_in or not n_out:
        return {"auroc": np.empty(0), "fpr95": np.empty(0), "aupr": np.empty(0)}
    known = rng.multinomial(n_in, t.known / n_in, size=resamples)
    unknown = rng.multinomial(n_out, t.unknown / n_out, size=resamples)
    return _ood_metrics(known, unknown)


def mcnemar(method_only: int, baseline_only: int) -> float:
    """McNemar's exact two-sided p-value of b = `method_only` right and c = `baseline_only` right
    (1.0 when there is no discordant pair)."""
    discordant = method_only + baseline_only
    if discordant == 0:
        return 1.0
    return float(binomtest(min(method_only, baseline_only), discordant, 0.5).pvalue)


def cluster_replicates(replicates: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The mean over k clusters (tasks) of their own bootstrap replicates (k arrays of R), with the
    clusters themselves drawn with replacement in each of the R replicates: a two-stage bootstrap in
    which the tasks are a sample too, so the interval widens when tasks disagree."""
    stacked = np.asarray(replicates, dtype=np.float64)
    k, r = stacked.shape
    drawn = rng.integers(0, k, size=(r, k))
    return stacked[drawn, np.arange(r)[:, None]].mean(axis=1)
