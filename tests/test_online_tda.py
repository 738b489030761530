"""TDA: its caches against a list-based re-statement of the authors' update_cache and their logits
formula, the band gate, the replacement rule, the subtracted negative term, and the online contract
(prefix determinism, a checkpoint that continues exactly, FLOPs on the meta device)."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from harness.errors import HarnessError
from harness.methods.online_configs import TdaConfig
from harness.methods.registry import METHODS
from harness.methods.tda import admit, tda
from harness.models.teacher import meta_teacher
from tasks.synthetic import SyntheticTask
from tasks.templates import TemplateSet
from tests.online_streams import TASK, run, stream

C = len(TASK.classnames)


class Reference:
    """kdiAAA/TDA's run_test_tda restated with dicts of lists: update_cache (append below capacity,
    replace the last if strictly lower, stable sort) and compute_cache_logits with loops."""

    def __init__(self, cfg, alpha, beta):
        self.cfg, self.alpha, self.beta = cfg, alpha, beta
        self.pos, self.neg = {}, {}

    @staticmethod
    def update(cache, label, item, capacity):
        if label in cache:
            if len(cache[label]) < capacity:
                cache[label].append(item)
            elif item[1] < cache[label][-1][1]:
                cache[label][-1] = item
            cache[label] = sorted(cache[label], key=lambda e: e[1])
        else:
            cache[label] = [item]

    def step(self, f, text, scale):
        cfg = self.cfg
        z0 = scale * f @ text
        p = z0.softmax(-1)
        entropy = float(-(p * z0.log_softmax(-1)).sum())
        label = int(z0.argmax())
        self.update(self.pos, label, (f, entropy), cfg.pos_capacity)
        if cfg.entropy_lower < entropy / math.log2(len(p)) < cfg.entropy_upper:
            self.update(self.neg, label, (f, entropy, p), cfg.neg_capacity)
        z = z0.clone()
        for c in sorted(self.pos):
            for key, _ in self.pos[c]:
                z[c] += self.alpha * math.exp(-self.beta * (1 - float(f @ key)))
        for c in sorted(self.neg):
            for key, _, probs in self.neg[c]:
                mask = ((probs > cfg.mask_lower) & (probs < cfg.mask_upper)).float()
                z -= cfg.neg_alpha * math.exp(-cfg.neg_beta * (1 - float(f @ key))) * mask
        return z


def test_the_caches_and_logits_follow_the_authors_update_and_formula(sharp):
    method = tda(TdaConfig())
    ref = Reference(method.config, *method.positive(TASK))
    text = method.text(sharp, TASK)
    state = method.begin(sharp, TASK, 300)
    for sample in stream(300):
        out = method.step(sharp, TASK, state, sample)
        assert (state["pos_count"] <= 3).all() and (state["neg_count"] <= 2).all()
        z = ref.step(F.normalize(sample.embedding, dim=-1), text, sharp.logit_scale)
        assert out.prediction == int(z.argmax()) and out.confidence == pytest.approx(float(z.softmax(-1).max()),
                                                                                     abs=1e-5)
    assert int(state["pos_count"].sum()) == 3 * C  # every class filled: replacements happened
    assert int((state["neg_count"] == 2).sum()) >= 3
    for prefix, cache in (("pos", ref.pos), ("neg", ref.neg)):
        for c in range(C):
            entries = cache.get(c, [])
            assert int(state[f"{prefix}_count"][c]) == len(entries)
            for j, entry in enumerate(entries):  # the same entries, in the same order
                assert torch.equal(state[f"{prefix}_keys"][c, j], entry[0])
                assert float(state[f"{prefix}_entropy"][c, j]) == pytest.approx(entry[1], abs=1e-5)


def test_an_entry_enters_the_negative_cache_only_inside_its_entropy_band(sharp):
    samples = stream(200, seed=3)
    for norm, divisor in (("log2", math.log2(C)), ("ln", math.log(C))):
        method = tda(TdaConfig(neg_capacity=100, entropy_norm=norm))  # nothing evicted
        text = method.text(sharp, TASK)
        state, inside = method.begin(sharp, TASK, 200), 0
        for sample in samples:
            z0 = sharp.logit_scale * F.normalize(sample.embedding, dim=-1) @ text
            h = float(-(z0.softmax(-1) * z0.log_softmax(-1)).sum()) / divisor
            label, before = int(z0.argmax()), int(state["neg_count"][int(z0.argmax())])
            method.step(sharp, TASK, state, sample)
            assert int(state["neg_count"][label]) == before + (0.2 < h < 0.5)
            inside += 0.2 < h < 0.5
        assert 20 < inside < 180  # the band splits this stream
        stored = state["neg_entropy"][torch.arange(100)[None, :] < state["neg_count"][:, None]] / divisor
        assert ((stored > 0.2) & (stored < 0.5)).all() and len(stored) == inside


def test_replacement_keeps_the_lowest_entropies_and_evicts_the_newer_of_equals():
    method = tda(TdaConfig(pos_capacity=3))
    state = method._empty(2, 8, "cpu")
    entropies = [0.5, 0.2, 0.9, 0.4, 0.95, 0.1, 0.4]
    went_in = [admit(state, "pos", 1, torch.tensor(h), {"keys": torch.eye(8)[i]}, 3) for i, h in enumerate(entropies)]
    assert went_in == [True, True, True, True, False, True, False]  # 0.4 equal to the worst does not replace
    assert state["pos_entropy"][1].tolist() == pytest.approx([0.1, 0.2, 0.4])
    assert state["pos_keys"][1].argmax(-1).tolist() == [5, 1, 3]  # which samples: the first 0.4, not the last
    assert int(state["pos_count"][0]) == 0 and not state["pos_keys"][0].any()
    state = method._empty(1, 8, "cpu")
    for i, h in enumerate([0.3, 0.3, 0.2, 0.25]):  # equal entropies: the older ranks first, the newer goes
        admit(state, "pos", 0, torch.tensor(h), {"keys": torch.eye(8)[i]}, 3)
    assert state["pos_keys"][0].argmax(-1).tolist() == [2, 3, 0]


def test_one_step_by_hand_the_negative_term_is_subtracted(sharp):
    """The first sample of a stream enters both caches (if in the band) and reads itself: exp(0) = 1, so
    its logits are z0 + alpha_p at its pseudo-label minus 0.117 at every class of its mask."""
    method = tda(TdaConfig(pos_alpha=1.5, entropy_lower=0.0, entropy_upper=0.7))  # any sample is in band
    text = method.text(sharp, TASK)
    sample = stream(1, seed=5)[0]
    f = F.normalize(sample.embedding, dim=-1)
    z0 = sharp.logit_scale * f @ text
    probs = z0.softmax(-1)
    mask = ((probs > 0.03) & (probs < 1.0)).float()
    assert 0 < mask.sum() < C
    state = method.begin(sharp, TASK, 1)
    method.update(state, f, z0)
    expected = z0 - 0.117 * mask
    expected[int(z0.argmax())] += 1.5
    got = method.adapted(state, f, z0, TASK)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # a negative entry of another sample marking class 0 only lowers class 0, by 0.117 exp(-(1 - f.k))
    state = method.begin(sharp, TASK, 1)
    key = F.normalize(f + 0.5 * torch.eye(64)[0], dim=-1)
    state["neg_keys"][4, 0], state["neg_count"][4] = key, 1
    state["neg_mask"][4, 0, 0] = True
    delta = method.adapted(state, f, z0, TASK) - z0
    assert float(delta[0]) == pytest.approx(-0.117 * math.exp(-(1 - float(f @ key))), rel=1e-5)
    assert float(delta[0]) < 0 and not delta[1:].any()


def test_positive_alpha_and_beta_are_the_authors_per_family_unless_set():
    method = tda(TdaConfig())
    assert method.positive(SyntheticTask(name="imagenet-sketch")) == (2.363, 7.45)
    assert method.positive(SyntheticTask(name="imagenet-c/fog/5")) == (2.0, 5.0)
    assert method.positive(SyntheticTask(name="food101:/data/food")) == (1.0, 1.0)
    assert method.positive(TASK) == (2.0, 5.0)  # an unknown family: ImageNet's
    assert tda(TdaConfig(pos_beta=4.0)).positive(SyntheticTask(name="eurosat")) == (4.0, 4.0)
    assert tda(TdaConfig(templates="task")).templates(TASK) is TASK.templates
    authors = tda(TdaConfig(templates="authors"))
    assert authors.templates(SyntheticTask(name="imagenet-v2")).name == "clip-imagenet-7"
    assert len(authors.templates(SyntheticTask(name="stanford-cars"))) == 7
    assert authors.templates(SyntheticTask(name="imagenet-sketch")).name == "openai-imagenet-80"
    dtd = SyntheticTask(name="dtd", templates=TemplateSet("coop:dtd", ("{} texture.",)))
    assert authors.templates(dtd) is dtd.templates
    for bad in (dict(entropy_lower=0.5, entropy_upper=0.2), dict(pos_capacity=101), dict(entropy_norm="e"),
                dict(neg_alpha=-1.0), dict(templates="ensemble")):
        with pytest.raises(HarnessError):
            TdaConfig(**bad)


def test_the_state_after_k_samples_depends_on_those_k_only(sharp):
    method = tda(TdaConfig())
    shared = stream(40, seed=1)
    first, _ = run(method, sharp, shared + stream(30, seed=2))
    second, _ = run(method, sharp, shared)
    third, _ = run(method, sharp, shared + stream(30, seed=9))
    assert not all(torch.equal(first[k], third[k]) for k in first)
    after_k = method.begin(sharp, TASK, 40)
    run(method, sharp, shared, after_k)
    assert all(torch.equal(second[k], after_k[k]) for k in second)


def test_a_saved_state_continues_exactly_as_an_uninterrupted_stream(sharp):
    method = tda(TdaConfig())
    samples = stream(120, seed=4)
    whole, rows = run(method, sharp, samples)
    part, head = run(method, sharp, samples[:70])
    restored = load(save(part))
    assert restored.keys() == part.keys() and restored["neg_mask"].dtype == torch.bool
    other = tda(TdaConfig())  # another worker's method, built from the same settings
    tail = [other.step(sharp, SyntheticTask(per_class=1), restored, s) for s in samples[70:]]
    assert head + tail == rows
    assert all(torch.equal(whole[k], restored[k]) for k in whole)


def test_flops_on_the_meta_teacher_and_the_state_size(teacher):
    meta = meta_teacher(teacher.config)
    method = tda(TdaConfig())
    d = meta.embed_dim
    caches = 2 * C * 3 * d + 2 * C * 2 * d + 2 * C * 2 * C
    assert method.flops(meta, TASK, 100) == meta.image_flops + 2 * d * C + caches
    assert method.flops(meta, TASK, 100) == method.flops(teacher, TASK, 100)
    state = method.begin(teacher, TASK, 100)
    assert sum(t.nbytes for t in state.values()) == method.state_bytes(teacher.embed_dim, C, 100)
    assert method.state_bytes(512, 1000, 50_000) == 12_276_000


def test_the_registry_builds_it_with_its_settings():
    assert METHODS.get("tda")(None).config == TdaConfig() and not METHODS.get("tda").episodic
    built = METHODS.get("tda")(TdaConfig(pos_capacity=5))
    assert built.name == "tda" and built.config.pos_capacity == 5
    assert METHODS.get("tda").settings_class() is TdaConfig


def test_a_capacity_of_zero_turns_a_cache_off(sharp):
    samples = stream(40, seed=6)
    for off in ("pos", "neg"):
        method = tda(TdaConfig(**{f"{off}_capacity": 0}))
        state, rows = run(method, sharp, samples)
        assert state[f"{off}_keys"].shape[1] == 0 and not state[f"{off}_count"].any()
        restored = load(save(state))
        assert all(torch.equal(state[k], restored[k]) for k in state) and len(rows) == 40
    only_pos, _ = run(tda(TdaConfig(neg_capacity=0)), sharp, samples)
    both, _ = run(tda(TdaConfig()), sharp, samples)
    assert torch.equal(only_pos["pos_keys"], both["pos_keys"])  # the caches do not depend on each other
