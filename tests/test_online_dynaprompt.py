"""DynaPrompt: the selection rules against their lines of zzzx1224/DynaPrompt's test_time_tuning (the
id-as-position slip included) and the paper's rule, the buffer against the authors' list bookkeeping
(ctx_order, ctx_use: the least recently selected prompt reset to V0 once all are used), V0 always
selected and untouched, one AdamW step by hand that moves the selected prompts only, and the online
contract (prefix determinism, a checkpoint that continues exactly, FLOPs with the text tower's forward
and backward on the meta device)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

import harness.methods.dynaprompt as dp
from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods.dynaprompt import dynaprompt, encode_prompt
from harness.methods.dynaprompt_buffer import criteria, most_selected, refresh, select_code, select_paper
from harness.methods.learning_configs import DynaPromptConfig
from harness.methods.prompt import counted
from harness.methods.registry import METHODS
from harness.models.teacher import meta_teacher
from tasks.synthetic import SyntheticTask
from tests.online_streams import TASK, run, stream

C = len(TASK.classnames)
DIM = 64


def viewed(samples, views=64, seed=0, noise=2.0):
    """Each sample with `views` unit views: view 0 its own embedding, the others it plus noise."""
    g = torch.Generator().manual_seed(500 + seed)
    out = []
    for s in samples:
        e = F.normalize(s.embedding, dim=0)
        extra = e[None] + noise / DIM ** 0.5 * torch.randn(views - 1, DIM, generator=g)
        out.append(dataclasses.replace(s, views=F.normalize(torch.cat([e[None], extra]), dim=-1)))
    return out


def view_stream(n, seed=0, views=64):
    return viewed(stream(n, seed=seed, dim=DIM), views, seed)


def authors_selection(p_ent, plpd, init_p_position, num_prompts):
    """Their lines, with torch.topk's unspecified tie order replaced by a stable sort (ties: lowest id)."""
    ent_order = p_ent.argsort(descending=True, stable=True)
    exactnumber = torch.where(ent_order == init_p_position)[0].item()
    plpd_order = plpd.argsort(descending=True, stable=True)
    exactnumberlist1 = ent_order[min(exactnumber + 1, num_prompts - 1):]
    exactnumberlist2 = plpd_order[:exactnumber]
    alllist = np.intersect1d(exactnumberlist1.numpy(), exactnumberlist2.numpy())
    if set(alllist):
        exactnumber = torch.cat([ent_order[alllist], ent_order[[exactnumber]]], dim=0).numpy()
    else:
        exactnumber = ent_order[exactnumber].numpy()
    return np.array(exactnumber).reshape(-1).tolist()


def test_the_selection_rules_by_hand_and_against_the_authors_lines():
    # E = [4, 1, 2, 3, 0], V0 = slot 1 at rank r = 1; the one largest drop is slot 0, a candidate (its
    # entropy is below V0's); their code then takes the prompt AT position 0 of E: slot 4, the most uncertain
    h = torch.tensor([0.1, 0.9, 0.5, 0.2, 1.0])
    d = torch.tensor([0.9, 0.0, 0.1, 0.2, 0.3])
    assert select_code(h, d, 1) == [4, 1] == authors_selection(h, d, 1, 5)
    assert select_paper(h, d, 1) == [0, 2, 3, 1]  # entropy below 0.9 and drop above 0.0
    # V0 the least uncertain (r = M - 1): candidates E[M-1:] = [V0]; V0 among the 2 largest drops -> E[2], V0
    h, d = torch.tensor([0.5, 0.6, 0.1]), torch.tensor([0.0, 0.3, 0.2])
    assert select_code(h, d, 2) == [2, 2] == authors_selection(h, d, 2, 3)  # V0 twice
    assert select_paper(h, d, 2) == [2]
    # V0 the most uncertain (r = 0): no drop candidates, V0 alone; copies of V0 tie and rank by slot
    assert select_code(torch.tensor([0.3, 0.9, 0.9]), torch.tensor([0.5, 0.1, 0.9]), 1) == [1]
    zeros = torch.zeros(4)
    assert select_code(zeros, zeros, 0) == [0] and select_paper(zeros, zeros, 2) == [2]
    g = torch.Generator().manual_seed(0)
    for _ in range(500):
        m = int(torch.randint(2, 13, (1,), generator=g))
        h, d = torch.randint(0, 4, (m,), generator=g).float(), torch.randint(0, 4, (m,), generator=g).float()
        v0 = int(torch.randint(0, m, (1,), generator=g))
        chosen = select_code(h, d, v0)
        assert chosen == authors_selection(h, d, v0, m) and chosen[-1] == v0
        assert len(set(chosen)) <= most_selected(m, "code")
        paper = select_paper(h, d, v0)
        assert paper[-1] == v0 and all(h[i] < h[v0] and d[i] > d[v0] for i in paper[:-1])
    assert most_selected(12, "code") == 6 and most_selected(10, "code") == 5 and most_selected(12, "paper") == 12


