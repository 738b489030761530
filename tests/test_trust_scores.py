"""What each row says about its own certainty (Outcome.confidence, msp, mcm): defined per method
(README, "Trust"), checked here on hand-made logits, on ZERO's vote and on the online methods."""

from __future__ import annotations

import math

import pytest
import torch

from harness.methods.base import final_scores
from harness.methods.online_configs import DmnConfig, EcalpConfig, OnzetaConfig, TdaConfig
from harness.methods.registry import METHODS
from harness.methods.voting import Vote, winning_logits
from online_streams import TASK, near, run


def test_final_scores_of_hand_made_logits():
    """logits (2, 1, 0) at scale 2: softmax (e^2, e, 1) / s; MCM: softmax (1, 0.5, 0)."""
    scores = final_scores(torch.tensor([2.0, 1.0, 0.0]), scale=2.0)
    total = math.e**2 + math.e + 1
    assert scores["confidence"] == pytest.approx(math.e**2 / total)
    assert scores["msp"] == scores["confidence"]
    assert scores["mcm"] == pytest.approx(math.e / (math.e + math.exp(0.5) + 1))
    other = final_scores(torch.tensor([2.0, 1.0, 0.0]), scale=2.0, prediction=1)
    assert other["confidence"] == pytest.approx(math.e / total) and other["msp"] == scores["msp"]


def test_zero_takes_the_softmax_of_the_mean_logits_of_the_views_that_voted_for_the_winner():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 4.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.0, 9.0]])
    vote = Vote(torch.tensor([2.0, 1.0, 0.0]), kept=torch.tensor([0, 1, 2]), tie_broken_by=None, share=2 / 3)
    assert torch.equal(winning_logits(logits, vote, 0), (logits[0] + logits[2]) / 2)  # view 3 was not kept
    # a class that won by fp16 soft votes without any voter's argmax: the mean of every voter
    assert torch.equal(winning_logits(logits, vote, 2), logits[:3].mean(0))


ONLINE = {
    "tda": (TdaConfig(), True),
    "dmn-weak": (DmnConfig(), False),
    "onzeta": (OnzetaConfig(), False),
    "ecalp": (EcalpConfig(), False),
}
"""Method -> (its settings, whether its output is logits at the teacher's scale, so MCM applies)."""


@pytest.mark.parametrize("name", sorted(ONLINE))
def test_online_methods_report_a_probability_and_mcm_only_for_logits(sharp, name):
    config, logits = ONLINE[name]
    method = METHODS.get(name)(config)
    text = sharp.classifier(TASK.classnames, method.templates(TASK))
    _, outcomes = run(method, sharp, near(text, [i % 12 for i in range(20)], seed=1))
    for out in outcomes:
        assert 0 < out.confidence <= 1 and out.msp == pytest.approx(out.confidence)
        assert (out.mcm is not None) == logits
        if logits:
            assert 1 / 12 <= out.mcm <= out.msp  # temperature 1 on cosines is flatter than the teacher's scale
