"""The text tower's backward in checkpointed class chunks and TTL's step in view chunks: the same loss
and gradient as all at once (up to float rounding), one chunk's activations held at a time, and the
out-of-memory fallback that halves the chunk, shown with a CUDA out-of-memory error raised on the CPU
by a stand-in for the device at the chunk boundary."""

import copy
import dataclasses
import weakref

import pytest
import torch
import torch.nn.functional as F

from harness.config import TeacherConfig
from harness.methods.chunks import Chunks
from harness.methods.configs import TptConfig, TtlConfig
from harness.methods.prompt import PromptLearner, average_entropy, tune
from harness.methods.tpt import TptMethod
from harness.methods.ttl import TtlMethod
from harness.models.teacher import load_teacher
from tasks.synthetic import SyntheticTask
from test_episodic_methods import _samples

TASK = SyntheticTask(per_class=1)  # 12 classes
CFG = TptConfig(views=16, steps=2)


@pytest.fixture(scope="module", params=["clip", "siglip"])
def any_teacher(request, teacher, siglip_dir):
    """The tiny CLIP, and the SigLIP-shaped teacher (custom text tower, no causal mask, last-token pool)."""
    return teacher if request.param == "clip" else load_teacher(TeacherConfig(pretrained=str(siglip_dir)))


def _features(teacher, views: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(views, teacher.embed_dim, generator=generator), dim=-1)


def _learner(teacher, limit: int) -> PromptLearner:
    """A learner whose context is moved off its initial words, so that the gradient is not special."""
    learner = PromptLearner(teacher, TASK.classnames, "a photo of a", Chunks(limit))
    with torch.no_grad():
        learner.ctx.add_(0.05 * torch.randn(learner.ctx.shape, generator=torch.Generator().manual_seed(1)))
    return learner


