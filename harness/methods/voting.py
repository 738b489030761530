"""The view-based methods that train nothing: ZERO (a majority vote of the confident views) and MTA
(a MeanShift mode of the view embeddings, weighted by inlierness). No gradient, no state: a sample
cannot leave anything behind for the next."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.methods.base import Outcome, SampleInput, final_scores
from harness.methods.configs import MtaConfig, ZeroConfig
from harness.methods.episodic import ViewMethod, scored, view_entropy
from harness.models.teacher import Teacher
from tasks.base import Task


@dataclass(frozen=True)
class Vote:
    votes: torch.Tensor
    """(C,) votes per class, the tie-break's extra vote included."""
    kept: torch.Tensor
    """Indices of the views that voted."""
    tie_broken_by: int | None
    """The discarded view whose argmax settled a tie (None: no tie, or no discarded view settled it)."""
    share: float
    """The winner's votes before any tie-break, over the views that voted."""


def fp16_soft_votes(cosines: torch.Tensor) -> torch.Tensor:
    """(C,) the authors' votes of the views whose unscaled cosines (K, C) are given, computed in fp16
    as their fp16 model computes them: l = the cosines in fp16, softmax(l / eps) per view with eps
    fp16's 2^-10, summed over the views. A view's vote splits between classes whose cosines lie within
    a few eps (the loser keeps about e^-4 at a gap of 0.004, some 15 fp16 steps of a cosine near 0.3),
    not only one step apart. Half softmax and sum accumulate in fp32 and round to fp16 on the CPU as
    on CUDA, so the votes do not depend on the device."""
    ell = cosines.to(torch.float16)
    return (ell / torch.finfo(ell.dtype).eps).softmax(-1).sum(0).float()


def zero_vote(logits: torch.Tensor, top: float, cosines: torch.Tensor | None = None) -> Vote:
    """ZERO: the int(N * top) lowest-entropy views each vote for their argmax. A tie between the most
    voted classes goes to the tied class that the most confident discarded view votes for (FarinaMatteo/
    zero, greedy_break), which then gets one more vote. If no discarded view votes for a tied class, the
    lowest tied index wins (the authors' fallback adds the vote to another class by an indexing slip,
    TTA-VLM's to class 0; both leave the tie unbroken in spirit). Votes are hard (TTA-VLM's fp32 votes)
    unless the views' unscaled `cosines` (N, C) are given: then the authors' fp16 soft votes
    (fp16_soft_votes), tied only when two classes' fp16 sums are equal. The views are chosen from the
    fp32 `logits` either way."""
    order = view_entropy(logits).argsort(stable=True)
    keep = int(len(logits) * top)
    kept, discarded = order[:keep], order[keep:]
    choice = logits.argmax(-1)
    if cosines is None:
        votes = torch.bincount(choice[kept], minlength=logits.shape[-1]).float()
    else:
        votes = fp16_soft_votes(cosines[kept])
    tied = (votes == votes.max()).nonzero().flatten().tolist()
    share = float(votes.max()) / max(1, keep)
    breaker = None
    if len(tied) > 1:
        winner = tied[0]
        for view in discarded.tolist():
            if int(choice[view]) in tied:
                winner, breaker = int(choice[view]), view
                break
        votes[winner] += 1
    return Vote(votes, kept, breaker, share)


def winning_logits(logits: torch.Tensor, vote: Vote, winner: int) -> torch.Tensor:
    """(C,) the mean logits of the views that voted for the winner: what ZERO's probabilities are the
    softmax of (a vote has no probability of its own; its share is kept on the Vote). Under the fp16 soft
    votes a class can win without any voter's argmax: then the mean over every voter."""
    voters = vote.kept[logits[vote.kept].argmax(-1) == winner]
    return logits[voters if len(voters) else vote.kept].mean(0)


