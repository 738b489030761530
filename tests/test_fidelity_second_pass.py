"""Issue #22, the second fidelity pass: TTL's views, RLCF's steps per task family, TPS's prototype
templates, R-TPT's self-similarity mask and ZERO's fp16 soft vote, each against its authors' rule on
inputs made so that the rule matters."""

import dataclasses

import pytest
import torch

from harness import settings
from harness.errors import HarnessError
from harness.methods.base import SampleInput
from harness.methods.configs import RlcfConfig, RtptConfig, TpsConfig, TptConfig, TtlConfig, ZeroConfig
from harness.methods.episodic import FINE_GRAINED_FAMILIES, IMAGENET_FAMILY
from harness.methods.rlcf import RlcfMethod
from harness.methods.tpt import TptMethod
from harness.methods.tpt_variants import TpsMethod, reliability_weights
from harness.methods.ttl import TtlMethod
from harness.methods.voting import ZeroMethod, fp16_soft_votes, zero_vote
from tasks.synthetic import SyntheticTask
from tasks.templates import OPENAI_IMAGENET, SINGLE, TemplateSet

COOP_DTD = TemplateSet("coop:dtd", ("{} texture.",))
"""CoOp's single per-dataset template, as the fine-grained tasks carry it."""
DTD = SyntheticTask(per_class=1, name="dtd", templates=COOP_DTD)
"""The synthetic images under a fine-grained set's name and templates: what depends on the family."""
PLAIN = SyntheticTask(per_class=1)


class Named:
    def __init__(self, name):
        self.name = name


def _samples(teacher, task, n: int) -> list[SampleInput]:
    refs = task.samples()
    out = []
    for i in range(n):
        img = task.load(refs[3 * i + 1])
        emb = teacher.encode_images(teacher.preprocess(img.image)[None])[0]
        out.append(SampleInput(refs[3 * i + 1], img.image, img.content_hash, 100 + i, emb, 0.0))
    return out


def test_ttl_views_are_crops_and_flips_on_every_set_as_its_authors(teacher):
    ttl = TtlMethod(TtlConfig())
    assert not any(ttl.uses_augmix(Named(name)) for name in FINE_GRAINED_FAMILIES | IMAGENET_FAMILY)
    crops = ZeroMethod(ZeroConfig()).view_spec(teacher, DTD)  # ZERO's views: crops and flips only
    assert ttl.view_spec(teacher, DTD) == crops
    assert TptMethod(TptConfig()).view_spec(teacher, DTD) != crops  # TPT's AugMix on dtd
    assert TtlMethod(TtlConfig(augmix="auto")).view_spec(teacher, DTD) == TptMethod(TptConfig()).view_spec(teacher, DTD)


def test_rlcf_takes_its_authors_steps_per_task_family(teacher):
    method = RlcfMethod(RlcfConfig(views=8, reward_model="teacher"))
    samples = _samples(teacher, DTD, 1)
    assert method.evaluate(teacher, DTD, samples)[0].steps == 5  # the row's ttt_steps
    assert method.evaluate(teacher, PLAIN, samples)[0].steps == 3
    three = RlcfMethod(RlcfConfig(views=8, reward_model="teacher", steps=3))  # TTA-VLM's, with one value
    assert three.evaluate(teacher, DTD, samples)[0].steps == 3
    assert {method.steps(Named(n)) for n in FINE_GRAINED_FAMILIES} == {5}
    assert {method.steps(Named(n)) for n in IMAGENET_FAMILY} == {3}
    assert [method.steps(Named(n)) for n in ("imagenet-c/fog/5", "oxford-pets:/data/pets", "synthetic")] == [3, 5, 3]
    # the same classes, another family: the cost per sample follows the steps
    step = method.flops(teacher, DTD) - three.flops(teacher, DTD)
    assert step > 0 and method.flops(teacher, PLAIN) == three.flops(teacher, DTD)
    problems: list[str] = []
    chosen = settings.apply(("rlcf",), {}, {"rlcf": {"steps": "3"}}, problems)
    assert problems == [] and chosen["rlcf"].steps == 3
    assert settings.apply(("rlcf",), {}, {"rlcf": {"steps": "unset"}}, problems)["rlcf"].steps is None
    with pytest.raises(HarnessError, match="steps must be at least 0"):
        RlcfConfig(steps=-1)


def test_tps_prototypes_come_from_its_authors_templates_on_every_set(teacher):
    default = TpsMethod(TpsConfig(views=8, steps=1, lr=0.01))
    assert default.templates(DTD) is OPENAI_IMAGENET and default.templates(PLAIN) is OPENAI_IMAGENET
    single = TpsMethod(TpsConfig(views=8, steps=1, lr=0.01, templates="single"))
    assert single.templates(DTD) is SINGLE
    with pytest.raises(HarnessError, match="templates must be one of openai-imagenet-80, single"):
        TpsConfig(templates="ensemble")
    samples = _samples(teacher, DTD, 2)
    for method, templates in ((default, OPENAI_IMAGENET), (single, SINGLE)):
        out = method.evaluate(teacher, DTD, samples)
        assert {(o.template_set, o.n_templates) for o in out} == {(f"tps-shifted:{templates.name}", len(templates))}
        untuned = teacher.classifier(DTD.classnames, templates)
        assert [o.prediction_before for o in out] == [int((s.teacher_embedding @ untuned).argmax()) for s in samples]
        torch.testing.assert_close(method.learner(teacher, DTD).prototypes, untuned.T)