def test_the_criteria_are_mean_entropy_and_the_drop_of_the_top_logit():
    logits = torch.tensor([[[5.0, 1.0, 0.0], [2.0, 2.0, 2.0]], [[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]],
                           [[0.0, 0.0, 1.0], [2.0, 6.0, 0.0]]])  # (3 views, 2 prompts, 3 classes)
    h, d = criteria(logits)

    def ent(z):
        p = z.softmax(-1)
        return float(-(p * p.log()).sum())
    assert h.tolist() == pytest.approx([sum(ent(logits[v, m]) for v in range(3)) / 3 for m in range(2)])
    assert d.tolist() == pytest.approx([((5 - 4) + (5 - 1)) / 2, ((2 - 1) + (2 - 6)) / 2])  # each view's own top


class Recorder:
    """Wraps the module's `select`: every sample's logits, V0 slot and selection, in order."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = dp.select

        def spy(logits, initial, rule):
            chosen = real(logits, initial, rule)
            self.calls.append((initial, chosen))
            return chosen

        monkeypatch.setattr(dp, "select", spy)


@pytest.mark.parametrize("selection", ["code", "paper"])
def test_the_buffer_follows_the_authors_list_bookkeeping_and_never_exceeds_m(sharp, monkeypatch, selection):
    """Their ctx_order (front: least recently selected) and ctx_use, kept as lists beside the method:
    V0 is always ctx_order[0], an untouched prompt, and always selected; once every prompt is used the
    front one is reset before the sample; the state holds M prompts whatever the stream's length."""
    m = 5
    method, rec = dynaprompt(DynaPromptConfig(prompts=m, selection=selection)), Recorder(monkeypatch)
    state = method.begin(sharp, TASK, 24)
    order, use, resets, grown = list(range(m)), [0] * m, 0, 0
    for s in view_stream(24, seed=2):
        before = state["ctx"].clone()
        reset = None
        if use.count(0) == 0:
            reset, use[order[0]] = order[0], 0
            resets += 1
        method.step(sharp, TASK, state, s)
        initial, chosen = rec.calls[-1]
        assert initial == order[0] and initial in chosen and chosen[-1] == initial
        assert use[initial] == 0 and (reset is None or reset == initial)
        assert not before[initial].any() or initial == reset  # V0: an untouched prompt, or the one just reset
        for i in chosen:
            order.remove(i)
            order.append(i)
            use[i] += 1
        grown += len(chosen) > 1
        assert state["ctx"].shape[0] == m and state["last"].shape == state["uses"].shape == (m,)
        assert state["uses"].tolist() == use
        assert state["last"].argsort(stable=True).tolist() == order
        assert int((state["ctx"].abs().sum((1, 2)) > 0).sum()) == sum(u > 0 for u in use)  # tuned iff used
    assert resets >= 24 - m and grown >= 3  # a reset every sample once full; other prompts chosen too


