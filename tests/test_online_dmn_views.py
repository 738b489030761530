"""DMN-ZS with views: the memory against a list-based re-statement of the authors' multi-view
update (the 3 lowest-entropy of 32 views, their averaged probabilities for the pseudo-label and the
entropy, view 0's feature written), a hand-computed sample whose centre view and confident views
disagree (and where the authors' probability average and TTA-VLM's logit average disagree), the views
asked of the engine, and the online contract (prefix determinism, a checkpoint that continues exactly,
FLOPs with the views' forwards on the meta device)."""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from harness.errors import HarnessError
from harness.methods.dmn_views import dmn, pseudo_label
from harness.methods.online_configs import DmnConfig, DmnViewsConfig
from harness.methods.registry import METHODS
from harness.models.teacher import meta_teacher
from tasks.synthetic import SyntheticTask
from tests.online_streams import TASK, run, sample, stream

C = len(TASK.classnames)
DIM = 64


def with_views(samples, views=32, seed=0, spread=1.0):
    """Each sample with `views` normalised view embeddings: view 0 its own, the others it plus
    Gaussian noise (so the views' pseudo-labels differ from view 0's now and then)."""
    g = torch.Generator().manual_seed(1000 + seed)
    out = []
    for s in samples:
        e = s.embedding
        others = e + spread * float(e.norm()) / math.sqrt(e.numel()) * torch.randn(views - 1, e.numel(), generator=g)
        out.append(dataclasses.replace(s, views=F.normalize(torch.cat([e[None], others]), dim=-1)))
    return out


def view_stream(n, seed=0, views=32):
    return with_views(stream(n, seed=seed, dim=DIM), views, seed)


def entropy(p, eps):
    return -sum(float(x) * math.log(float(x) + eps) for x in p)


def by_hand_label(probs, keep):
    """The authors' select_confident_samples and mean of probabilities, in plain Python: the `keep`
    views of lowest -sum p log(p + 1e-6) (the lower view on ties), their probabilities averaged."""
    order = sorted(range(len(probs)), key=lambda v: (entropy(probs[v], 1e-6), v))[:keep]
    q = [sum(float(probs[v][c]) for v in order) / keep for c in range(len(probs[0]))]
    label = max(range(len(q)), key=lambda c: (q[c], -c))
    return label, entropy(q, 1e-8), order


def test_the_memory_follows_the_authors_multi_view_write_and_never_exceeds_its_size(sharp):
    for replace in ("if-lower", "always"):
        method = dmn(DmnViewsConfig(memory=4, replace=replace))
        text = method.text(sharp, TASK)
        state = method.begin(sharp, TASK, 300)
        ref = {c: [] for c in range(C)}  # per class: [feature, entropy] in slot order
        replaced = differ = 0
        for s in view_stream(300, seed=3):
            probs = (sharp.logit_scale * s.views @ text).softmax(-1)
            label, h, _ = by_hand_label(probs, 3)
            differ += label != int(probs[0].argmax())
            slots = ref[label]
            if len(slots) < 4:
                slots.append([s.views[0], h])
            else:
                worst = max(range(4), key=lambda j: (slots[j][1], -j))  # the highest, lowest slot on ties
                if replace == "always" or h < slots[worst][1]:
                    slots[worst] = [s.views[0], h]
                    replaced += 1
            method.step(sharp, TASK, state, s)
            assert (state["count"] <= 4).all() and state["memory"].shape[1] == 4
        assert replaced > 20 and differ > 20 and int((state["count"] == 4).sum()) >= 6
        for c in range(C):
            assert int(state["count"][c]) == len(ref[c])
            for j, (f, h) in enumerate(ref[c]):
                assert torch.equal(state["memory"][c, j], f)
                assert float(state["entropy"][c, j]) == pytest.approx(h, abs=1e-5)
            assert not state["memory"][c, len(ref[c]):].any()


def coords(**weights):
    """A unit vector of R^64 with the given coordinates on the classes (c0..c11, the orthonormal
    text classifier below) and the rest on axis 40, so its text logits are 100 times the weights."""
    v = torch.zeros(DIM)
    for name, w in weights.items():
        v[int(name[1:])] = w
    v[40] = math.sqrt(1 - float((v**2).sum()))
    return v


