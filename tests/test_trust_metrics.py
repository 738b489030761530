"""The trust metrics against hand-computed cases and against scikit-learn's and torchmetrics' own
definitions (harness.report.trust_metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torchmetrics.functional.classification import binary_calibration_error

from harness.report import trust_metrics as tm


def test_ece_of_a_hand_computed_set():
    """Two in (0.85, 0.90] half right: |0.5 - 0.9| x 2/4; two in (0.55, 0.60] both right: |1 - 0.6| x 2/4."""
    assert tm.ece([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1]) == pytest.approx(0.4)
    assert tm.ece([0.7, 0.7], [1, 0]) == pytest.approx(0.2)  # one bin: |0.5 - 0.7|
    assert tm.ece([1.0, 1.0], [1, 1]) == pytest.approx(0.0)


def test_bins_are_closed_on_the_right_as_c_tpt_compares():
    """C-TPT: lower < c <= upper. 0.35 x 20 rounds to 7.000000000000001, so a bin from c x 20 would
    put 0.35 in (0.35, 0.40]; the edges themselves put it in (0.30, 0.35]. Zero joins the first bin."""
    assert tm.bin_index(np.array([0.35, 0.0, 0.05, 0.0500001, 1.0])).tolist() == [6, 0, 0, 1, 19]
    bars = tm.reliability(np.array([0.35, 0.36]), np.array([1, 0]))
    assert bars.counts[6] == 1 and bars.counts[7] == 1 and bars.accuracy[6] == 1.0 and np.isnan(bars.accuracy[0])


def test_ece_equals_torchmetrics_l1_calibration_error():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0, 1, 3000)
    hits = rng.uniform(0, 1, 3000) < conf ** 1.7
    theirs = binary_calibration_error(torch.tensor(conf), torch.tensor(hits).long(), n_bins=20, norm="l1")
    assert tm.ece(conf, hits) == pytest.approx(float(theirs), abs=1e-9)


def test_ece_bootstrap_is_seeded_and_centred():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1, 400)
    hits = rng.uniform(0, 1, 400) < conf
    a = tm.ece_replicates(conf, hits, 300, np.random.default_rng(7))
    b = tm.ece_replicates(conf, hits, 300, np.random.default_rng(7))
    assert len(a) == 300 and np.array_equal(a, b)
    low, high = np.percentile(a, [2.5, 97.5])
    assert low < tm.ece(conf, hits) < high


def test_auroc_of_separable_reversed_and_identical_scores():
    assert tm.ood_metrics([0.9, 0.8], [0.1, 0.2])["auroc"] == 1.0
    assert tm.ood_metrics([0.1, 0.2], [0.9, 0.8])["auroc"] == 0.0
    same = tm.ood_metrics([0.5, 0.5, 0.5], [0.5, 0.5])
    assert same["auroc"] == 0.5 and same["fpr95"] == 1.0


def test_fpr95_at_ties():
    """19 of 20 ID samples at 1.0 keep 95% at the threshold 1.0, where no OOD sample is: FPR 0. With 18
    there, the threshold falls to 0.5, which keeps every OOD sample tied at it: FPR 1."""
    assert tm.ood_metrics([1.0] * 19 + [0.5], [0.5] * 10)["fpr95"] == 0.0
    assert tm.ood_metrics([1.0] * 18 + [0.5] * 2, [0.5] * 10)["fpr95"] == 1.0


def test_ood_metrics_equal_scikit_learn_with_ties():
    rng = np.random.default_rng(5)
    ids, oods = rng.normal(1, 1, 700).round(1), rng.normal(0, 1, 400).round(1)
    truth, scores = np.r_[np.ones(700), np.zeros(400)], np.r_[ids, oods]
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    ours = tm.ood_metrics(ids, oods)
    assert ours["auroc"] == pytest.approx(roc_auc_score(truth, scores))
    assert ours["aupr"] == pytest.approx(average_precision_score(truth, scores))
    assert ours["fpr95"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])


def test_ood_bootstrap_of_separable_sets_never_overlaps():
    reps = tm.ood_replicates([0.9, 0.8, 0.95], [0.1, 0.2], 200, np.random.default_rng(1))
    assert np.all(reps["auroc"] == 1.0) and np.all(reps["fpr95"] == 0.0)


def test_mcnemar_exact_on_known_tables():
    """b = 10, c = 2: 2 x P(X <= 2 | 12, 1/2) = 2 x (1 + 12 + 66) / 4096."""
    assert tm.mcnemar(10, 2) == pytest.approx(2 * 79 / 4096)
    assert tm.mcnemar(2, 10) == tm.mcnemar(10, 2)
    assert tm.mcnemar(5, 5) == 1.0 and tm.mcnemar(0, 0) == 1.0
    assert tm.mcnemar(6, 0) == pytest.approx(2 / 64)


def test_cluster_interval_widens_when_tasks_disagree():
    """Two tasks, each certain of its own difference (0 and 10 points): averaging their replicates is
    certain of 5; drawing the tasks as clusters too is not."""
    agree = tm.cluster_replicates([np.full(500, 5.0), np.full(500, 5.0)], np.random.default_rng(0))
    disagree = tm.cluster_replicates([np.zeros(500), np.full(500, 10.0)], np.random.default_rng(0))
    assert np.all(agree == 5.0)
    assert set(np.unique(disagree)) == {0.0, 5.0, 10.0}
