"""DPE: a first step computed by hand (closed-form gradients of the entropy and InfoNCE terms, AdamW's
first step, the prediction and the textual evolution), its steps against a restatement of the authors'
main_dpe.py (nn.Parameter residuals, a fresh torch.optim.AdamW, a dict of sorted lists), the queues,
the evolution rule, and the online contract (prefix determinism, a checkpoint that continues exactly,
FLOPs with the views' forwards and the backward on the meta device, gradients into both residuals)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods.dpe import FirstPass, adamw_first_step, dpe
from harness.methods.learning_configs import DpeConfig
from harness.methods.registry import METHODS
from harness.methods.tda import admit
from harness.models.teacher import meta_teacher
from tasks.synthetic import SyntheticTask
from tests.online_streams import TASK, run, sample, stream

C = len(TASK.classnames)
A_TASK = SyntheticTask(name="imagenet-a", per_class=1)  # 64 views, the prediction re-selects them
I_TASK = SyntheticTask(name="imagenet", per_class=1)  # 64 views, the prediction on view 0
SUN = SyntheticTask(name="sun397", per_class=1)  # one view


def viewed(samples, views=64, seed=0, noise=3.0):
    """The samples with `views` unit views each: view 0 their own embedding, the others it plus noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in samples:
        e = s.embedding
        extra = e[None] + noise * torch.randn(views - 1, e.shape[0], generator=g)
        out.append(dataclasses.replace(s, views=F.normalize(torch.cat([e[None], extra]), dim=-1)))
    return out


def avg_entropy(outputs):
    """utils.avg_entropy of the authors (and TPT)."""
    logits = outputs - outputs.logsumexp(dim=-1, keepdim=True)
    avg = logits.logsumexp(dim=0) - math.log(logits.shape[0])
    avg = torch.clamp(avg, min=torch.finfo(avg.dtype).min)
    return -(avg * torch.exp(avg)).sum(dim=-1)


class Reference:
    """zhangce01/DPE-CLIP's run_test_dpe restated (TTA-VLM's adaptation_process with `ttavlm`): residual
    modules as nn.Parameters, get_clip_logits, update_cache and cache_key_value on a dict of lists, the
    InfoNCE package's formula, a new torch.optim.AdamW per sample, cumulative text average."""

    def __init__(self, text, p, scale, reselect, ttavlm=False):
        self.w, self.n, self.cache = text.clone(), 0, {}
        self.p, self.scale, self.reselect, self.ttavlm = p, scale, reselect, ttavlm

    def clip_logits(self, views, w):
        logits = self.scale * views @ w
        if len(views) == 1:
            return views, logits, -(logits.softmax(1) * logits.log_softmax(1)).sum(1)[0]
        ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
        sel = ent.detach().argsort(stable=True)[: int(len(views) * 0.1)]
        z = logits[sel].mean(0, keepdim=True)
        if self.ttavlm:
            q = z.softmax(-1)
            return views[sel].mean(0, keepdim=True), z, -(q * torch.log(q + 1e-5)).sum()
        return views[sel].mean(0, keepdim=True), z, avg_entropy(logits[sel])

    def step(self, views):
        p, classes_total = self.p, self.w.shape[1]
        local = self.w.clone()
        r_t = torch.nn.Parameter(torch.zeros_like(local))
        with torch.no_grad() if self.ttavlm else torch.enable_grad():
            f, z, entropy = self.clip_logits(views, F.normalize(local + r_t, dim=0))
        pred, h = int(z.argmax()), float(entropy.detach()) / math.log2(classes_total)
        item = [f.detach(), h]
        if pred in self.cache:
            if len(self.cache[pred]) < 3:
                self.cache[pred].append(item)
            elif h < self.cache[pred][-1][1]:
                self.cache[pred][-1] = item
            self.cache[pred] = sorted(self.cache[pred], key=lambda e: e[1])
        else:
            self.cache[pred] = [item]
        classes = sorted(self.cache)
        keys = torch.cat([sum(e[0] / len(self.cache[c]) for e in self.cache[c]) for c in classes]).T
        onehot = F.one_hot(torch.tensor(classes), classes_total).float()
        r_v = torch.nn.Parameter(torch.zeros_like(keys))
        w, k = F.normalize(local + r_t, dim=0), F.normalize(keys + r_v, dim=0)
        final = z + p.alpha * (-(p.beta - p.beta * f @ k)).exp() @ onehot
        q, pos = F.normalize(k.T, dim=-1), F.normalize(w[:, classes].T, dim=-1)
        nce = F.cross_entropy(q @ pos.T / 0.01, torch.arange(len(classes)))
        loss = avg_entropy(final) + nce * p.align
        opt = torch.optim.AdamW([{"params": [r_t], "lr": p.lr, "eps": 1e-3, "weight_decay": 0.1},
                                 {"params": [r_v], "lr": p.lr, "eps": 1e-3, "weight_decay": 0.1}])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            w, k = F.normalize(local + r_t, dim=0), F.normalize(keys + r_v, dim=0)
            if self.reselect:
                f2, z, _ = self.clip_logits(views, w)
                f = f if self.ttavlm else f2
            else:
                f, z = views[:1], self.scale * views[:1] @ w
            final = z + p.alpha * (-(p.beta - p.beta * f @ k)).exp() @ onehot
            if float(avg_entropy(final)) / math.log2(classes_total) < 0.1:
                self.n += 1
                self.w = self.w * (self.n / (self.n + 1)) + w * (1 / (self.n + 1))
        return final[0], r_t.detach(), r_v.detach()