def hand_views():
    """View 0 leans to class 0 (logits 30, 28); view 1 is sure of class 2 (50); views 2 and 3 are
    fairly sure of class 3 (30 vs 25 for class 2); the other 28 spread over classes 0-5 (10 each).
    The 3 lowest-entropy views are 1, 2, 3: their mean probability is 0.66 on class 3, 0.34 on
    class 2; their mean logits 33.3 on class 2, 20 on class 3."""
    rows = [coords(c0=0.30, c1=0.28), coords(c2=0.5), coords(c3=0.30, c2=0.25), coords(c3=0.30, c2=0.25)]
    rows += [coords(**{f"c{c}": 0.1 for c in range(6)})] * 28
    return torch.stack(rows)


def test_the_pseudo_label_is_the_confident_views_average_not_view_0s(sharp):
    eye = torch.eye(DIM)[:, :C]
    views = hand_views()
    probs = (100.0 * views @ eye).softmax(-1)
    mean_probs, mean_logits = probs[1:4].mean(0), (100.0 * views[1:4] @ eye).mean(0).softmax(-1)
    assert int(probs[0].argmax()) == 0 and int(mean_probs.argmax()) == 3 and int(mean_logits.argmax()) == 2
    assert by_hand_label(probs, 3)[0] == 3 and by_hand_label(probs, 3)[2] == [1, 2, 3]
    for average, label, q in (("probs", 3, mean_probs), ("logits", 2, mean_logits)):
        method = dmn(DmnViewsConfig(alpha=0.5, average=average))
        method.text = lambda teacher, task: eye  # an orthonormal classifier: logits = 100 x the coordinates
        state = method.begin(sharp, TASK, 1)
        embedding = 7.0 * views[0]
        out = method.step(dataclasses.replace(sharp, logit_scale=100.0), TASK, state,
                          dataclasses.replace(sample(0, embedding), views=views))
        assert state["count"].tolist() == [int(c == label) for c in range(C)], average
        assert torch.equal(state["memory"][label, 0], views[0])  # view 0's feature, never a selected view's
        assert float(state["entropy"][label, 0]) == pytest.approx(entropy(q, 1e-8), rel=1e-5, abs=1e-6)
        # the read-out: class `label` attends over [view 0, its text], the others read their text alone
        f = views[0]
        keys = torch.stack([f, eye[:, label]])
        mean = (torch.softmax(5.5 * keys @ f, 0)[:, None] * keys).sum(0)
        memory = 100.0 * (f @ eye)
        memory[label] = 100.0 * float(mean @ f) / float(mean.norm())
        scores = probs[0] + 0.5 * memory.softmax(0)
        assert out.prediction_before == 0 and out.prediction == int(scores.argmax())
        assert out.confidence == pytest.approx(float(scores.max()) / 1.5, rel=1e-5)


def test_view_0_is_a_candidate_and_the_count_kept_is_int_views_times_top():
    eye = torch.eye(DIM)[:, :C]
    views = hand_views()
    views[0] = coords(c7=0.6)  # now the sharpest view
    logits = 100.0 * views @ eye
    label, h, chosen = pseudo_label(logits, 0.1, "probs")
    assert chosen.tolist() == [0, 1, 2]  # view 2 before view 3: equal entropies keep view order
    assert label == by_hand_label(logits.softmax(-1), 3)[0] == 2  # mean 0.335 on class 2, 0.333 on 7, 0.331 on 3
    assert float(h) == pytest.approx(entropy(logits[[0, 1, 2]].softmax(-1).mean(0), 1e-8), rel=1e-5)
    wide = torch.cat([logits, logits])  # 64 views: TTA-VLM's int(64 * 0.1) = 6
    assert pseudo_label(wide, 0.1, "logits")[2].tolist() == [0, 32, 1, 33, 2, 3]  # 2, 3, 34, 35 tie: view order
    assert len(pseudo_label(logits[:5], 0.1, "probs")[2]) == 1  # int(0.5) = 0 views: one is kept