def _loss_and_gradient(teacher, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    learner = _learner(teacher, limit)
    loss = average_entropy(teacher.logit_scale * _features(teacher) @ learner().T)
    loss.backward()
    return loss.detach(), learner.ctx.grad


def _float64_gradient(teacher) -> torch.Tensor:
    """The same gradient with a float64 copy of the teacher, all classes at once: what fp32 rounds."""
    double = dataclasses.replace(teacher, model=copy.deepcopy(teacher.model).double())
    learner = PromptLearner(double, TASK.classnames, "a photo of a")
    with torch.no_grad():
        learner.ctx.copy_(_learner(teacher, 0).ctx)  # the very context the fp32 gradients are taken at
    text = F.normalize(learner.encode(learner.tokens, learner.ctx), dim=-1)  # forward() would return fp32
    average_entropy(teacher.logit_scale * _features(teacher).double() @ text.T).backward()
    return learner.ctx.grad


def _error(gradient: torch.Tensor, reference: torch.Tensor) -> float:
    return float((gradient.double() - reference).norm() / reference.norm())


@pytest.mark.parametrize("limit", [1, 5, 11, 12])
def test_the_chunked_prompt_gradient_equals_the_whole_one(any_teacher, limit):
    whole_loss, whole = _loss_and_gradient(any_teacher, 0)
    loss, gradient = _loss_and_gradient(any_teacher, limit)
    if limit >= len(TASK.classnames):  # one chunk: nothing is checkpointed, the very same computation
        assert torch.equal(loss, whole_loss) and torch.equal(gradient, whole)
        return
    # each class's embedding depends on its own tokens only; chunks change only the order of float sums
    # (matrix kernels by batch size, the context's gradient summed chunk by chunk), so the chunked
    # gradient is as far from the float64 one as the whole fp32 gradient is (tiny CLIP: 6e-6 relative;
    # the SigLIP-shaped teacher, whose classes' terms nearly cancel: 5e-5)
    exact = _float64_gradient(any_teacher)
    assert _error(gradient, exact) <= max(4 * _error(whole, exact), 1e-5)
    assert _error(gradient, whole.double()) < 2e-4
    torch.testing.assert_close(loss, whole_loss, rtol=1e-6, atol=1e-6)


def _block_inputs(teacher, learner: PromptLearner, step) -> list[int]:
    """For every call of the text tower's first block (forwards and recomputations alike): how many
    earlier calls' inputs are still alive. A block's input is saved for its backward (layer norm keeps
    it), so it lives exactly as long as that chunk's activations."""
    block = getattr(teacher.model, "text", teacher.model).transformer.resblocks[0]
    refs: list[weakref.ref] = []
    alive: list[int] = []

    def probe(module, args):
        alive.append(sum(r() is not None for r in refs))
        refs.append(weakref.ref(args[0]))

    hook = block.register_forward_pre_hook(probe)
    try:
        step(learner)
    finally:
        hook.remove()
    return alive


def test_checkpointed_chunks_hold_one_chunks_activations_at_a_time(teacher):
    features = _features(teacher)

    def step(learner):
        average_entropy(teacher.logit_scale * features @ learner().T).backward()

    learner = _learner(teacher, 5)
    # 12 classes: forwards of 5, 5, 2 keep nothing; the backward recomputes 2, 5, 5, one after another
    assert _block_inputs(teacher, learner, step) == [0] * 6
    learner.recompute = False  # the probe sees saved activations: chunks without checkpoints pile up
    assert _block_inputs(teacher, learner, step) == [0, 1, 2]


def _tuned(teacher, learner) -> tuple[list[float], torch.Tensor]:
    learner.reset()
    losses, _ = tune(learner, _features(teacher), teacher, 3, 0.05, CFG.weight_decay, 0.25)
    return losses, learner.ctx.detach().clone()


def test_tpt_outcomes_and_flops_do_not_depend_on_the_text_chunk(teacher):
    samples = _samples(teacher, 2)
    results = {}
    for limit in (0, 1, 5):
        method = TptMethod(dataclasses.replace(CFG, text_chunk=limit))
        results[limit] = (method.evaluate(teacher, TASK, samples), method.flops(teacher, TASK))
    whole, flops = results[0]
    for limit, (outcomes, chunked_flops) in results.items():
        assert chunked_flops == flops  # the recomputation is not counted
        for got, want in zip(outcomes, whole):
            assert (got.prediction, got.top5, got.error) == (want.prediction, want.top5, None)
            assert got.losses == pytest.approx(want.losses, rel=1e-5)


class OutOfMemoryAbove:
    """The device, standing in: encoding more than `rows` classes at once runs out of memory, in the
    forward or, with `in_backward`, only when a checkpoint recomputes a chunk."""

    def __init__(self, learner: PromptLearner, rows: int, in_backward: bool = False) -> None:
        self.encode, self.rows, self.in_backward = learner.encode, rows, in_backward
        self.seen: list[torch.Tensor] = []  # kept alive, so that a recomputation is told by identity
        self.failed: list[int] = []

    def __call__(self, tokens: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        recomputing = any(tokens is t for t in self.seen)
        self.seen.append(tokens)
        if len(tokens) > self.rows and (recomputing or not self.in_backward):
            self.failed.append(len(tokens))
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (stand-in: {len(tokens)} classes)")
        return self.encode(tokens, ctx)


@pytest.mark.parametrize("start, rows, in_backward, failed", [
    (0, 3, False, [12, 6]),  # 12 classes at once fail, then 6: chunks of 3 fit
    (8, 4, True, [8]),  # chunks 8 and 4 go forward; the backward recomputes 4, then fails on 8: chunks of 4 fit
])
def test_out_of_memory_halves_the_class_chunk_and_the_result_is_the_unchunked_one(teacher, monkeypatch, start, rows,
                                                                                  in_backward, failed):
    want_losses, want_ctx = _tuned(teacher, _learner(teacher, 0))
    learner = _learner(teacher, start)
    device = OutOfMemoryAbove(learner, rows, in_backward)
    monkeypatch.setattr(learner, "encode", device)
    losses, ctx = _tuned(teacher, learner)
    assert device.failed == failed  # and no more: the halved chunk stays for the later steps
    assert learner.chunks.limit == rows
    assert losses == pytest.approx(want_losses, rel=1e-5)
    torch.testing.assert_close(ctx, want_ctx, rtol=1e-4, atol=1e-6)


def test_only_a_single_class_that_does_not_fit_fails(teacher, monkeypatch):
    learner = _learner(teacher, 0)
    device = OutOfMemoryAbove(learner, 0)
    monkeypatch.setattr(learner, "encode", device)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _tuned(teacher, learner)
    assert device.failed == [12, 6, 3, 1] and learner.chunks.limit == 1


def test_a_halved_chunk_stays_for_the_workers_later_tasks(teacher, monkeypatch):
    method = TptMethod(dataclasses.replace(CFG, text_chunk=0))
    first = method.learner(teacher, TASK)
    monkeypatch.setattr(first, "encode", OutOfMemoryAbove(first, 4))
    outcome = method.evaluate(teacher, TASK, _samples(teacher, 1))[0]
    assert outcome.error is None and method.text_chunks.limit == 3
    other = SyntheticTask(per_class=1, name="other", classnames=TASK.classnames[:7])
    assert method.learner(teacher, other).chunks is method.text_chunks


def _ttl_step(teacher, method: TtlMethod, pixels: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """One TTL step from the start, and the LoRA factors it moved to: an SGD step of size 1, so they move
    by minus their gradient (AdamW's first step, about lr * sign(g), would magnify the rounding of
    gradients near zero)."""
    from harness.precision import grad_scaler

    lora = method.low_rank(teacher)
    lora.reset()
    classifier = teacher.classifier(TASK.classnames, method.templates(TASK))
    optimizer = torch.optim.SGD(list(lora.parameters()), lr=1.0)
    loss = method._step(teacher, lora, pixels, classifier, optimizer, grad_scaler(teacher.device, "fp32"))
    moved = [p.detach().clone() for p in lora.parameters()]
    lora.reset()
    return float(loss), moved


def test_ttl_steps_in_view_chunks_equal_the_whole_step_and_out_of_memory_halves_them(teacher, monkeypatch):
    pixels = torch.randn(8, 3, teacher.input_size, teacher.input_size, generator=torch.Generator().manual_seed(2))
    whole_loss, whole = _ttl_step(teacher, TtlMethod(TtlConfig(views=8)), pixels)
    chunked = TtlMethod(TtlConfig(views=8), _step_chunks=Chunks(3))
    loss, moved = _ttl_step(teacher, chunked, pixels)
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    assert any(p.abs().max() > 0 for p in whole[len(whole) // 2 :])  # B moved off zero
    for got, want in zip(moved, whole):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    # the updated weights are made once a step and their gradient taken back once: the same FLOPs
    assert chunked.flops(teacher, TASK) == TtlMethod(TtlConfig(views=8)).flops(teacher, TASK)

    method = TtlMethod(TtlConfig(views=8))
    embed, failed = method._embed_with, []

    def device(teacher, weights, views):
        if len(views) > 2:
            failed.append(len(views))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (stand-in)")
        return embed(teacher, weights, views)

    monkeypatch.setattr(method, "_embed_with", device)
    loss, moved = _ttl_step(teacher, method, pixels)
    assert failed == [8, 4] and method._step_chunks.limit == 2
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    for got, want in zip(moved, whole):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
