"""ZERO, MTA, C-TPT, R-TPT and TPS: each one's defining behaviour, written out from its authors' code,
and the episodic contract all share (a sample leaves nothing behind)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from harness.methods.base import SampleInput
from harness.methods.configs import (
    CtptConfig,
    MtaConfig,
    RlcfConfig,
    RtptConfig,
    TpsConfig,
    TptConfig,
    TtlConfig,
    ZeroConfig,
)
from harness.methods.rlcf import RlcfMethod, reinforce_loss
from harness.methods.ttl import TtlMethod
from harness.methods.prompt import ShiftLearner, average_entropy, tune
from harness.methods.tpt import TptMethod
from harness.methods.tpt_variants import (
    CtptMethod,
    RtptMethod,
    TpsMethod,
    dispersion,
    mean_view_entropy,
    reliability_weights,
)
from harness.methods.voting import MtaMethod, ZeroMethod, bandwidths, kernel, mode_step, mta_mode, zero_vote
from tasks.synthetic import SyntheticTask

TASK = SyntheticTask(per_class=1)


class Named:
    def __init__(self, name):
        self.name = name


def _logits(votes: list[int], confident: float, classes: int = 6) -> torch.Tensor:
    """One view per entry voting for that class, `confident` its logit margin."""
    out = torch.zeros(len(votes), classes)
    out[torch.arange(len(votes)), torch.tensor(votes)] = confident
    return out


def test_zero_keeps_the_lowest_entropy_views_and_takes_their_majority():
    torch.manual_seed(0)
    logits = torch.randn(64, 10) * 3
    vote = zero_vote(logits, 0.3)
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    assert len(vote.kept) == 19  # int(64 * 0.3), the floor
    assert set(vote.kept.tolist()) == set(entropy.argsort()[:19].tolist())
    counts = torch.bincount(logits[vote.kept].argmax(-1), minlength=10)
    if (counts == counts.max()).sum() == 1:
        assert int(vote.votes.argmax()) == int(counts.argmax()) and vote.votes.sum() == 19


def test_a_zero_tie_goes_to_the_most_confident_discarded_view_that_votes_for_a_tied_class():
    # kept (most confident): two views for class 1, two for class 3; the discarded views, most confident
    # first, vote 4 (not tied), then 3 (tied): class 3 wins with one extra vote
    logits = torch.cat([_logits([1, 1, 3, 3], 9.0), _logits([4], 5.0), _logits([3], 4.0), _logits([1], 3.0),
                        _logits([2] * 3, 1.0)])
    vote = zero_vote(logits, 0.4)  # int(10 * 0.4) = 4 kept
    assert sorted(vote.kept.tolist()) == [0, 1, 2, 3]
    assert vote.tie_broken_by == 5 and int(vote.votes.argmax()) == 3 and vote.votes[3] == 3 and vote.votes[1] == 2
    # no discarded view votes for a tied class: the lowest tied index
    alone = zero_vote(torch.cat([_logits([1, 1, 3, 3], 9.0), _logits([4, 5], 2.0)]), 0.67)
    assert alone.tie_broken_by is None and int(alone.votes.argmax()) == 1


def test_mta_keeps_its_scores_on_the_simplex_and_its_mode_on_the_sphere_and_converges_to_a_fixed_point():
    torch.manual_seed(1)
    features = F.normalize(torch.randn(64, 16) + 2 * torch.randn(1, 16), dim=-1)
    probs = (20 * features @ F.normalize(torch.randn(16, 5), dim=0)).softmax(-1)
    found = mta_mode(features, probs, MtaConfig())
    assert found.inlierness.sum().item() == pytest.approx(1.0) and (found.inlierness > 0).all()
    assert found.mode.norm().item() == pytest.approx(1.0)
    width = bandwidths(features, 0.3)
    squared = torch.cdist(features, features).pow(2)
    assert width[0].item() == pytest.approx(squared[0].sort().values[1:19].mean().item(), rel=1e-4)  # 18 neighbours
    long = mta_mode(features, probs, dataclasses.replace(MtaConfig(), outer_steps=200, inner_steps=50, tolerance=0.0))
    again = mode_step(features, long.mode, width, long.inlierness)
    torch.testing.assert_close(again, long.mode, atol=1e-5, rtol=0)  # the mode is a fixed point of its update
    k = kernel(features, long.mode, width)
    y = ((k + 4.0 * (probs @ probs.T) @ long.inlierness) / 0.2).softmax(0)
    torch.testing.assert_close(y, long.inlierness, atol=1e-5, rtol=0)  # and so are the scores


def test_mta_on_near_identical_views_predicts_what_zero_shot_predicts_on_view_zero(teacher):
    method = MtaMethod(MtaConfig(views=32))
    sample = _samples(teacher, 1)[0]
    features = F.normalize(sample.teacher_embedding[None].repeat(32, 1) + 1e-4 * torch.randn(32, 64), dim=-1)
    outcome = method.adapt(teacher, TASK, features, sample)
    classifier = teacher.classifier(TASK.classnames, method.templates(TASK))
    assert outcome.prediction == int((features[0] @ classifier).argmax())


def test_ctpt_dispersion_and_its_published_weights():
    assert dispersion(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).item() == pytest.approx(1.0)
    assert dispersion(torch.ones(4, 3) / math.sqrt(3)).item() == pytest.approx(0.0, abs=1e-7)
    assert dispersion(torch.eye(5)).item() == pytest.approx(math.sqrt(1 - 1 / 5))
    method = CtptMethod(CtptConfig())
    assert [method.weight(Named(n)) for n in ("imagenet", "imagenet-a", "imagenet-sketch", "dtd", "synthetic")] == [
        50.0, 20.0, 20.0, 50.0, 50.0]
    assert method.uses_augmix(Named("imagenet-r")) and not method.uses_augmix(Named("imagenet"))
    assert CtptMethod(CtptConfig(weight=3.0)).weight(Named("imagenet-a")) == 3.0


def test_ctpt_with_weight_zero_is_tpt_and_its_term_raises_the_dispersion(teacher):
    samples = _samples(teacher, 2)
    tpt = TptMethod(TptConfig(views=16, steps=2)).evaluate(teacher, TASK, samples)
    same = CtptMethod(CtptConfig(views=16, steps=2, weight=0.0)).evaluate(teacher, TASK, samples)
    assert [(o.prediction, o.losses) for o in tpt] == [(o.prediction, o.losses) for o in same]
    method = CtptMethod(CtptConfig(views=16, steps=1, weight=50.0))
    first = method.evaluate(teacher, TASK, samples[:1])[0].losses[0]
    learner = method.learner(teacher, TASK)
    with torch.no_grad():
        assert first == pytest.approx(tpt[0].losses[0] - 50.0 * dispersion(learner()).item(), rel=1e-5)
    features = F.normalize(torch.randn(16, 64), dim=-1)
    with torch.no_grad():
        start = dispersion(learner()).item()
    tune(learner, features, teacher, 1, 1e-4, 0.0, 1.0, lambda logits, text: -dispersion(text))  # a small step: first order
    with torch.no_grad():
        assert dispersion(learner()).item() > start


def test_rtpt_loss_and_reliability_weights():
    two = torch.tensor([[20.0, 0.0], [0.0, 20.0]])  # two confident views that disagree
    assert mean_view_entropy(two, None).item() == pytest.approx(0.0, abs=1e-6)
    assert average_entropy(two).item() == pytest.approx(math.log(2), rel=1e-4)
    torch.manual_seed(2)
    centre = F.normalize(torch.randn(16), dim=0)
    features = F.normalize(centre + 0.05 * torch.randn(30, 16), dim=-1)
    features[7] = F.normalize(torch.randn(16), dim=0)  # an outlier view
    weights = reliability_weights(features, 20, 0.01)
    assert weights.sum().item() == pytest.approx(1.0) and weights[7] < 1e-6 * weights.max()
    same = reliability_weights(F.normalize(centre + 1e-6 * torch.randn(25, 16), dim=-1), 20, 0.01)
    torch.testing.assert_close(same, torch.full((25,), 1 / 25), atol=1e-3, rtol=0)


def test_rtpt_predicts_from_all_views_weighted(teacher):
    method = RtptMethod(RtptConfig(views=24, steps=0))
    learner = method.learner(teacher, TASK)
    features = F.normalize(torch.randn(24, 64), dim=-1)
    with torch.no_grad():
        logits = teacher.logit_scale * features @ learner().T
        expected = reliability_weights(features, 20, 0.01) @ logits
        torch.testing.assert_close(method.predict(teacher, learner, features), expected)


def test_tps_starts_at_zero_shot_and_its_shift_is_per_class(teacher):
    method = TpsMethod(TpsConfig(views=16, steps=0))
    samples = _samples(teacher, 3)
    out = method.evaluate(teacher, TASK, samples)
    assert [o.prediction for o in out] == [o.prediction_before for o in out]  # no step: zero-shot on the prototypes
    learner = method.learner(teacher, TASK)
    assert isinstance(learner, ShiftLearner) and learner.shift.shape == (12, 64)
    with torch.no_grad():
        learner.shift.copy_(0.7 * learner.prototypes)  # along each prototype: renormalised away
        torch.testing.assert_close(learner(), learner.prototypes)
    learner.reset()
    assert method.lr(Named("imagenet-v2")) == 5e-3 and method.lr(Named("dtd")) == 1e-3
    assert TpsMethod(TpsConfig(lr=0.2)).lr(Named("dtd")) == 0.2


def test_tps_never_runs_the_text_tower_while_it_adapts(teacher, monkeypatch):
    method = TpsMethod(TpsConfig(views=16, steps=2))
    samples = _samples(teacher, 1)
    method.evaluate(teacher, TASK, samples)  # builds the prototypes once
    calls = []
    monkeypatch.setattr(teacher.model, "encode_text", lambda *a, **k: calls.append(1))
    out = method.evaluate(teacher, TASK, samples)
    assert calls == [] and out[0].steps == 2 and out[0].losses[1] < out[0].losses[0]


def test_ttl_starts_as_the_teacher_and_weighs_each_views_entropy(teacher):
    method = TtlMethod(TtlConfig(views=8, steps=1))
    lora = method.low_rank(teacher)
    assert [s.param for s in lora.sites] == [f"transformer.resblocks.{i}.attn.in_proj_weight" for i in (0, 0, 1, 1)]
    assert [s.rows for s in lora.sites[:2]] == [(0, 64), (128, 192)]  # query and value, not key
    sample = _samples(teacher, 1)[0]
    views = torch.randn(7, 3, 64, 64)
    pixels = torch.cat([teacher.preprocess(sample.image)[None], views])
    with torch.no_grad():
        torch.testing.assert_close(method._embed(teacher, lora, pixels), F.normalize(teacher.encode_images(pixels), dim=-1),
                                   rtol=1e-5, atol=1e-5)  # B = 0: the teacher's own tower
        classifier = teacher.classifier(TASK.classnames, method.templates(TASK))
        entropy = -(lambda z: (z.softmax(-1) * z.log_softmax(-1)).sum(-1))(
            teacher.logit_scale * F.normalize(teacher.encode_images(pixels), dim=-1) @ classifier)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    out = method.adapt_views(teacher, TASK, sample, views)
    assert out.losses[0] == pytest.approx((torch.exp(0.4 - entropy) * entropy).mean().item(), rel=1e-4)
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in before.items())  # the teacher is untouched
    assert all(torch.equal(b, torch.zeros_like(b)) for b in lora.b)  # and the update is gone


def test_ttl_finds_a_resnet_towers_attention_pool():
    from harness.config import TeacherConfig
    from harness.methods.ttl import lora_sites
    from harness.models.teacher import load_teacher

    mini = load_teacher(TeacherConfig("apm-mini", "synthetic-teacher"))
    assert [s.param for s in lora_sites(mini.model.visual, 3)] == ["attnpool.q_proj.weight", "attnpool.v_proj.weight"]


def test_rlcf_rewards_the_classes_the_reward_model_prefers_over_the_views_mean():
    reward_image = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    reward_text = F.normalize(torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]]), dim=0)  # (D, C)
    loss = reinforce_loss(reward_image, reward_text, k=2, weight=2.5)
    logits = torch.tensor([[3.0, 2.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
    value = loss(logits, None)
    scores = (2.5 * reward_image @ reward_text).clamp(min=0)
    # view 0 samples classes 0, 1; view 1 samples classes 2, 1 (its top-2)
    r = torch.stack([scores[0, [0, 1]], scores[1, [2, 1]]])
    adv = r - r.mean(1, keepdim=True)
    lp = torch.stack([logits.log_softmax(-1)[0, [0, 1]], logits.log_softmax(-1)[1, [2, 1]]])
    assert value.item() == pytest.approx(-(adv * lp).mean().item())
    value.backward()
    assert logits.grad[0, 0] < 0  # class 0 is rewarded for view 0: its logit is pushed up
    flat = reinforce_loss(reward_image, torch.ones(2, 3) / math.sqrt(2), k=3, weight=2.5)
    assert flat(logits, None).item() == pytest.approx(0.0)  # equal rewards: no advantage, no update


def test_rlcf_with_another_reward_model_resizes_and_renormalises_the_views(teacher, siglip_dir):
    from harness.config import TeacherConfig
    from harness.models.teacher import load_teacher

    method = RlcfMethod(RlcfConfig(views=8, reward_model="apm-tiny", reward_pretrained=str(siglip_dir)))
    reward = method.reward_teacher(teacher)
    assert reward is not teacher and reward.input_size == 224
    sample = _samples(teacher, 1)[0]
    pixels = teacher.preprocess(sample.image)[None]
    shown = method.reward_views(teacher, reward, pixels)
    direct = load_teacher(TeacherConfig(pretrained=str(siglip_dir)))
    resized = F.interpolate(pixels * 0.2686 + 0.4578, size=224, mode="bicubic", align_corners=True)  # as the authors
    expected = F.normalize(direct.encode_images((resized - 0.5) / 0.5), dim=-1)
    torch.testing.assert_close(shown, expected, atol=2e-2, rtol=0)  # CLIP's per-channel statistics, rounded here
    out = method.evaluate(teacher, TASK, _samples(teacher, 2))
    assert all(o.error is None and o.steps == 3 for o in out)
    tpt = TptMethod(TptConfig(**{f: getattr(method.config, f) for f in ("views", "top", "lr", "ctx_init")},
                              steps=method.steps(TASK)))
    assert method.flops(teacher, TASK) == tpt.flops(teacher, TASK) + reward.image_flops  # its one confident view


METHODS = {
    "tpt": lambda: TptMethod(TptConfig(views=16, steps=2)),
    "rlcf": lambda: RlcfMethod(RlcfConfig(views=16, reward_model="teacher")),
    "ttl": lambda: TtlMethod(TtlConfig(views=8)),
    "c-tpt": lambda: CtptMethod(CtptConfig(views=16, steps=2)),
    "r-tpt": lambda: RtptMethod(RtptConfig(views=16, steps=2)),
    "tps": lambda: TpsMethod(TpsConfig(views=16, steps=2, lr=0.01)),
    "zero": lambda: ZeroMethod(ZeroConfig(views=16)),
    "mta": lambda: MtaMethod(MtaConfig(views=16)),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_sample_leaves_nothing_behind(teacher, name):
    method = METHODS[name]()
    samples = _samples(teacher, 3)
    alone = method.evaluate(teacher, TASK, [samples[2]])[0]
    learners = {**getattr(method, "_learners", {}), **getattr(method, "_lora", {})}
    initial = {k: [p.detach().clone() for p in v.parameters()] for k, v in learners.items()}
    method.evaluate(teacher, TASK, samples[:2])
    for key, learner in learners.items():
        assert all(torch.equal(p, q) for p, q in zip(learner.parameters(), initial[key]))
    after = method.evaluate(teacher, TASK, [samples[2]])[0]
    assert (alone.prediction, alone.top5, alone.losses) == (after.prediction, after.top5, after.losses)
    assert alone.error is None and alone.flops > 16 * teacher.image_flops and alone.prediction_before is not None
    # every one scores logits at the teacher's scale: a probability of its prediction, the MSP and MCM
    assert 0 < alone.confidence <= alone.msp <= 1 and 0 < alone.mcm <= 1


def _samples(teacher, n: int) -> list[SampleInput]:
    refs = TASK.samples()
    out = []
    for i in range(n):
        img = TASK.load(refs[3 * i + 1])
        emb = teacher.encode_images(teacher.preprocess(img.image)[None])[0]
        out.append(SampleInput(refs[3 * i + 1], img.image, img.content_hash, 100 + i, emb, 0.0))
    return out
