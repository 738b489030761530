"""TPT (Shu et al., NeurIPS 2022): tune a 4-token text context on one test image so that the
prediction over its most confident augmented views has low entropy, classify the original view with
the tuned prompt, then restore the context and the optimiser. Both encoders stay frozen."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from harness.config import RunConfig, TptConfig
from harness.device import now
from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods.base import Outcome, SampleInput, score
from harness.methods.tpt_views import make_augmented_views
from harness.models.teacher import Teacher
from harness.precision import autocast, grad_scaler
from tasks.base import Task
from tasks.templates import SINGLE, SINGLE_TEMPLATE, TemplateSet

FINE_GRAINED_FAMILIES = frozenset(
    {"flowers102", "dtd", "oxford-pets", "ucf101", "caltech101", "food101", "sun397", "fgvc-aircraft", "eurosat",
     "stanford-cars"}
)
"""TPT's code adds AugMix on these (its multi-letter set ids) and not on the ImageNet variants."""
VIEW_LOOKAHEAD = 4
"""Samples whose views are made ahead (64 views of 224 px are 38 MB a sample)."""


def uses_augmix(config: TptConfig, task: Task) -> bool:
    if config.augmix not in ("auto", "on", "off"):
        raise HarnessError(f"--tpt-augmix must be auto, on or off, not '{config.augmix}'")
    if config.augmix == "auto":
        return task.name.split(":")[0] in FINE_GRAINED_FAMILIES
    return config.augmix == "on"


