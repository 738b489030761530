"""DMN-ZS in its single-view form: the memory against a list-based re-statement of the authors'
update_memory_bank (and TTA-VLM's replace-always), the replacement rule, a read-out computed by hand
as a per-class softmax-weighted mean, and the online contract (prefix determinism, a checkpoint that
continues exactly, FLOPs on the meta device)."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from harness.errors import HarnessError
from harness.methods.dmn import dmn_weak, read_memory, write
from harness.methods.online_configs import DmnConfig
from harness.methods.registry import METHODS
from harness.models.teacher import meta_teacher
from tasks.synthetic import SyntheticTask
from tests.online_streams import TASK, run, stream

C = len(TASK.classnames)


def by_hand(slots, text_c, f, beta, scale):
    """One class's memory logit: softmax(beta * cos) over its slots and its text feature, the weighted
    mean renormalised, scored against f (the form the authors' exp(-beta (1 - cos)) weights reduce to)."""
    keys = torch.stack([*slots, text_c])
    weights = torch.softmax(beta * (keys @ f), 0)
    mean = (weights[:, None] * keys).sum(0)
    return scale * float(mean @ f) / float(mean.norm())


def test_the_memory_follows_the_authors_write_and_never_exceeds_its_size(sharp):
    for replace in ("if-lower", "always"):
        method = dmn_weak(DmnConfig(memory=4, replace=replace))
        text = method.text(sharp, TASK)
        state = method.begin(sharp, TASK, 300)
        ref = {c: [] for c in range(C)}  # per class: [feature, entropy] in slot order
        replaced = 0
        for sample in stream(300):
            f = F.normalize(sample.embedding, dim=-1)
            p = (sharp.logit_scale * f @ text).softmax(-1)
            label, entropy = int(p.argmax()), float(-(p * torch.log(p + 1e-8)).sum())
            slots = ref[label]
            if len(slots) < 4:
                slots.append([f, entropy])
            else:
                worst = max(range(4), key=lambda j: (slots[j][1], -j))  # the highest, lowest slot on ties
                if replace == "always" or entropy < slots[worst][1]:
                    slots[worst] = [f, entropy]
                    replaced += 1
            method.step(sharp, TASK, state, sample)
            assert (state["count"] <= 4).all()
        assert replaced > 20 and int((state["count"] == 4).sum()) >= 6
        for c in range(C):
            assert int(state["count"][c]) == len(ref[c])
            for j, (f, entropy) in enumerate(ref[c]):
                assert torch.equal(state["memory"][c, j], f)
                assert float(state["entropy"][c, j]) == pytest.approx(entropy, abs=1e-5)
            assert not state["memory"][c, len(ref[c]):].any()


def test_a_full_class_replaces_its_highest_entropy_slot_by_the_rule():
    def full(entropies):
        return {"memory": torch.zeros(1, 3, 4), "entropy": torch.tensor([entropies]),
                "count": torch.tensor([3])}

    new = torch.ones(4)
    for replace, entropy, slot in (("if-lower", 0.95, None), ("if-lower", 0.9, None), ("if-lower", 0.3, 1),
                                   ("always", 0.95, 1), ("always", 0.01, 1)):
        state = full([0.5, 0.9, 0.2])
        assert write(state, 0, new, torch.tensor(entropy), replace) == (slot is not None)
        filled = state["memory"][0].sum(-1).nonzero().flatten().tolist()
        assert filled == ([] if slot is None else [slot]), (replace, entropy)
        assert int(state["count"][0]) == 3
    state = full([0.7, 0.2, 0.7])  # ties for the highest entropy: the lowest slot
    write(state, 0, new, torch.tensor(0.1), "if-lower")
    assert state["entropy"][0].tolist() == pytest.approx([0.1, 0.2, 0.7])


def test_the_read_out_is_a_per_class_softmax_weighted_mean_computed_by_hand():
    g = torch.Generator().manual_seed(7)
    dim, classes, slots, beta, scale = 16, 4, 3, 5.5, 100.0
    memory = torch.zeros(classes, slots, dim)
    count = torch.tensor([2, 0, 3, 1])
    for c in range(classes):
        memory[c, : count[c]] = F.normalize(torch.randn(int(count[c]), dim, generator=g), dim=-1)
    text = F.normalize(torch.randn(dim, classes, generator=g), dim=0)
    f = F.normalize(torch.randn(dim, generator=g), dim=0)
    logits = torch.tensor([by_hand(list(memory[c, : count[c]]), text[:, c], f, beta, scale) for c in range(classes)])
    torch.testing.assert_close(read_memory(memory, count, text, f, beta, scale), logits.softmax(0), rtol=1e-5,
                               atol=1e-6)
    # class 1 holds nothing: it reads its text feature alone, f.T_1 at the scale
    assert float(logits[1]) == pytest.approx(scale * float(f @ text[:, 1]), rel=1e-5)


def test_one_step_writes_first_and_adds_the_memory_probabilities(sharp):
    method = dmn_weak(DmnConfig(alpha=0.5))
    text = method.text(sharp, TASK)
    samples = stream(30, seed=2)
    state, _ = run(method, sharp, samples[:-1])
    f = F.normalize(samples[-1].embedding, dim=-1)
    p = (sharp.logit_scale * f @ text).softmax(-1)
    label = int(p.argmax())
    held = [state["memory"][label, j] for j in range(int(state["count"][label]))]
    out = method.step(sharp, TASK, state, samples[-1])
    assert torch.equal(state["memory"][label, len(held)], f)  # below the size: the next slot
    logits = []
    for c in range(C):
        slots = held + [f] if c == label else [state["memory"][c, j] for j in range(int(state["count"][c]))]
        logits.append(by_hand(slots, text[:, c], f, 5.5, sharp.logit_scale))
    scores = p + 0.5 * torch.tensor(logits).softmax(0)
    assert out.prediction == int(scores.argmax()) and out.prediction_before == label
    assert out.top5 == tuple(scores.argsort(descending=True)[:5].tolist())
    assert out.confidence == pytest.approx(float(scores.max()) / 1.5, rel=1e-5)


def test_the_state_after_k_samples_depends_on_those_k_only(sharp):
    method = dmn_weak(DmnConfig(memory=3))
    shared = stream(40, seed=1)
    first, _ = run(method, sharp, shared + stream(30, seed=2))
    second, _ = run(method, sharp, shared)
    assert not all(torch.equal(first[k], second[k]) for k in first)
    after_k = method.begin(sharp, TASK, 40)
    run(method, sharp, shared, after_k)
    assert all(torch.equal(second[k], after_k[k]) for k in second)


def test_a_saved_state_continues_exactly_as_an_uninterrupted_stream(sharp):
    method = dmn_weak(DmnConfig(memory=3))
    samples = stream(100, seed=4)
    whole, rows = run(method, sharp, samples)
    part, head = run(method, sharp, samples[:60])
    restored = load(save(part))
    other = dmn_weak(DmnConfig(memory=3))  # another worker's method, built from the same settings
    tail = [other.step(sharp, SyntheticTask(per_class=1), restored, s) for s in samples[60:]]
    assert head + tail == rows
    assert all(torch.equal(whole[k], restored[k]) for k in whole)


def test_flops_on_the_meta_teacher_and_the_state_size(teacher):
    meta = meta_teacher(teacher.config)
    method = dmn_weak(None)
    d = meta.embed_dim
    read = 2 * C * 50 * d * 2 + 2 * d * C + 2 * C * d  # slot cosines, weighted sums, text cosines, v.f
    assert method.flops(meta, TASK, 100) == meta.image_flops + 2 * d * C + read
    assert method.flops(meta, TASK, 100) == method.flops(teacher, TASK, 100)
    state = method.begin(teacher, TASK, 100)
    assert sum(t.nbytes for t in state.values()) == method.state_bytes(teacher.embed_dim, C, 100)
    assert method.state_bytes(512, 1000, 50_000) == 102_608_000


def test_settings_and_registry():
    entry = METHODS.get("dmn-weak")
    assert entry(None).config == DmnConfig() and not entry.episodic and entry.settings_class() is DmnConfig
    built = entry(DmnConfig(replace="always", templates="task"))
    assert built.name == "dmn-weak" and built.config.replace == "always" and built.templates(TASK) is TASK.templates
    assert (DmnConfig().memory, DmnConfig().beta, DmnConfig().alpha, DmnConfig().replace) == (50, 5.5, 1.0, "if-lower")
    for bad in (dict(memory=0), dict(memory=1001), dict(replace="never"), dict(alpha=-1.0)):
        with pytest.raises(HarnessError):
            DmnConfig(**bad)
