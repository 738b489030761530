"""OnZeta: its first two samples against the published update computed by hand in float64 (the authors'
multiply-and-renormalise form), rho's projection and the proxies' unit columns along a stream, the
per-set hyperparameters, and the online contract (prefix determinism, a checkpoint that continues
exactly, FLOPs on the meta device, the state's size)."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from harness.errors import HarnessError
from harness.methods.online_configs import OnzetaConfig
from harness.methods.onzeta import onzeta
from harness.methods.registry import METHODS
from harness.models.teacher import meta_teacher
from tests.online_streams import TASK, near, run, stream

C = len(TASK.classnames)


class Named:
    def __init__(self, name):
        self.name = name


def by_hand(x, text, w, rho, t, n, alpha=1.0, beta=0.8, tau_t=0.01, tau_i=0.04, cw=0.5, cr=20.0):
    """main_online.py's loop body for sample t (1 first), in float64."""
    lr, rlr, beta_t = cw / math.sqrt(t), cr / math.sqrt(t), beta * math.sqrt(t / n)
    tlabel = F.softmax(x @ text / tau_t, dim=0) * torch.exp(rho)
    tlabel = tlabel / tlabel.sum()
    rho = rho - rlr * (tlabel - alpha / text.shape[1])
    rho = torch.where(rho < 0, torch.zeros_like(rho), rho)
    vision = F.softmax(x @ w / tau_i, dim=0)
    output = beta_t * vision + (1 - beta_t) * tlabel
    w = F.normalize(w - (lr / tau_i) * torch.outer(x, vision - tlabel), dim=0)
    return output, w, rho


def test_the_first_two_samples_follow_the_published_update(teacher):
    method = onzeta(OnzetaConfig())
    samples = stream(2)
    state = method.begin(teacher, TASK, 5)
    text = method.text(teacher, TASK).double()
    w, rho = text.clone(), torch.zeros(C, dtype=torch.float64)
    for t, sample in enumerate(samples, start=1):
        x = F.normalize(sample.embedding.double(), dim=0)
        output, w, rho = by_hand(x, text, w, rho, t, 5)
        got = method.step(teacher, TASK, state, sample)
        order = output.argsort(descending=True, stable=True)
        assert got.prediction == int(order[0]) and got.top5 == tuple(order[:5].tolist())
        assert got.confidence == pytest.approx(float(output.max()), rel=1e-5)
        assert got.prediction_before == int((x @ text).argmax())
        torch.testing.assert_close(state["proxies"].t().double(), w, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(state["rho"].double(), rho, rtol=1e-4, atol=1e-5)
        assert int(state["seen"]) == t
    assert rho.max() > 0 and (rho == 0).any()  # the dual step and its projection both acted
    assert not torch.allclose(w, text, atol=1e-3)  # and the proxies moved


def test_rho_stays_non_negative_and_every_proxy_stays_a_unit_vector(teacher):
    """A stream near class 0's prompt: rho of class 0 is pushed below 0 and projected back; the
    other classes gain rho."""
    method = onzeta(OnzetaConfig())
    text = method.text(teacher, TASK)
    samples = near(text, [0] * 40, seed=1, noise=0.03)
    state = method.begin(teacher, TASK, len(samples))
    for sample in samples:
        method.step(teacher, TASK, state, sample)
        assert bool((state["rho"] >= 0).all())
        torch.testing.assert_close(state["proxies"].norm(dim=1), torch.ones(C), rtol=0, atol=1e-5)
    assert float(state["rho"][0]) == 0 and float(state["rho"][1:].min()) > 0


def test_the_per_set_rules_and_their_overrides():
    authors = onzeta(OnzetaConfig())
    tta = onzeta(OnzetaConfig(per_dataset="tta-vlm"))
    assert authors.hyperparameters(Named("caltech101:/d")) == (1.0, 0.8)
    assert tta.hyperparameters(Named("caltech101:/d")) == (0.0, 0.4)
    assert tta.hyperparameters(Named("imagenet-c/fog/5")) == (1.0, 0.8)
    assert tta.hyperparameters(Named("dtd")) == (1.0, 0.4)
    assert onzeta(OnzetaConfig(per_dataset="tta-vlm", beta=0.6, alpha=0.5)).hyperparameters(Named("dtd")) == (0.5, 0.6)
    for bad in ({"alpha": 1.5}, {"beta": -0.1}, {"tau_t": 0}, {"templates": "ensemble"}, {"per_dataset": "paper"}):
        with pytest.raises(HarnessError):
            OnzetaConfig(**bad)


def test_without_the_proxy_and_the_constraint_it_is_the_zero_shot_prediction(teacher):
    method = onzeta(OnzetaConfig(alpha=0.0, beta=0.0))
    state, outcomes = run(method, teacher, stream(8))
    assert [o.prediction for o in outcomes] == [o.prediction_before for o in outcomes]
    assert float(state["rho"].abs().max()) == 0


def test_the_state_after_k_samples_depends_on_those_k_only(teacher):
    method = onzeta(OnzetaConfig())
    first, second = stream(6, seed=2), stream(6, seed=3)
    mixed = first[:3] + second[3:]
    a, _ = run(method, teacher, first[:3], length=6)
    b, _ = run(method, teacher, mixed[:3], length=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    run(method, teacher, first[3:], state=a)
    run(method, teacher, mixed[3:], state=b)
    assert not torch.equal(a["proxies"], b["proxies"])


def test_a_checkpointed_state_continues_exactly(teacher):
    method = onzeta(OnzetaConfig(templates="clip-imagenet-7"))
    samples = stream(8, seed=4)
    whole, expected = run(method, teacher, samples)
    half, got = run(method, teacher, samples[:4], length=8)
    resumed = load(save({k: v.cpu() for k, v in half.items()}))
    _, rest = run(method, teacher, samples[4:], state=resumed)
    assert [(o.prediction, o.top5, o.confidence) for o in got + rest] == \
        [(o.prediction, o.top5, o.confidence) for o in expected]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert got[0].template_set == "clip-imagenet-7" and got[0].n_templates == 7


def test_a_stream_longer_than_begun_is_refused(teacher):
    method = onzeta(OnzetaConfig())
    state, _ = run(method, teacher, stream(2))
    with pytest.raises(HarnessError, match="past its end"):
        method.step(teacher, TASK, state, stream(3)[2])


def test_flops_on_the_meta_device_and_the_state_size(teacher):
    method = METHODS.get("onzeta")(OnzetaConfig())
    meta = meta_teacher(teacher.config)
    dim = teacher.embed_dim
    assert method.flops(meta, TASK, 100) == method.flops(teacher, TASK, 100) == teacher.image_flops + 3 * 2 * dim * C
    state = method.begin(teacher, TASK, 10)
    assert method.state_bytes(dim, C, 10) == sum(v.numel() * v.element_size() for v in state.values())
    assert method.state_bytes(512, 1000, 50_000) == 2_052_016