@dataclass
class ZeroMethod(ViewMethod):
    name: str = "zero"

    def adapt(self, teacher: Teacher, task: Task, features: torch.Tensor, sample: SampleInput) -> Outcome:
        classifier = teacher.classifier(task.classnames, self.templates(task))
        logits = teacher.logit_scale * features.float() @ classifier
        cosines = features.float() @ classifier if self.config.vote == "fp16-soft" else None  # the authors' l
        vote = zero_vote(logits, self.config.top, cosines)
        order = vote.votes.argsort(descending=True, stable=True)  # ties by class index, as the vote's argmax
        k = min(5, len(order))
        winner = int(order[0])
        return Outcome(winner, tuple(order[:k].tolist()), n_templates=1, template_set=self.templates(task).name,
                       **final_scores(winning_logits(logits, vote, winner), teacher.logit_scale, winner))

    def adapt_flops(self, teacher: Teacher, task: Task) -> int:
        """The views' class scores (the vote itself is counting)."""
        return 2 * self.config.views * teacher.embed_dim * len(task.classnames)


@dataclass(frozen=True)
class Mode:
    mode: torch.Tensor
    """(D,) unit-norm."""
    inlierness: torch.Tensor
    """(N,) on the simplex."""


def bandwidths(features: torch.Tensor, neighbours: float) -> torch.Tensor:
    """2 h_i^2 per view: the mean squared distance to its int(neighbours * (N - 1)) nearest other views
    (at least one), floored at 1e-12 so identical views give a kernel of 1, not 0/0."""
    dist = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    dist.fill_diagonal_(float("inf"))
    k = max(1, int(neighbours * (len(features) - 1)))
    return dist.topk(k, dim=-1, largest=False).values.mean(-1).clamp(min=1e-12)


def kernel(features: torch.Tensor, mode: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    return torch.exp(-(features - mode).pow(2).sum(-1) / width)


def mode_step(features: torch.Tensor, mode: torch.Tensor, width: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One MeanShift update: the kernel- and inlierness-weighted mean of the views, on the sphere."""
    weights = kernel(features, mode, width) * y
    new = (weights[:, None] * features).sum(0) / weights.sum()
    return new / new.norm()


def mta_mode(features: torch.Tensor, probs: torch.Tensor, cfg: MtaConfig) -> Mode:
    """MaxZanella/MTA solve_mta: from y uniform and the mode at view 0, `outer_steps` rounds of (up to
    `inner_steps` inlierness updates y = softmax((K(m) + lambda_q A y) / lambda_y) with K held at the
    round's mode, then up to `inner_steps` mode updates), inner loops stopping when an update moves
    less than `tolerance`. A = P P^T of the views' class posteriors."""
    features = features.float()
    affinity = probs @ probs.T
    width = bandwidths(features, cfg.neighbours)
    y = torch.full((len(features),), 1.0 / len(features), device=features.device)
    mode = features[0]
    for _ in range(cfg.outer_steps):
        k = kernel(features, mode, width)
        for _ in range(cfg.inner_steps):
            new = ((k + cfg.lambda_q * affinity @ y) / cfg.lambda_y).softmax(0)
            moved = (new - y).norm()
            y = new
            if moved < cfg.tolerance:
                break
        for _ in range(cfg.inner_steps):
            new = mode_step(features, mode, width, y)
            moved = (new - mode).norm()
            mode = new
            if moved < cfg.tolerance:
                break
    return Mode(mode, y)


@dataclass
class MtaMethod(ViewMethod):
    name: str = "mta"

    def adapt(self, teacher: Teacher, task: Task, features: torch.Tensor, sample: SampleInput) -> Outcome:
        classifier = teacher.classifier(task.classnames, self.templates(task))
        probs = (teacher.logit_scale * features.float() @ classifier).softmax(-1)
        found = mta_mode(features, probs, self.config)
        return scored(teacher.logit_scale * found.mode @ classifier, teacher.logit_scale, n_templates=1,
                      template_set=self.templates(task).name)  # iterations, not training steps

    def adapt_flops(self, teacher: Teacher, task: Task) -> int:
        """Its matrix products, as torch's FLOP counter counts them (element-wise work is not counted, for
        any method): the views' scores, the affinity P P^T, and A y at every inlierness update, taking
        every inner loop to its limit (the early stop depends on the data)."""
        n, cfg = self.config.views, self.config
        return 2 * n * teacher.embed_dim * len(task.classnames) + 2 * n * n * len(task.classnames) \
            + cfg.outer_steps * cfg.inner_steps * 2 * n * n


def zero(settings: ZeroConfig) -> ZeroMethod:
    return ZeroMethod(settings)


def mta(settings: MtaConfig) -> MtaMethod:
    return MtaMethod(settings)