def test_the_reset_is_the_least_recently_selected_slot_back_to_v0():
    state = {"ctx": torch.ones(4, 2, 3), "last": torch.tensor([5, 2, 9, 7]), "uses": torch.tensor([1, 3, 1, 2]),
             "clock": torch.tensor(9)}
    assert refresh(state) == 1
    assert not state["ctx"][1].any() and state["uses"].tolist() == [1, 0, 1, 2] and state["ctx"][[0, 2, 3]].eq(1).all()
    assert state["last"].tolist() == [5, 2, 9, 7]  # it stays the least recent: V0 of the coming sample
    assert refresh(state) is None  # a slot unused since its reset: nothing is deleted
    tied = {"ctx": torch.ones(3, 1, 1), "last": torch.tensor([4, 2, 2]), "uses": torch.ones(3, dtype=torch.long)}
    assert refresh(tied) == 1  # equal times: the lowest slot


def test_one_step_by_hand_moves_the_selected_prompts_only(sharp):
    """A buffer with random offsets, slots 2 and 0 selected: AdamW from fresh moments moves each
    selected offset by -lr g / (|g| + 1e-8) after the decay (1 - lr wd), g the gradient of TPT's loss
    recomputed here; every other slot only decays; the teacher's weights get no gradient; the prediction
    is view 0's mean logits over the tuned 2 and 0."""
    cfg = DynaPromptConfig(prompts=5)
    method = dynaprompt(cfg)
    sample = view_stream(1, seed=3)[0]
    state = method.begin(sharp, TASK, 1)
    state["ctx"] = 0.01 * torch.randn(state["ctx"].shape, generator=torch.Generator().manual_seed(4))
    start = state["ctx"].clone()
    learner = method.learner(sharp, TASK)
    views = sample.views

    offsets = start.clone().requires_grad_(True)
    logits = [sharp.logit_scale * views @ encode_prompt(learner, learner.ctx_init + offsets[m]).T for m in (2, 0)]
    z = torch.stack(logits, 1)  # (64, 2, C)
    per_view = -(z.softmax(-1) * z.log_softmax(-1)).sum(-1).mean(-1)
    keep = per_view.argsort(stable=True)[:6]
    mean_p = z[keep].softmax(-1).mean(0)  # (2, C)
    loss = -(mean_p * mean_p.log()).sum(-1).mean()
    (grad,) = torch.autograd.grad(loss, offsets)
    assert grad[[2, 0]].abs().min() > 0 and not grad[[1, 3, 4]].any()

    tuned = method.tune(sharp, TASK, state, views, lambda z, v0: [2, 0])
    decay = 1 - cfg.lr * cfg.weight_decay
    expected = start * decay - cfg.lr * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(state["ctx"], expected, rtol=0, atol=2e-7)
    torch.testing.assert_close(state["ctx"][[1, 3, 4]], start[[1, 3, 4]] * decay, rtol=0, atol=1e-9)
    assert float(tuned.loss) == pytest.approx(float(loss.detach()), abs=1e-5) and tuned.stepped
    assert all(p.grad is None for p in sharp.model.parameters())
    with torch.no_grad():
        after = [sharp.logit_scale * views[0] @ encode_prompt(learner, learner.ctx_init + state["ctx"][m]).T
                 for m in (2, 0)]
    torch.testing.assert_close(tuned.logits, (after[0] + after[1]) / 2, rtol=0, atol=1e-5)


def test_a_step_predicts_with_the_selected_prompts_and_v0_first_alone(sharp):
    method = dynaprompt(None)
    text = method.text(sharp, TASK)
    state = method.begin(sharp, TASK, 3)
    samples = view_stream(3, seed=5)
    out = method.step(sharp, TASK, state, samples[0])  # all prompts equal: V0 (slot 0) alone
    assert state["uses"].tolist() == [1] + [0] * 11 and state["last"].tolist() == [1] + [0] * 11
    assert state["ctx"][0].abs().min() > 0 and not state["ctx"][1:].any()
    learner = method.learner(sharp, TASK)
    with torch.no_grad():
        final = sharp.logit_scale * samples[0].views[0] @ encode_prompt(learner, learner.ctx_init + state["ctx"][0]).T
    assert out.prediction == int(final.argmax()) and out.confidence == pytest.approx(float(final.softmax(-1).max()))
    assert out.prediction_before == int((samples[0].views[0] @ text).argmax())
    assert out.steps == 1 and len(out.losses) == 1 and out.template_set == "single"
    with torch.no_grad():  # as the engine calls it: the tuning still has its gradients
        other = method.begin(sharp, TASK, 3)
        method.step(sharp, TASK, other, samples[0])
    assert torch.equal(other["ctx"], state["ctx"])