def test_the_views_it_asks_for(teacher):
    spec = dmn(None).view_spec(teacher, TASK)
    assert (spec.count, spec.min_scale, spec.augmix, spec.size) == (31, 0.5, False, teacher.input_size)
    named = lambda name: SimpleNamespace(name=name, classnames=TASK.classnames)
    assert dmn(None).view_spec(teacher, named("dtd:/data/dtd")).augmix
    assert not dmn(None).view_spec(teacher, named("imagenet-a")).augmix
    assert not dmn(DmnViewsConfig(augmix="off")).view_spec(teacher, named("dtd")).augmix
    tta_vlm = dmn(DmnViewsConfig(views=64, min_scale=0.08, average="logits", replace="always"))
    assert (tta_vlm.view_spec(teacher, TASK).count, tta_vlm.view_spec(teacher, TASK).min_scale) == (63, 0.08)


def test_a_sample_without_its_views_is_refused(sharp):
    method = dmn(None)
    state = method.begin(sharp, TASK, 2)
    plain = stream(1, dim=DIM)[0]
    for bad in (plain, with_views([plain], views=8)[0]):
        with pytest.raises(HarnessError, match="32 views"):
            method.step(sharp, TASK, state, bad)


def test_the_state_after_k_samples_depends_on_those_k_only(sharp):
    method = dmn(DmnViewsConfig(memory=3))
    shared = view_stream(40, seed=1)
    first, _ = run(method, sharp, shared + view_stream(30, seed=2))
    second, _ = run(method, sharp, shared)
    assert not all(torch.equal(first[k], second[k]) for k in first)
    after_k = method.begin(sharp, TASK, 40)
    run(method, sharp, shared, after_k)
    assert all(torch.equal(second[k], after_k[k]) for k in second)


def test_a_saved_state_continues_exactly_as_an_uninterrupted_stream(sharp):
    config = DmnViewsConfig(memory=3, average="logits")
    samples = view_stream(100, seed=4)
    whole, rows = run(dmn(config), sharp, samples)
    part, head = run(dmn(config), sharp, samples[:60])
    restored = load(save(part))
    other = dmn(config)  # another worker's method, built from the same settings
    tail = [other.step(sharp, SyntheticTask(per_class=1), restored, s) for s in samples[60:]]
    assert head + tail == rows
    assert all(torch.equal(whole[k], restored[k]) for k in whole)


def test_flops_include_the_views_forwards_on_the_meta_teacher(teacher):
    meta = meta_teacher(teacher.config)
    d = meta.embed_dim
    read = 2 * C * 50 * d * 2 + 2 * d * C + 2 * C * d  # slot cosines, weighted sums, text cosines, v.f
    for views in (32, 64):
        method = dmn(DmnViewsConfig(views=views))
        assert method.flops(meta, TASK, 100) == views * meta.image_flops + views * 2 * d * C + read
        assert method.flops(meta, TASK, 100) == method.flops(teacher, TASK, 100)
    state = dmn(None).begin(teacher, TASK, 100)
    assert sum(t.nbytes for t in state.values()) == dmn(None).state_bytes(teacher.embed_dim, C, 100)
    assert dmn(None).state_bytes(512, 1000, 50_000) == 102_608_000


def test_settings_and_registry():
    entry = METHODS.get("dmn")
    assert entry(None).config == DmnViewsConfig() and not entry.episodic and entry.settings_class() is DmnViewsConfig
    assert entry(None).name == "dmn" and METHODS.get("dmn-weak")(None).name == "dmn-weak"
    d = DmnViewsConfig()
    assert (d.views, d.min_scale, d.augmix, d.top, d.average) == (32, 0.5, "auto", 0.1, "probs")
    assert (d.memory, d.beta, d.alpha, d.replace) == (DmnConfig().memory, 5.5, 1.0, "if-lower")
    for bad in (dict(views=1), dict(views=4096), dict(min_scale=0.0), dict(top=0.0), dict(top=1.5),
                dict(average="features"), dict(augmix="sometimes"), dict(memory=1001), dict(replace="never")):
        with pytest.raises(HarnessError):
            DmnViewsConfig(**bad)