def test_rtpt_weights_under_each_self_similarity_rule():
    u = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item()  # 1 - 2^-24: a "unit" vector in fp32
    features = torch.tensor([[u, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    sims = features @ features.T
    assert sims[0, 0] < 1.0 and sims[1, 1] == 1.0  # view 0's self-similarity rounds below 1.0
    diagonal = reliability_weights(features, 1, 0.01)
    torch.testing.assert_close(diagonal, torch.full((3,), 1 / 3))  # every view's nearest other view: cosine 0
    authors = reliability_weights(features, 1, 0.01, "threshold")
    assert authors[0] > 0.999 and authors[1:].max() < 1e-40  # view 0 keeps itself (0.99999988) as its neighbour
    # exact duplicates drop each other under the authors' rule, not under the diagonal
    twins = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert reliability_weights(twins, 1, 0.01)[:2].min() > 0.49
    assert reliability_weights(twins, 1, 0.01, "threshold").tolist() == pytest.approx([1 / 3] * 3)
    assert RtptConfig().self_mask == "diagonal"
    with pytest.raises(HarnessError, match="self_mask must be one of diagonal, threshold"):
        RtptConfig(self_mask="ge1")


def test_rtpt_passes_its_mask_rule_to_the_prediction(teacher):
    from harness.methods.tpt_variants import RtptMethod

    features = torch.nn.functional.normalize(torch.randn(24, 64), dim=-1)
    method = RtptMethod(RtptConfig(views=24, steps=0, self_mask="threshold"))
    learner = method.learner(teacher, PLAIN)
    with torch.no_grad():
        expected = reliability_weights(features, 20, 0.01, "threshold") @ (teacher.logit_scale * features @ learner().T)
        torch.testing.assert_close(method.predict(teacher, learner, features), expected)


def _near_tie() -> torch.Tensor:
    """10 views' unscaled cosines over 6 classes. The three most confident: two put class 0 one fp16
    eps (4 fp16 steps of a cosine near 0.3) above class 1, one is sure of class 1; the rest are flat."""
    cosines = torch.full((10, 6), 0.2)
    cosines[:2, :] = 0.1
    cosines[:2, 0], cosines[:2, 1] = 0.3, 0.299
    cosines[2, 0], cosines[2, 1] = 0.2, 0.31
    return cosines


def test_zero_fp16_soft_vote_splits_a_near_tie_that_the_hard_vote_does_not():
    cosines = _near_tie()
    logits = 100.0 * cosines
    hard = zero_vote(logits, 0.3)
    soft = zero_vote(logits, 0.3, cosines)
    assert sorted(hard.kept.tolist()) == sorted(soft.kept.tolist()) == [0, 1, 2]
    assert hard.votes[:2].tolist() == [2.0, 1.0] and int(hard.votes.argmax()) == 0  # one vote per view
    # softmax(l / 2^-10) in fp16: a gap of exactly eps splits a vote e : 1
    split = 1 / (1 + torch.e ** -1)
    assert soft.votes[0].item() == pytest.approx(2 * split, abs=2e-3)
    assert soft.votes[1].item() == pytest.approx(2 * (1 - split) + 1, abs=2e-3)
    assert int(soft.votes.argmax()) == 1 and soft.tie_broken_by is None
    assert soft.share == pytest.approx(soft.votes[1].item() / 3)
    far = fp16_soft_votes(torch.tensor([[0.3, 0.3 - 0.02]]))  # 80 fp16 steps apart: a hard vote
    assert far.tolist()[:2] == [1.0, 0.0]
    assert ZeroConfig().vote == "hard"
    with pytest.raises(HarnessError, match="vote must be one of hard, fp16-soft"):
        ZeroConfig(vote="soft")


def test_zero_soft_vote_is_the_setting_the_method_uses(teacher, monkeypatch):
    from harness.methods import voting

    calls = []
    monkeypatch.setattr(voting, "fp16_soft_votes", lambda cosines: calls.append(cosines) or fp16_soft_votes(cosines))
    samples = _samples(teacher, PLAIN, 2)
    hard = ZeroMethod(ZeroConfig(views=16)).evaluate(teacher, PLAIN, samples)
    assert not calls  # hard votes never compute the soft ones
    soft = ZeroMethod(dataclasses.replace(ZeroConfig(views=16), vote="fp16-soft")).evaluate(teacher, PLAIN, samples)
    assert len(calls) == 2 and all(c.shape == (int(16 * ZeroConfig().top), len(PLAIN.classnames)) for c in calls)
    assert all(o.error is None and 0 < o.confidence <= o.msp <= 1 for o in hard + soft)