def test_the_state_after_k_samples_depends_on_those_k_only(sharp):
    method = dynaprompt(DynaPromptConfig(prompts=4))
    shared = view_stream(12, seed=1)
    first, _ = run(method, sharp, shared + view_stream(6, seed=2))
    second, _ = run(method, sharp, shared)
    third, _ = run(method, sharp, shared + view_stream(6, seed=9))
    assert not torch.equal(first["ctx"], third["ctx"])
    after_k = method.begin(sharp, TASK, 12)
    run(method, sharp, shared, after_k)
    assert all(torch.equal(second[k], after_k[k]) for k in second)


def test_a_saved_state_continues_exactly_as_an_uninterrupted_stream(sharp):
    cfg = DynaPromptConfig(prompts=4)
    samples = view_stream(20, seed=4)
    whole, rows = run(dynaprompt(cfg), sharp, samples)
    part, head = run(dynaprompt(cfg), sharp, samples[:11])
    restored = load(save(part))
    assert restored.keys() == part.keys() and restored["ctx"].dtype == torch.float32
    assert restored["last"].dtype == torch.int64
    other = dynaprompt(cfg)  # another worker's method, from the same settings
    tail = [other.step(sharp, SyntheticTask(per_class=1), restored, s) for s in samples[11:]]
    assert head + tail == rows
    assert all(torch.equal(whole[k], restored[k]) for k in whole)


def test_flops_count_the_views_and_the_text_towers_forward_and_backward(teacher):
    meta = meta_teacher(teacher.config)
    for selection, m in (("paper", 3), ("code", 12)):
        method = dynaprompt(DynaPromptConfig(prompts=m, selection=selection))
        k = most_selected(m, selection)
        learner = method.learner(meta, TASK)
        fwd = count_flops(lambda: encode_prompt(learner, learner.ctx_init))
        ctx = learner.ctx_init.clone().requires_grad_(True)
        with counted(learner):
            both = count_flops(lambda: encode_prompt(learner, ctx).sum().backward())
        d, v = meta.embed_dim, 64
        logits = 2 * v * d * C
        expected = (v * meta.image_flops + m * (fwd + logits) + k * (both - fwd + logits)  # no grad into the views
                    + k * (fwd + 2 * d * C))
        assert both > 1.8 * fwd and method.flops(meta, TASK, 100) == expected
        assert method.flops(teacher, TASK, 100) == expected  # the same count on the real teacher
    state = dynaprompt(None).begin(teacher, TASK, 100)
    width = dynaprompt(None).learner(teacher, TASK).ctx_init.shape[-1]
    assert sum(t.nbytes for t in state.values()) == dynaprompt(None).state_bytes(width, C, 100)
    assert dynaprompt(None).state_bytes(512, 1000, 50_000) == 98_516
    assert dynaprompt(DynaPromptConfig(prompts=10)).state_bytes(512, 1000, 50_000) == 82_100


def test_views_settings_and_registry(sharp):
    method = dynaprompt(None)
    spec = method.view_spec(sharp, SyntheticTask(name="dtd", per_class=1))
    assert spec.count == 63 and spec.augmix and spec.min_scale == 0.08 and spec.size == sharp.input_size
    assert not method.view_spec(sharp, SyntheticTask(name="imagenet-r", per_class=1)).augmix
    assert not method.view_spec(sharp, TASK).augmix
    with pytest.raises(HarnessError, match="64 views"):
        method.step(sharp, TASK, method.begin(sharp, TASK, 1), stream(1, dim=DIM)[0])
    for bad in (dict(prompts=0), dict(prompts=121), dict(selection="both"), dict(top=0.0), dict(views=8, top=0.1),
                dict(lr=-1.0), dict(views=1)):
        with pytest.raises(HarnessError):
            DynaPromptConfig(**bad)
    entry = METHODS.get("dynaprompt")
    assert entry(None).config == DynaPromptConfig() and not entry.episodic
    assert entry.settings_class() is DynaPromptConfig and entry(DynaPromptConfig(prompts=10)).config.prompts == 10