def normalisation(preprocess: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The teacher's mean and std, read off its own eval transform."""
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            return tuple(t.mean), tuple(t.std)
    raise HarnessError("tpt needs a teacher whose preprocessing ends in Normalize")


def view_entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def average_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean of the views' probabilities (computed in log space, as TPT does)."""
    log_probs = logits.log_softmax(-1)
    mean = torch.logsumexp(log_probs, dim=0) - math.log(logits.shape[0])
    mean = mean.clamp(min=torch.finfo(mean.dtype).min)
    return -(mean * mean.exp()).sum(-1)


class PromptLearner(torch.nn.Module):
    """Class prompts "<ctx_1..ctx_n> <class name>." on open_clip's own text tower; only the context
    embeddings (shared by all classes) are trainable."""

    def __init__(self, teacher: Teacher, classnames: Sequence[str], ctx_init: str) -> None:
        super().__init__()
        model = teacher.model
        if not hasattr(model, "token_embedding"):
            raise HarnessError(f"tpt needs open_clip's built-in text tower; {teacher.config.model} has another")
        self.model = model
        ctx_tokens = teacher.tokenizer([ctx_init])[0]
        n_ctx = int((ctx_tokens.argmax() - 1).item())  # tokens between start and end of text
        prompts = [f"{ctx_init} {name}." for name in classnames]
        tokens = teacher.tokenizer(prompts)
        if not torch.equal(tokens[0, 1 : 1 + n_ctx], ctx_tokens[1 : 1 + n_ctx]):
            raise HarnessError(f"--tpt-ctx-init '{ctx_init}' does not tokenise as a prefix of the class prompts")
        self.register_buffer("tokens", tokens.to(teacher.device), persistent=False)
        with torch.no_grad():
            embedded = model.token_embedding(self.tokens)
        self.n_ctx = n_ctx
        self.register_buffer("prefix", embedded[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", embedded[:, 1 + n_ctx :].clone(), persistent=False)
        self.register_buffer("ctx_init", embedded[0, 1 : 1 + n_ctx].clone(), persistent=False)
        self.ctx = torch.nn.Parameter(self.ctx_init.clone())

    def reset(self) -> None:
        with torch.no_grad():
            self.ctx.copy_(self.ctx_init)

    def forward(self) -> torch.Tensor:
        """(C, D) normalised class embeddings for the current context (open_clip's encode_text,
        starting from embeddings instead of token ids)."""
        model = self.model
        cast = model.transformer.get_cast_dtype()
        ctx = self.ctx[None].expand(self.tokens.shape[0], -1, -1)
        x = torch.cat([self.prefix, ctx, self.suffix], dim=1).to(cast)
        x = x + model.positional_embedding.to(cast)
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        x = text_global_pool(x, self.tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
        return F.normalize(x.float(), dim=-1)


def confident_views(logits: torch.Tensor, top: float) -> torch.Tensor:
    """Indices of the int(N * top) lowest-entropy views (at least one; a stable sort, so ties keep
    view order)."""
    keep = max(1, int(logits.shape[0] * top))
    return view_entropy(logits.detach()).argsort(stable=True)[:keep]


def tune(
    learner: PromptLearner, features: torch.Tensor, teacher: Teacher, cfg: TptConfig
) -> tuple[list[float], torch.Tensor]:
    """cfg.steps AdamW steps, from a fresh optimiser and loss scaler, on the entropy of the confident
    views' mean prediction. The confident views are chosen once, from the first forward, and kept for
    every later step, as TPT's test_time_tuning does. Text features are computed in the run's
    precision, logits and entropy in fp32. Returns the loss before each step and the chosen views."""
    device, precision = teacher.device, teacher.config.precision
    optimizer = torch.optim.AdamW([learner.ctx], lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, precision)
    features = features.float()
    selected: torch.Tensor | None = None
    losses = []
    for _ in range(cfg.steps):
        with autocast(device, precision):
            text = learner()
        logits = teacher.logit_scale * features @ text.float().T
        if selected is None:
            selected = confident_views(logits, cfg.top)
        loss = average_entropy(logits[selected])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())
    values = [] if not losses or losses[0].is_meta else torch.stack(losses).tolist()  # meta: FLOPs counting only
    return values, selected if selected is not None else torch.empty(0, dtype=torch.long)


@dataclass
class TptMethod:
    config: TptConfig
    name: str = "tpt"
    _learners: dict[tuple, PromptLearner] = field(default_factory=dict, repr=False)
    _flops: dict[tuple, int] = field(default_factory=dict, repr=False)
    _view_chunk: int | None = field(default=None, repr=False)
    """Views encoded at once, once out of memory has taught this worker a limit (None: all)."""
    data_pool: Executor | None = field(default=None, repr=False)
    """Threads that make the next samples' views (the worker's data threads)."""

    def templates(self, task: Task) -> TemplateSet:
        """The prompt before tuning, as a fixed template: its classifier gives the "before" prediction
        (with the default context, exactly the zero-shot row's) and is built once per task."""
        template = f"{self.config.ctx_init} {{}}."
        return SINGLE if template == SINGLE_TEMPLATE else TemplateSet(f"tpt-init:{self.config.ctx_init}", (template,))

    def learner(self, teacher: Teacher, task: Task) -> PromptLearner:
        """One per (task classes) and worker; its context is restored before every sample."""
        key = (id(teacher), task.classnames)
        if key not in self._learners:
            self._learners[key] = PromptLearner(teacher, task.classnames, self.config.ctx_init).to(teacher.device)
        return self._learners[key]

    def flops(self, teacher: Teacher, task: Task) -> int:
        """Per sample: every view through the image tower (view 0 is the shared teacher forward), each
        step's text forward and backward over all classes, and the text forward after tuning.
        Counted once per task."""
        key = (id(teacher), task.classnames)
        if key not in self._flops:
            learner = self.learner(teacher, task)
            features = F.normalize(torch.ones(self.config.views, teacher.embed_dim, device=teacher.device), dim=-1)
            one_step = dataclasses.replace(self.config, steps=1)
            step = count_flops(lambda: tune(learner, features, teacher, one_step))
            text = count_flops(learner)  # with grad on: the counter's hooks need it
            learner.reset()
            self._flops[key] = self.config.views * teacher.image_flops + self.config.steps * step + text
        return self._flops[key]

    def evaluate(self, teacher: Teacher, task: Task, samples: Sequence[SampleInput]) -> list[Outcome]:
        """Samples one after another (the prompt is tuned per sample); the next ones' views are made
        on the data threads meanwhile, so the device does not wait for them."""
        cfg = self.config
        learner = self.learner(teacher, task)
        augmix = uses_augmix(cfg, task)
        mean, std = normalisation(teacher.preprocess)
        flops = self.flops(teacher, task)
        initial = teacher.classifier(task.classnames, self.templates(task))
        before = score(torch.stack([s.teacher_embedding for s in samples]), initial, teacher.logit_scale).prediction

        def views_of(sample: SampleInput) -> torch.Tensor:
            return make_augmented_views(sample.image, cfg.views - 1, teacher.input_size, mean, std, sample.seed,
                                        augmix, cfg.min_scale)

        ahead: deque[Future] = deque()
        queued = 0
        outcomes = []
        for sample, b in zip(samples, before):
            while self.data_pool is not None and queued < len(samples) and len(ahead) < VIEW_LOOKAHEAD:
                ahead.append(self.data_pool.submit(views_of, samples[queued]))
                queued += 1
            start = now(teacher.device)  # waiting for views that are not ready yet counts
            views = ahead.popleft().result() if self.data_pool is not None else views_of(sample)
            outcome = self.adapt(teacher, learner, views, sample)
            seconds = sample.teacher_seconds + now(teacher.device) - start
            outcomes.append(dataclasses.replace(outcome, prediction_before=b, flops=flops, seconds=seconds))
        return outcomes

    def encode(self, teacher: Teacher, views: torch.Tensor) -> torch.Tensor:
        """The views' embeddings, in chunks that fit the device: out of memory halves the chunk (and it
        stays halved for this worker); only views that do not fit one at a time fail the shard."""
        while True:
            chunk = self._view_chunk or len(views)
            try:
                return torch.cat([teacher.encode_images(views[i : i + chunk]) for i in range(0, len(views), chunk)])
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                self._view_chunk = chunk // 2
                torch.cuda.empty_cache()

    def adapt(self, teacher: Teacher, learner: PromptLearner, views: torch.Tensor, sample: SampleInput) -> Outcome:
        """View 0 is the teacher's own preprocessing (TPT's resize + centre crop), whose embedding the
        worker has already computed; only the cfg.views - 1 augmented views are encoded here."""
        cfg = self.config
        learner.reset()
        features = F.normalize(torch.cat([sample.teacher_embedding[None], self.encode(teacher, views)]), dim=-1)
        losses, _ = tune(learner, features, teacher, cfg)
        with torch.no_grad(), autocast(teacher.device, teacher.config.precision):
            text = learner()
        result = score(features[:1], text.float().T, teacher.logit_scale)
        error = None if all(math.isfinite(v) for v in losses) else "non-finite TPT loss"
        return Outcome(
            prediction=None if error else result.prediction[0],
            top5=() if error else result.top5[0],
            confidence=None if error else result.confidence[0],
            n_templates=1,
            template_set=f"tpt-context:{cfg.ctx_init}",
            steps=len(losses),
            losses=tuple(losses),
            error=error,
        )


def tpt(config: RunConfig) -> TptMethod:
    return TptMethod(config.tpt)
