"""BoostAdapter: its steps against a dict-of-lists restatement of the authors' runner.py (TDA's caches,
a deep-copied positive cache boosted with the image's 6 lowest-entropy views, a FIFO negative cache),
the boosted copy (this image's views only, 3 + delta per class, never kept), the per-family views,
and the online contract (prefix determinism, a checkpoint that continues exactly, FLOPs with the
views' forwards on the meta device)."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from harness.errors import HarnessError
from harness.methods.boostadapter import boost, boostadapter, enqueue
from harness.methods.online_configs import BoostAdapterConfig, TdaConfig
from harness.methods.registry import METHODS
from harness.methods.tda import admit, tda
from harness.models.teacher import meta_teacher
from tasks.synthetic import SyntheticTask
from tests.online_streams import TASK, run, stream

C = len(TASK.classnames)
R_TASK = SyntheticTask(name="imagenet-r", per_class=1)  # the authors' mean rule, delta 3
DTD_TASK = SyntheticTask(name="dtd", per_class=1)  # view 0, delta 0
IMAGENET = SyntheticTask(name="imagenet", per_class=1)  # one view, no boosting


def viewed(samples, views=64, seed=0, noise=3.0):
    """The samples with `views` unit views each: view 0 their own embedding, the others it plus
    Gaussian noise (about 2 distinct argmaxes among each sample's 6 most confident views)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in samples:
        e = s.embedding
        extra = e[None] + noise * torch.randn(views - 1, e.shape[0], generator=g)
        out.append(dataclasses.replace(s, views=F.normalize(torch.cat([e[None], extra]), dim=-1)))
    return out


class Reference:
    """taolinzhang/BoostAdapter's run_test_tda (--mode boostadapter) restated with dicts of lists:
    update_cache (append; FIFO: drop the first past capacity; else sort by entropy and truncate),
    get_clip_logits (view 0, or the 6-view means and avg_entropy), copy.deepcopy of the positive cache,
    compute_cache_logits with loops."""

    def __init__(self, cfg, alpha, beta, delta, mean):
        self.cfg, self.alpha, self.beta, self.delta, self.mean = cfg, alpha, beta, delta, mean
        self.pos, self.neg, self.temp = {}, {}, {}

    @staticmethod
    def update(cache, label, item, capacity, fifo):
        if label in cache:
            cache[label].append(item)
            if fifo:
                if len(cache[label]) > capacity:
                    cache[label] = cache[label][1:]
            else:
                cache[label] = sorted(cache[label], key=lambda e: e[1])[:capacity]
        else:
            cache[label] = [item]

    def step(self, views, text, scale):
        cfg = self.cfg
        logits = scale * views @ text
        ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
        sel = ent.argsort(stable=True)[: int(len(views) * 0.1)]
        if self.mean:
            out = logits[sel]
            f, z, probs = views[sel].mean(0), out.mean(0), out.softmax(1).mean(0)
            avg = out.log_softmax(1).logsumexp(0) - math.log(len(sel))
            entropy = float(-(avg * avg.exp()).sum())
        else:
            f, z, probs, entropy = views[0], logits[0], logits[0].softmax(-1), float(ent[0])
        label = int(z.argmax())
        self.update(self.pos, label, (f, entropy), cfg.pos_capacity, fifo=False)
        self.temp = copy.deepcopy(self.pos)
        for i in sel.tolist():
            self.update(self.temp, int(logits[i].argmax()), (views[i], float(ent[i])), cfg.pos_capacity + self.delta,
                        fifo=False)
        if cfg.entropy_lower < entropy / math.log2(len(probs)) < cfg.entropy_upper:
            self.update(self.neg, label, (f, entropy, probs), cfg.neg_capacity, fifo=True)
        final = z.clone()
        for c in sorted(self.temp):
            for key, _ in self.temp[c]:
                final[c] += self.alpha * math.exp(-self.beta * (1 - float(f @ key)))
        for c in sorted(self.neg):
            for key, _, p in self.neg[c]:
                mask = ((p > cfg.mask_lower) & (p < cfg.mask_upper)).float()
                final -= cfg.neg_alpha * math.exp(-cfg.neg_beta * (1 - float(f @ key))) * mask
        return final


@pytest.mark.parametrize("task, delta, mean", [(TASK, 1, False), (R_TASK, 3, True), (DTD_TASK, 0, False)])
def test_the_steps_and_caches_follow_the_authors_runner(sharp, task, delta, mean):
    method = boostadapter(None)
    assert method.delta(task) == delta and method.historical_rule(task) == ("mean" if mean else "view0")
    ref = Reference(method.config, *method.positive(task), delta, mean)
    text = method.text(sharp, task)
    state = method.begin(sharp, task, 200)
    boosted_changed = 0
    for sample in viewed(stream(200, seed=1), seed=2):
        out = method.step(sharp, task, state, sample)
        z = ref.step(sample.views, text, sharp.logit_scale)
        assert out.prediction == int(z.argmax()) and out.confidence == pytest.approx(float(z.softmax(-1).max()),
                                                                                     abs=1e-5)
        assert out.prediction_before == int((sample.views[0] @ text).argmax())
        boosted_changed += any([e[1] for e in ref.temp[c]] != [e[1] for e in ref.pos.get(c, [])] for c in ref.temp)
    assert boosted_changed > 150 and int((state["pos_count"] == 3).sum()) >= C - 1
    assert int((state["neg_count"] == 2).sum()) >= 3
    for prefix, cache in (("pos", ref.pos), ("neg", ref.neg)):  # the same entries in the same order
        for c in range(C):
            entries = cache.get(c, [])
            assert int(state[f"{prefix}_count"][c]) == len(entries)
            for j, entry in enumerate(entries):
                torch.testing.assert_close(state[f"{prefix}_keys"][c, j], entry[0], rtol=0, atol=1e-6)
                assert float(state[f"{prefix}_entropy"][c, j]) == pytest.approx(entry[1], abs=1e-5)
    if mean:  # the historical entries are unnormalised means, not views
        norms = state["pos_keys"].norm(dim=-1)
        assert (norms < 1 - 1e-4).all()


def test_the_boosting_leaves_no_trace_in_the_state(sharp):
    """With view 0 as the historical sample, the state after every sample is the one a method without
    views (no boosting) reaches on view 0 alone: the boosted copy is discarded, no view is kept."""
    samples = viewed(stream(120, seed=3), seed=4)
    boosted, plain = boostadapter(None), boostadapter(BoostAdapterConfig(views=1))
    a, b = boosted.begin(sharp, TASK, 120), plain.begin(sharp, TASK, 120)
    differ = 0
    for s in samples:
        out = boosted.step(sharp, TASK, a, s)
        differ += out.prediction != plain.step(sharp, TASK, b, dataclasses.replace(s, views=None)).prediction
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert differ > 0  # the boosting changes predictions, not the state
    kept = a["pos_keys"][torch.arange(3)[None, :] < a["pos_count"][:, None]]
    view0 = torch.stack([s.views[0] for s in samples])
    others = torch.cat([s.views[1:] for s in samples])
    assert len(kept) >= 3 * C - 1 and (kept[:, None] == view0[None]).all(-1).any(1).all()  # each a view 0, exactly
    assert ((kept[:, None] - others[None]).norm(dim=-1).min(1).values > 0.1).all()  # no other view


def test_the_boosted_copy_is_this_images_views_within_3_plus_delta_per_class(sharp):
    for delta in (0, 1, 3):
        method = boostadapter(BoostAdapterConfig(delta=delta))
        text = method.text(sharp, TASK)
        state, truncated = method.begin(sharp, TASK, 150), 0
        for s in viewed(stream(150, seed=5), seed=6, noise=1.5):
            logits = sharp.logit_scale * s.views @ text
            top = method.top_views(logits)
            labels = [int(z.argmax()) for z in logits[top]]
            before = {k: v.clone() for k, v in state.items()}
            method.step(sharp, TASK, state, s)
            hist = method.historical(TASK, s.views, logits, top)
            copy_rows = boost(state["pos_entropy"], state["pos_count"], -(logits[top].softmax(1) *
                              logits[top].log_softmax(1)).sum(1), labels, 3 + delta)
            assert sorted(copy_rows) == sorted(set(labels))
            for c, kept in copy_rows.items():
                assert len(kept) <= 3 + delta and len(set(kept.tolist())) == len(kept)
                truncated += int(state["pos_count"][c]) + labels.count(c) > 3 + delta
                views = kept[kept >= 3] - 3  # the copy's non-historical entries: this image's top views
                assert all(labels[i] == c for i in views.tolist())
                assert (kept[kept < 3] < state["pos_count"][c]).all()
            changed = [c for c in range(C) if not torch.equal(before["pos_keys"][c], state["pos_keys"][c])]
            assert changed in ([], [int(hist.logits.argmax())])  # only the historical entry entered
        assert truncated > 20


def test_boost_keeps_the_lowest_entropies_and_the_older_of_equals():
    entropy = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    count = torch.tensor([3, 0, 1])
    views = torch.tensor([0.2, 0.5, 0.05, 0.3, 0.3])
    kept = boost(entropy, count, views, [0, 0, 0, 1, 2], capacity=4)
    assert kept[0].tolist() == [5, 0, 3, 1]  # 0.05, 0.1, 0.2, then the historical 0.5 before the view's
    assert kept[1].tolist() == [6] and kept[2].tolist() == [0, 7]  # historical 0.3 ranks before an equal view
    assert boost(entropy, count, views, [0] * 5, capacity=3)[0].tolist() == [5, 0, 3]  # views displace
    assert boost(entropy, count, views, [0] * 5, capacity=0) == {}
    g = torch.Generator().manual_seed(0)  # one by one under the authors' rule = the stable sort of the union
    for _ in range(200):
        hist = torch.randint(0, 4, (2, 3), generator=g).float().sort(-1).values
        n = torch.randint(0, 4, (2,), generator=g)
        ents = torch.randint(0, 4, (6,), generator=g).float()
        labels = torch.randint(0, 2, (6,), generator=g).tolist()
        cache = {c: [(j, float(hist[c, j])) for j in range(int(n[c]))] for c in range(2) if n[c]}
        for i, label in enumerate(labels):
            Reference.update(cache, label, (3 + i, float(ents[i])), 4, fifo=False)
        got = boost(hist, n, ents, labels, 4)
        assert {c: v.tolist() for c, v in got.items()} == {c: [j for j, _ in cache[c]] for c in set(labels)}


def test_the_negative_cache_is_first_in_first_out_with_capacity_2():
    method = boostadapter(None)
    fifo, tda_state = method._empty(2, 8, "cpu"), method._empty(2, 8, "cpu")
    for i, h in enumerate([0.5, 0.1, 0.9, 0.7]):
        values = {"keys": torch.eye(8)[i], "mask": torch.tensor([True, i % 2 == 0])}
        assert enqueue(fifo, "neg", 1, torch.tensor(h), values, 2)
        admit(tda_state, "neg", 1, torch.tensor(h), values, 2)
        assert int(fifo["neg_count"][1]) == min(i + 1, 2)
    assert fifo["neg_keys"][1].argmax(-1).tolist() == [2, 3]  # the two newest, oldest first
    assert fifo["neg_entropy"][1].tolist() == pytest.approx([0.9, 0.7])
    assert fifo["neg_mask"][1].tolist() == [[True, True], [True, False]]
    assert tda_state["neg_keys"][1].argmax(-1).tolist() == [1, 0]  # TDA's rule kept the lowest entropies
    assert int(fifo["neg_count"][0]) == 0 and not fifo["neg_keys"][0].any()
    assert not enqueue(fifo, "neg", 0, torch.tensor(0.1), {"keys": torch.ones(8), "mask": torch.ones(2, dtype=bool)}, 0)


def test_one_step_by_hand(sharp):
    """The first sample, 20 views: view 0 near class 0, views 7 and 12 the prompts of classes 3 and 5
    (the 2 = int(20 * 0.1) most confident), the rest near the mean prompt. Logits = z0 + alpha at class
    0 (view 0 reads itself) + alpha exp(-beta (1 - f0.t_c)) at 3 and 5 - 0.117 at view 0's mask."""
    method = boostadapter(BoostAdapterConfig(views=20, pos_alpha=1.5, entropy_lower=0.0, entropy_upper=0.7))
    text = method.text(sharp, TASK)
    g = torch.Generator().manual_seed(7)
    views = F.normalize(text.mean(1)[None] + 0.01 * torch.randn(20, 64, generator=g), dim=-1)
    views[0] = F.normalize(text[:, 0] + 0.3 * text.mean(1), dim=0)
    views[7], views[12] = text[:, 3], text[:, 5]
    sample = dataclasses.replace(stream(1)[0], embedding=views[0] * 4, views=views)
    logits = sharp.logit_scale * views @ text
    assert sorted(method.top_views(logits).tolist()) == [7, 12] and int(logits[0].argmax()) == 0
    f0, z0 = views[0], logits[0]
    probs = z0.softmax(-1)
    mask = ((probs > 0.03) & (probs < 1.0)).float()
    beta = method.positive(TASK)[1]
    expected = z0 - 0.117 * mask
    expected[0] += 1.5
    for c in (3, 5):
        expected[c] += 1.5 * math.exp(-beta * (1 - float(f0 @ text[:, c])))
    state = method.begin(sharp, TASK, 1)
    out = method.step(sharp, TASK, state, sample)
    torch.testing.assert_close(method.scores(state, method.historical(TASK, views, logits, torch.tensor([12, 7])),
                                             views[[12, 7]], {3: torch.tensor([4]), 5: torch.tensor([3])}, TASK),
                               expected, rtol=0, atol=1e-4)
    assert out.prediction == int(expected.argmax())
    assert out.confidence == pytest.approx(float(expected.softmax(-1).max()), abs=1e-5)
    assert state["pos_count"].tolist() == [1] + [0] * (C - 1) and torch.equal(state["pos_keys"][0, 0], f0)
    assert state["neg_count"].tolist() == [1] + [0] * (C - 1)
    # a full class 3 with entropies above the view's: the copy (delta 1) keeps the view and its 3 entries;
    # with delta 0 the view replaces the highest, and the state keeps all three either way
    for delta, kept in ((1, [3, 0, 1, 2]), (0, [3, 0, 1])):
        state = method.begin(sharp, TASK, 1)
        for j in range(3):
            admit(state, "pos", 3, torch.tensor(5.0 + j), {"keys": torch.eye(64)[j]}, 3)
        copy_rows = boost(state["pos_entropy"], state["pos_count"], torch.tensor([0.01]), [3], 3 + delta)
        assert copy_rows[3].tolist() == kept
        assert state["pos_count"][3] == 3 and state["pos_entropy"][3].tolist() == [5.0, 6.0, 7.0]


def test_the_views_and_settings_per_family(sharp):
    method = boostadapter(None)
    assert method.view_spec(sharp, IMAGENET) is None and method.view_count(IMAGENET) == 1
    spec = method.view_spec(sharp, DTD_TASK)
    assert spec.count == 63 and not spec.augmix and spec.min_scale == 0.08 and spec.size == sharp.input_size
    assert not method.view_spec(sharp, R_TASK).augmix and method.delta(SyntheticTask(name="food101")) == 3
    assert method.delta(SyntheticTask(name="imagenet-c/fog/5")) == 1 and method.historical_rule(R_TASK) == "mean"
    ttavlm = boostadapter(BoostAdapterConfig(protocol="tta-vlm"))
    assert ttavlm.view_spec(sharp, IMAGENET).count == 63 and ttavlm.delta(IMAGENET) == 1
    assert ttavlm.view_spec(sharp, DTD_TASK).augmix and not ttavlm.view_spec(sharp, R_TASK).augmix
    assert ttavlm.historical_rule(R_TASK) == "view0"
    assert boostadapter(BoostAdapterConfig(delta=2)).delta(IMAGENET) == 2
    assert boostadapter(BoostAdapterConfig(views=1)).view_spec(sharp, DTD_TASK) is None
    with pytest.raises(HarnessError, match="64 views"):
        method.step(sharp, TASK, method.begin(sharp, TASK, 1), stream(1)[0])
    for bad in (dict(views=0), dict(views=5), dict(views=4096), dict(top=0.0), dict(delta=-1), dict(delta=101),
                dict(historical="crop"), dict(augmix="yes"), dict(protocol="paper"), dict(min_scale=0.0),
                dict(pos_capacity=101)):
        with pytest.raises(HarnessError):
            BoostAdapterConfig(**bad)


def test_on_imagenet_it_is_tda_with_a_fifo_negative_cache(sharp):
    samples = stream(150, seed=8)
    state, rows = run(boostadapter(BoostAdapterConfig(neg_capacity=100)), sharp, samples, task=IMAGENET)
    other, reference = run(tda(TdaConfig(neg_capacity=100)), sharp, samples, task=IMAGENET)  # nothing evicted
    assert [r.prediction for r in rows] == [r.prediction for r in reference]
    assert all(torch.equal(state[k], other[k]) for k in state if k.startswith("pos"))
    assert torch.equal(state["neg_count"], other["neg_count"]) and int(state["neg_count"].max()) > 2


def test_the_state_after_k_samples_depends_on_those_k_only(sharp):
    method = boostadapter(None)
    shared = viewed(stream(40, seed=1), seed=1)
    first, _ = run(method, sharp, shared + viewed(stream(30, seed=2), seed=2))
    second, _ = run(method, sharp, shared)
    third, _ = run(method, sharp, shared + viewed(stream(30, seed=9), seed=9))
    assert not all(torch.equal(first[k], third[k]) for k in first)
    after_k = method.begin(sharp, TASK, 40)
    run(method, sharp, shared, after_k)
    assert all(torch.equal(second[k], after_k[k]) for k in second)


def test_a_saved_state_continues_exactly_as_an_uninterrupted_stream(sharp):
    method = boostadapter(None)
    samples = viewed(stream(120, seed=4), seed=5)
    whole, rows = run(method, sharp, samples, task=R_TASK)
    part, head = run(method, sharp, samples[:70], task=R_TASK)
    restored = load(save(part))
    assert restored.keys() == part.keys() and restored["neg_mask"].dtype == torch.bool
    other = boostadapter(BoostAdapterConfig())  # another worker's method, from the same settings
    tail = [other.step(sharp, SyntheticTask(name="imagenet-r", per_class=1), restored, s) for s in samples[70:]]
    assert head + tail == rows
    assert all(torch.equal(whole[k], restored[k]) for k in whole)


def test_flops_include_the_views_forwards_and_the_state_size(teacher):
    meta = meta_teacher(teacher.config)
    method = boostadapter(None)
    d = meta.embed_dim
    caches = 2 * C * 3 * d + 2 * C * 2 * d + 2 * C * 2 * C
    assert method.flops(meta, TASK, 100) == 64 * meta.image_flops + 64 * 2 * d * C + caches + 2 * 6 * d
    assert method.flops(meta, TASK, 100) == method.flops(teacher, TASK, 100)
    assert method.flops(meta, IMAGENET, 100) == tda(TdaConfig()).flops(meta, IMAGENET, 100)  # one view there
    assert boostadapter(BoostAdapterConfig(pos_capacity=0)).flops(meta, TASK, 100) == (
        64 * meta.image_flops + 64 * 2 * d * C + 2 * C * 2 * d + 2 * C * 2 * C)  # no boosting without the cache
    state = method.begin(teacher, TASK, 100)
    assert sum(t.nbytes for t in state.values()) == method.state_bytes(teacher.embed_dim, C, 100)
    assert method.state_bytes(512, 1000, 50_000) == 12_276_000


def test_the_registry_builds_it_with_its_settings():
    entry = METHODS.get("boostadapter")
    assert entry(None).config == BoostAdapterConfig() and not entry.episodic
    built = entry(BoostAdapterConfig(delta=2))
    assert built.name == "boostadapter" and built.config.delta == 2
    assert entry.settings_class() is BoostAdapterConfig