def queues(state):
    return {c: [(state["cache_keys"][c, j], float(state["cache_entropy"][c, j])) for j in range(int(n))]
            for c, n in enumerate(state["cache_count"].tolist()) if n}


@pytest.mark.parametrize("task, views, protocol", [(TASK, 1, "authors"), (A_TASK, 64, "authors"),
                                                   (I_TASK, 64, "authors"), (A_TASK, 64, "tta-vlm"),
                                                   (SUN, 64, "tta-vlm")])
def test_the_steps_follow_the_authors_main_dpe(sharp, task, views, protocol):
    method = dpe(DpeConfig(protocol=protocol))
    assert method.view_count(task) == views
    ref = Reference(method.text(sharp, task), method.params(task), sharp.logit_scale, method.reselects(task),
                    ttavlm=protocol == "tta-vlm")
    samples = stream(60, seed=11)
    samples = viewed(samples, seed=12) if views > 1 else samples
    state = method.begin(sharp, task, 60)
    for s in samples:
        out = method.step(sharp, task, state, s)
        final, _, _ = ref.step(s.views if views > 1 else F.normalize(s.embedding, dim=-1)[None])
        assert out.prediction == int(final.argmax())
        assert out.confidence == pytest.approx(float(final.softmax(-1).max()), abs=1e-4)
    assert int(state["text_count"]) == ref.n and 5 < ref.n < 60
    torch.testing.assert_close(state["text"], ref.w, rtol=0, atol=2e-6)
    mine = queues(state)
    assert sorted(mine) == sorted(ref.cache) and any(len(v) == 3 for v in mine.values())
    for c, entries in ref.cache.items():
        assert [h for _, h in mine[c]] == pytest.approx([h for _, h in entries], abs=1e-5)
        for (key, _), (theirs, _) in zip(mine[c], entries):
            torch.testing.assert_close(key, theirs[0], rtol=0, atol=1e-6)


