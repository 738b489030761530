"""What the prompt-tuning methods learn and how they step: TPT's learnable text context (shared by
TPT, C-TPT, R-TPT), TPS's per-class shift of the class prototypes, and one tuning loop with a
method's own loss. Every learner keeps its initial state and is reset to it before each sample."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from harness.errors import HarnessError
from harness.methods.chunks import Chunks
from harness.methods.episodic import confident_views
from harness.models.teacher import Teacher
from harness.precision import autocast, grad_scaler

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(logits of the selected views (S, C), class embeddings (C, D)) -> loss."""
T = TypeVar("T")


def average_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean of the views' probabilities (computed in log space, as TPT does)."""
    log_probs = logits.log_softmax(-1)
    mean = torch.logsumexp(log_probs, dim=0) - math.log(logits.shape[0])
    mean = mean.clamp(min=torch.finfo(mean.dtype).min)
    return -(mean * mean.exp()).sum(-1)


def tpt_loss(logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return average_entropy(logits)


def _shared_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    differ = (a != b).nonzero()
    return int(differ[0]) if len(differ) else len(a)


class PromptLearner(torch.nn.Module):
    """Class prompts "<ctx_1..ctx_n> <class name>." through the teacher's own text tower; only the
    context embeddings (shared by all classes) are trainable. The context is spliced into the token
    embeddings on their way into open_clip's encode_text, so any open_clip text tower (CLIP's, or a
    SigLIP-style custom one with its own masks and pooling) runs unchanged.

    The classes go through the tower in chunks (`chunks`, shared with the method so that a chunk
    halved by running out of memory stays halved for the worker). Under grad, when there is more than
    one chunk, each is checkpointed: its activations are dropped after its forward and recomputed in
    the backward, one chunk at a time, so the backward holds one chunk's activations instead of every
    class's (ImageNet's 1000 in fp32: about 25 GiB for ViT-B/16, 43 GiB for ViT-L/14). Each class's
    embedding depends on that class's tokens only, so the gradient is the same, up to the order in
    which float sums are taken."""

    def __init__(self, teacher: Teacher, classnames: Sequence[str], ctx_init: str, chunks: Chunks | None = None) -> None:
        super().__init__()
        model = teacher.model
        tower = getattr(model, "text", model)
        if not isinstance(getattr(tower, "token_embedding", None), torch.nn.Embedding):
            raise HarnessError(f"prompt tuning needs a text tower with a token embedding; {teacher.config.model} has none")
        self.model, self.embedding = model, tower.token_embedding
        self.chunks = chunks if chunks is not None else Chunks()
        self.recompute = True  # checkpoint the chunks under grad; off only while FLOPs are counted (`counted`)
        tokens = teacher.tokenizer([f"{ctx_init} {name}." for name in classnames])
        bare, ctx = teacher.tokenizer([""])[0], teacher.tokenizer([ctx_init])[0]
        self.start = _shared_prefix(bare, ctx)  # start-of-text tokens, if the tokenizer adds any
        self.n_ctx = _shared_prefix(ctx, tokens[0]) - self.start
        words = ctx[self.start : self.start + self.n_ctx]
        if self.n_ctx < 1 or not (tokens[:, self.start : self.start + self.n_ctx] == words).all():
            raise HarnessError(f"ctx_init '{ctx_init}' does not tokenise as a prefix of the class prompts")
        self.register_buffer("tokens", tokens.to(teacher.device), persistent=False)
        with torch.no_grad():
            initial = self.embedding(words.to(teacher.device)).clone()
        self.register_buffer("ctx_init", initial, persistent=False)
        self.ctx = torch.nn.Parameter(initial.clone())

    def reset(self) -> None:
        with torch.no_grad():
            self.ctx.copy_(self.ctx_init)

    def fit(self, attempt: Callable[[], T]) -> T:
        """`attempt` (a forward, or a forward and its backward), with the class chunk halved for as long
        as it runs out of memory."""
        return self.chunks.fit(len(self.tokens), attempt)

    def encode(self, tokens: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """The tower's embeddings of some classes' prompts with `ctx` spliced in. The splice hook is
        registered by this call and holds `ctx` as given, so a checkpoint's recomputation (which calls
        this again with the same arguments) splices the same context."""
        a, b = self.start, self.start + self.n_ctx

        def splice(module: torch.nn.Module, inputs: object, embedded: torch.Tensor) -> torch.Tensor:
            spliced = ctx[None].expand(embedded.shape[0], -1, -1).to(embedded.dtype)
            return torch.cat([embedded[:, :a], spliced, embedded[:, b:]], dim=1)

        hook = self.embedding.register_forward_hook(splice)
        try:
            return self.model.encode_text(tokens)
        finally:
            hook.remove()

    def forward(self) -> torch.Tensor:
        """(C, D) normalised class embeddings for the current context. The teacher is in eval mode and
        its tower draws no random numbers, so the checkpoints need not restore the RNG state."""
        spans = self.chunks.spans(len(self.tokens))
        if torch.is_grad_enabled() and self.recompute and len(spans) > 1:
            parts = [checkpoint(self.encode, self.tokens[s], self.ctx, use_reentrant=False, preserve_rng_state=False)
                     for s in spans]
        else:
            parts = [self.encode(self.tokens[s], self.ctx) for s in spans]
        return F.normalize(torch.cat(parts).float(), dim=-1)


@contextmanager
def counted(learner: torch.nn.Module) -> Iterator[None]:
    """The learner without recomputation, for counting FLOPs: a row's FLOPs are the method's arithmetic
    (each step one forward and one backward of the text tower over every class), not the extra forward
    that checkpointing spends to save memory. Otherwise a task's FLOPs would depend on the chunk
    setting, and on nothing of the method; the time it costs shows in the row's seconds. A worker
    counts on the meta twin of its teacher, where holding every chunk's activations costs no memory
    (counted on a real device, they are all held, as before chunking)."""
    if not isinstance(learner, PromptLearner):
        yield
        return
    learner.recompute = False
    try:
        yield
    finally:
        learner.recompute = True


def fit(learner: torch.nn.Module, attempt: Callable[[], T]) -> T:
    """`attempt` with the learner's out-of-memory fallback; a learner without a text tower has none."""
    return learner.fit(attempt) if isinstance(learner, PromptLearner) else attempt()


class ShiftLearner(torch.nn.Module):
    """TPS: class embeddings normalize(p_c + s_c), with p_c the normalised class prototypes and s_c a
    learned shift per class, zero at the start of every sample. The text tower is never run."""

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prototypes", F.normalize(prototypes.float(), dim=-1), persistent=False)
        self.shift = torch.nn.Parameter(torch.zeros_like(self.prototypes))

    def reset(self) -> None:
        with torch.no_grad():
            self.shift.zero_()

    def forward(self) -> torch.Tensor:
        return F.normalize(self.prototypes + self.shift, dim=-1)


def tune(
    learner: torch.nn.Module, features: torch.Tensor, teacher: Teacher, steps: int, lr: float, weight_decay: float,
    top: float, loss_fn: Loss = tpt_loss, loss_for: Callable[[torch.Tensor], Loss] | None = None,
) -> tuple[list[float], torch.Tensor]:
    """`steps` AdamW steps on the learner's parameters, from a fresh optimiser and loss scaler (so
    nothing of one sample's tuning reaches the next), on `loss_fn` of the confident views. The
    confident views are chosen once, from the first forward, and kept for every later step, as TPT's
    test_time_tuning does; `loss_for`, if given, makes the loss from them (a loss that needs to know
    which views were chosen, as RLCF's rewards). Text features are computed in the run's precision,
    logits and loss in fp32. A step's forward and backward that run out of memory are run again with
    half the class chunk (before the optimiser moves anything). Returns the loss before each step and
    the chosen views."""
    device, precision = teacher.device, teacher.config.precision
    optimizer = torch.optim.AdamW(list(learner.parameters()), lr=lr, weight_decay=weight_decay)
    scaler = grad_scaler(device, precision)
    features = features.float()
    selected: torch.Tensor | None = None

    def forward_backward() -> torch.Tensor:
        """One step's loss, its gradient left in the learner; run again whole if it ran out of memory."""
        nonlocal selected, loss_fn
        optimizer.zero_grad(set_to_none=True)  # here, so that a failed attempt's half gradient goes too
        with autocast(device, precision):
            text = learner()
        text = text.float()
        logits = teacher.logit_scale * features @ text.T
        if selected is None:
            selected = confident_views(logits, top)
            loss_fn = loss_for(selected) if loss_for is not None else loss_fn
        loss = loss_fn(logits[selected], text)
        scaler.scale(loss).backward()
        return loss.detach()

    losses = []
    for _ in range(steps):
        losses.append(fit(learner, forward_backward))
        scaler.step(optimizer)
        scaler.update()
    values = [] if not losses or losses[0].is_meta else torch.stack(losses).tolist()  # meta: FLOPs counting only
    return values, selected if selected is not None else torch.empty(0, dtype=torch.long)