def test_one_step_by_hand(sharp):
    """Class 2 holds two queued features, class 5 one; the sample lies near class 2's prompt. The
    gradients in closed form: d entropy / d logit_j = -p_j (log p_j + H); through a normalised column
    x / |x| the gradient is projected off x and divided by |x|; InfoNCE's are (P p - p_i) / (k tau) and
    (P^T q - q_j) / (k tau). AdamW's first step from zero: -lr g / (|g| + eps)."""
    method = dpe(DpeConfig(threshold=100.0))  # the text evolves whatever the entropy
    p, s = method.params(TASK), sharp.logit_scale
    w0 = method.text(sharp, TASK)
    g = torch.Generator().manual_seed(3)
    a1, a2, a3 = F.normalize(torch.randn(3, 64, generator=g), dim=-1)
    f = F.normalize(w0[:, 2] + 0.8 * F.normalize(torch.randn(64, generator=g), dim=0), dim=0)
    state = method.begin(sharp, TASK, 4)
    admit(state, "cache", 2, torch.tensor(0.05), {"keys": a1}, 3)
    admit(state, "cache", 2, torch.tensor(0.90), {"keys": a2}, 3)
    admit(state, "cache", 5, torch.tensor(0.20), {"keys": a3}, 3)

    z = s * f @ w0
    assert int(z.argmax()) == 2
    logp = z.log_softmax(-1)
    h = float(-(logp.exp() * logp).sum()) / math.log2(C)
    assert 0.05 < h < 0.9  # it ranks second in class 2's queue
    keys = torch.stack([a1 / 3 + f / 3 + a2 / 3, a3], 1)
    f, w0, keys, z = f.double(), w0.double(), keys.double(), z.double()  # the hand computation in float64
    classes = [2, 5]
    kn = keys / keys.norm(dim=0)
    e = torch.exp(-(p.beta - p.beta * f @ kn))
    final = z.clone()
    final[classes] += p.alpha * e
    q = final.softmax(-1)
    ent = -(q * q.log()).sum()
    dfinal = -q * (q.log() + ent)
    grad_t = s * dfinal[None, :] * (f[:, None] - (f @ w0)[None, :] * w0)
    grad_v = torch.stack([dfinal[c] * p.alpha * p.beta * e[i] * (f - (kn[:, i] @ f) * kn[:, i]) / keys[:, i].norm()
                          for i, c in enumerate(classes)], 1)
    pos = w0[:, classes]
    sim = torch.softmax(kn.T @ pos / 0.01, dim=1)  # (k, k)
    d_q = (sim @ pos.T - pos.T) / (2 * 0.01)  # rows i
    d_p = (sim.T @ kn.T - kn.T) / (2 * 0.01)  # rows j
    for i, c in enumerate(classes):
        grad_v[:, i] += p.align * (d_q[i] - (d_q[i] @ kn[:, i]) * kn[:, i]) / keys[:, i].norm()
        grad_t[:, c] += p.align * (d_p[i] - (d_p[i] @ pos[:, i]) * pos[:, i])
    r_t = -p.lr * grad_t / (grad_t.abs() + 1e-3)
    r_v = -p.lr * grad_v / (grad_v.abs() + 1e-3)

    w_star = F.normalize(w0 + r_t, dim=0)
    k_star = F.normalize(keys + r_v, dim=0)
    expected = s * f @ w_star
    expected[classes] += p.alpha * torch.exp(-(p.beta - p.beta * f @ k_star))

    probe = {k: v.clone() for k, v in state.items()}  # the method's residuals on the same queues
    admit(probe, "cache", 2, torch.tensor(h), {"keys": f}, 3)
    got_keys, got_classes = method.prototypes(probe)
    assert got_classes.tolist() == classes
    torch.testing.assert_close(got_keys, keys.float(), rtol=0, atol=1e-7)
    read = FirstPass(f.float(), f.float()[None], z.float(), torch.tensor(h * math.log2(C)))
    got_t, got_v = method.residuals(w0.float(), got_keys, got_classes, read, s, p)
    # |R| <= lr = 6e-4; fp32 gradients (up to 20 through InfoNCE at temperature 0.01) are exact to ~1e-6,
    # and R moves by lr / eps = 0.6 per unit of gradient where |g| is below eps
    torch.testing.assert_close(got_t.double(), r_t, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(got_v.double(), r_v, rtol=1e-3, atol=1e-6)
    assert (r_t.abs() > 1e-5).sum() > C * 32 and (r_v.abs().sum(0) > 1e-5).all()  # not a trivially small update
    assert (got_t.abs().sum(0) > 0).all()  # every class's column moves (the entropy reaches them all)

    out = method.step(sharp, TASK, state, sample(0, f.float() * 2.5))
    assert out.prediction == int(expected.argmax()) and out.prediction_before == 2
    assert out.confidence == pytest.approx(float(expected.softmax(-1).max()), abs=1e-5)
    assert list(out.top5) == expected.argsort(descending=True)[:5].tolist()
    assert state["cache_count"].tolist() == [0, 0, 3, 0, 0, 1] + [0] * (C - 6)
    assert state["cache_entropy"][2].tolist() == pytest.approx([0.05, h, 0.9], abs=1e-5)
    torch.testing.assert_close(state["cache_keys"][2, 1], f.float(), rtol=0, atol=1e-7)
    assert int(state["text_count"]) == 1  # W0 counted once: (W0 + W*) / 2
    torch.testing.assert_close(state["text"].double(), 0.5 * w0 + 0.5 * w_star, rtol=0, atol=1e-5)


def test_adamws_first_step_is_torchs(sharp):
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(64, 12, generator=g) * torch.logspace(-6, 0, 12)
    for lr in (6e-4, 5e-5):
        param = torch.nn.Parameter(torch.zeros(64, 12))
        opt = torch.optim.AdamW([param], lr=lr, eps=1e-3, weight_decay=0.1, foreach=False)
        param.grad = grad.clone()
        opt.step()
        assert torch.equal(adamw_first_step(grad, lr), param.detach())


def test_the_queues_hold_three_and_replace_only_a_strictly_higher_entropy(sharp):
    method = dpe(None)
    state = method.begin(sharp, TASK, 200)
    cache, replaced, refused = {}, 0, 0
    for s in stream(200, seed=5):
        read = method.first_pass(F.normalize(s.embedding, dim=-1)[None], state["text"], sharp.logit_scale)
        label, h = int(read.logits.argmax()), float(read.entropy) / math.log2(C)
        entries = cache.setdefault(label, [])
        if len(entries) < 3:
            entries.append((h, s.position))
        elif h < entries[-1][0]:
            entries[-1] = (h, s.position)
            replaced += 1
        else:
            refused += 1
        entries.sort(key=lambda e: e[0])
        method.step(sharp, TASK, state, s)
        assert int(state["cache_count"].max()) <= 3
    assert replaced > 5 and refused > 20
    embeddings = {s.position: F.normalize(s.embedding, dim=-1) for s in stream(200, seed=5)}
    for c, entries in cache.items():
        assert int(state["cache_count"][c]) == len(entries)
        assert state["cache_entropy"][c, : len(entries)].tolist() == pytest.approx([h for h, _ in entries], abs=1e-6)
        for j, (_, position) in enumerate(entries):
            assert torch.equal(state["cache_keys"][c, j], embeddings[position])
    full = method.begin(sharp, TASK, 1)  # an equal entropy does not displace; a lower replaces the highest
    for j, h in enumerate((0.1, 0.2, 0.3)):
        admit(full, "cache", 0, torch.tensor(h), {"keys": torch.eye(64)[j]}, 3)
    admit(full, "cache", 0, torch.tensor(0.3), {"keys": torch.eye(64)[5]}, 3)
    assert full["cache_keys"][0].argmax(-1).tolist() == [0, 1, 2]
    admit(full, "cache", 0, torch.tensor(0.15), {"keys": torch.eye(64)[6]}, 3)
    assert full["cache_keys"][0].argmax(-1).tolist() == [0, 6, 1]
    assert full["cache_entropy"][0].tolist() == pytest.approx([0.1, 0.15, 0.2])


def test_the_text_prototypes_are_a_running_average_of_the_confident_adapted_classifiers(sharp, monkeypatch):
    """alpha = 0 (the final logits are s f.W*) and stand-in residuals R_t (seeded per call): W_g evolves
    to W_g n/(n+1) + W*/(n+1) exactly when entropy(s f.W*) / log2 C < 0.1, and only then."""
    method = dpe(DpeConfig(alpha=0.0))
    g = torch.Generator().manual_seed(9)
    drawn = []

    def residuals(text, keys, classes, read, scale, p):
        drawn.append(0.05 * torch.randn(text.shape, generator=g))
        return drawn[-1], torch.zeros_like(keys)

    monkeypatch.setattr(method, "residuals", residuals)
    w0 = method.text(sharp, TASK)
    expected, n, moved = w0.clone(), 0, 0
    state = method.begin(sharp, TASK, 120)
    for s in stream(120, seed=2, scale=1.0):
        method.step(sharp, TASK, state, s)
        w_star = F.normalize(expected + drawn[-1], dim=0)
        logits = sharp.logit_scale * F.normalize(s.embedding, dim=-1) @ w_star
        logp = logits.log_softmax(-1)
        if float(-(logp.exp() * logp).sum()) / math.log2(C) < 0.1:
            n += 1
            expected = expected * (n / (n + 1)) + w_star / (n + 1)
            moved += 1
        assert int(state["text_count"]) == n
        torch.testing.assert_close(state["text"], expected, rtol=0, atol=1e-6)
    assert 10 < moved < 110
    assert ((state["text"] - w0).norm(dim=0) > 1e-2).all()  # every column moved, not only the predicted ones


def test_gradients_reach_both_residuals(sharp):
    """On a cache of several classes: the authors' R_t moves every column (entropy) and R_v every
    prototype; TTA-VLM's R_t moves only the cached classes' columns (InfoNCE alone), none with align 0."""
    samples = stream(8, seed=4)
    for protocol in ("authors", "tta-vlm"):
        method = dpe(DpeConfig(protocol=protocol, views=1))
        state, _ = run(method, sharp, samples)
        keys, classes = method.prototypes(state)
        read = method.first_pass(F.normalize(samples[0].embedding, dim=-1)[None], state["text"], 100.0)
        r_t, r_v = method.residuals(state["text"], keys, classes, read, 100.0, method.params(TASK))
        uncached = torch.ones(C, dtype=torch.bool)
        uncached[classes] = False
        assert len(classes) >= 3 and uncached.any() and (r_v.abs().sum(0) > 0).all()
        assert (r_t[:, classes].abs().sum(0) > 0).all()
        if protocol == "authors":
            assert (r_t.abs().sum(0) > 0).all()
        else:
            assert not r_t[:, uncached].any()
            silent = dpe(DpeConfig(protocol=protocol, views=1, align=0.0))
            assert not silent.residuals(state["text"], keys, classes, read, 100.0, silent.params(TASK))[0].any()


def test_the_views_and_settings_per_family(sharp):
    method = dpe(None)
    assert method.view_spec(sharp, TASK) is None and method.view_spec(sharp, SUN) is None
    spec = method.view_spec(sharp, I_TASK)
    assert spec.count == 63 and spec.augmix and spec.min_scale == 0.08 and spec.size == sharp.input_size
    assert method.view_count(SyntheticTask(name="imagenet-c/fog/5")) == 64 and not method.reselects(I_TASK)
    assert method.reselects(A_TASK) and dataclasses.astuple(method.params(A_TASK)) == (6.0, 5.0, 3e-4, 2.5)
    assert dataclasses.astuple(method.params(SUN)) == (6.0, 3.0, 2e-4, 0.2)
    ttavlm = dpe(DpeConfig(protocol="tta-vlm"))
    assert ttavlm.view_spec(sharp, SUN).augmix and not ttavlm.view_spec(sharp, I_TASK).augmix
    assert ttavlm.params(SUN).align == 0.0002 and ttavlm.params(I_TASK).align == 0.5
    assert dpe(DpeConfig(views=1)).view_spec(sharp, I_TASK) is None
    assert dpe(DpeConfig(lr=1e-3)).params(SUN).lr == 1e-3
    with pytest.raises(HarnessError, match="64 views"):
        method.step(sharp, I_TASK, method.begin(sharp, I_TASK, 1), stream(1)[0])
    for bad in (dict(views=0), dict(views=4096), dict(top=0.0), dict(top=0.01), dict(capacity=0),
                dict(capacity=101), dict(protocol="paper"), dict(augmix="yes"), dict(lr=-1.0),
                dict(temperature=0.0), dict(templates="cupl"), dict(min_scale=0.0)):
        with pytest.raises(HarnessError):
            DpeConfig(**bad)


def test_the_state_after_k_samples_depends_on_those_k_only(sharp):
    method = dpe(None)
    shared = viewed(stream(30, seed=1), seed=1)
    first, _ = run(method, sharp, shared + viewed(stream(20, seed=2), seed=2), task=I_TASK)
    second, _ = run(method, sharp, shared, task=I_TASK)
    third, _ = run(method, sharp, shared + viewed(stream(20, seed=9), seed=9), task=I_TASK)
    assert not all(torch.equal(first[k], third[k]) for k in first)
    after_k = method.begin(sharp, I_TASK, 30)
    run(method, sharp, shared, after_k, task=I_TASK)
    assert all(torch.equal(second[k], after_k[k]) for k in second)


def test_a_saved_state_continues_exactly_as_an_uninterrupted_stream(sharp):
    method = dpe(None)
    samples = viewed(stream(80, seed=4), seed=5)
    whole, rows = run(method, sharp, samples, task=A_TASK)
    part, head = run(method, sharp, samples[:45], task=A_TASK)
    restored = load(save(part))
    assert restored.keys() == part.keys() and restored["text_count"].dtype == torch.int64
    other = dpe(DpeConfig())  # another worker's method, from the same settings, on one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tail = [other.step(sharp, SyntheticTask(name="imagenet-a", per_class=1), restored, s) for s in samples[45:]]
    finally:
        torch.set_num_threads(threads)
    assert head + tail == rows
    assert all(torch.equal(whole[k], restored[k]) for k in whole)


def test_flops_include_the_views_forwards_and_the_backward(sharp, teacher):
    meta = meta_teacher(teacher.config)
    method = dpe(None)
    d = meta.embed_dim
    loss_and_prediction = 3 * (2 * d * C + 2 * C * C) + 3 * 2 * C * d * C  # InfoNCE: forward and 2 in backward
    one = 2 * d * C * (1 + 2 + 1)  # the logits, z and its backward, the prediction's
    assert method.flops(meta, TASK, 100) == meta.image_flops + one + loss_and_prediction
    views = 64 * 2 * d * C + 2 * 2 * 6 * d * C  # every view's logits; z of the 6 and its backward
    assert method.flops(meta, I_TASK, 100) == 64 * meta.image_flops + views + 2 * d * C + loss_and_prediction
    assert method.flops(meta, A_TASK, 100) == 64 * meta.image_flops + views + 64 * 2 * d * C + loss_and_prediction
    assert dpe(DpeConfig(protocol="tta-vlm")).flops(meta, A_TASK, 100) == (  # no entropy gradient into the text
        method.flops(meta, A_TASK, 100) - 2 * 6 * d * C)
    assert method.flops(meta, A_TASK, 100) == method.flops(teacher, A_TASK, 100)
    for task, samples in ((TASK, stream(1, seed=3)), (A_TASK, viewed(stream(1, seed=3)))):  # a real step, full cache
        state = method.begin(sharp, task, 1)
        for c in range(C):
            admit(state, "cache", c, torch.tensor(0.5), {"keys": F.normalize(torch.randn(d), dim=0)}, 3)
        counted = count_flops(lambda: method.step(sharp, task, state, samples[0]))
        views = method.view_count(task)
        assert counted + views * meta.image_flops == method.flops(meta, task, 1) + 2 * d * C  # + prediction_before
    state = method.begin(teacher, TASK, 100)
    assert sum(t.nbytes for t in state.values()) == method.state_bytes(teacher.embed_dim, C, 100)
    assert method.state_bytes(512, 1000, 50_000) == 8_212_008


def test_the_registry_builds_it_with_its_settings():
    entry = METHODS.get("dpe")
    assert entry(None).config == DpeConfig() and not entry.episodic
    built = entry(DpeConfig(protocol="tta-vlm"))
    assert built.name == "dpe" and built.config.protocol == "tta-vlm"
    assert entry.settings_class() is DpeConfig
