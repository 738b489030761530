"""DynaPrompt, dynamic test-time prompt tuning (Xiao et al., ICLR 2025), as zzzx1224/DynaPrompt runs it
(dynap_classification.py with clip/custom_clip_lessctx.py, settings of run_dynap.sh, code of commit
ba340e2): a buffer of M prompts (M = 12, their script; the paper and TTA-VLM use 10), each the context
"a photo of a" plus a learnt offset (n_ctx x width, zero at the start: every prompt starts as the
initial prompt V0), tuned along the stream.

Per sample, with the 64 views the engine gives (view 0 the teacher's centre crop, 63 random resized
crops with a flip, AugMix on the fine-grained sets only: their AugMixAugmenter with `augmix=len(set_id)
> 1`), in the authors' order:
1. deletion and appending (dynaprompt_buffer.refresh): once every slot has been selected since its
   reset, the least recently selected one is reset to V0 (offset zero);
2. every prompt's class embeddings through the text tower, logits s f_v.T_m (V, M, C);
3. selection (dynaprompt_buffer.select): V0 (the least recently selected slot, always an untouched
   copy) plus the prompts the code's two criteria pick, the mean view entropy and the mean drop of the
   top logit from view 0 to the other views; `selection = code` (default) is their code literally,
   slot ids used as positions of the entropy ranking included; `paper` the rule the paper describes
   (entropy below V0's and drop above V0's). The selected become the most recently selected;
4. one AdamW step (lr 5e-3, weight decay 0.01 on the whole buffer, fresh moments every sample as their
   `optimizer.load_state_dict(optim_state)`) on TPT's marginal entropy of the 6 = int(64 x 0.1) views
   of lowest entropy averaged over the selected prompts, averaged over the selected prompts. Only the
   selected offsets get a gradient; the step leaves the others at their weight decay (x (1 - lr 0.01));
5. prediction: view 0 against each selected prompt after its step, the mean of their logits (a
   duplicate counts twice, as theirs); confidence its softmax maximum. prediction_before: view 0's
   zero-shot argmax with V0's classifier (teacher.classifier, "a photo of a {}.").
Tuned prompts stay in the buffer until step 1 resets them.

Differences, by choice: the text forward of the prompts that are not selected keeps no graph (each
prompt's classes are checkpointed), so the backward goes through the selected prompts' towers only;
the authors' single batched forward backpropagates zeros through all M (the same gradient, about
2 (M - k) C more text passes of compute). Their GradScaler(init_scale=1000) persists over the stream
(its scale is in the state), but runs only in fp16 on CUDA here (theirs always: fp16 autocast); in
fp32 a step whose gradient is not finite is skipped, as their scaler skips it. Ties go to the lowest
slot (dynaprompt_buffer). Steps per sample: 1, as their script (not a setting: with more steps their
code re-selects and re-counts at every step).

TTA-VLM's copy (online_method/dynaprompt.py) does not run as shipped (online_tta.py builds
DynaPrompt(model, args.gpu) without the required num_p) and differs: M = 10, lr 3e-3 on the
fine-grained sets, AdamW moments never reset, encoders not frozen, 30-token text context.

State: ctx (M, n_ctx, width) fp32, the offsets; last (M,) int64, the clock at each slot's last
selection (0: never); uses (M,) int64, selections since its reset; clock () int64, selections so far;
scale () fp32 and growth () int64, the loss scaler's. At ImageNet scale (ViT-B/16: width 512, n_ctx 4;
any C and length) 98,516 bytes with M = 12, 82,100 with M = 10.

Cost per sample: 64 image forwards, M text-tower forwards over the C classes, k backwards and k more
forwards for the prediction (k the distinct prompts selected); `flops()` counts the most the rule can
select (6 of 12 for the code's rule, all M for the paper's), an upper bound."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods.base import Outcome, final_scores
from harness.methods.chunks import Chunks
from harness.methods.dynaprompt_buffer import (confident_loss, initial_slot, most_selected, record, refresh,
                                               select)
from harness.methods.episodic import FINE_GRAINED_FAMILIES, prompt_templates, task_family
from harness.methods.learning_configs import DynaPromptConfig
from harness.methods.online import OnlineBase, State, StreamSample, tpt_views
from harness.methods.online_ranking import first_argmax, ranked
from harness.methods.prompt import PromptLearner, counted
from harness.methods.view_feed import ViewSpec
from harness.models.teacher import Teacher
from harness.precision import GRAD_SCALER_INIT, autocast, grad_scaler
from tasks.base import Task
from tasks.templates import TemplateSet

Chooser = Callable[[torch.Tensor, int], list[int]]
"""(logits (views, M, C), V0's slot) -> the selected slots."""


def encode_prompt(learner: PromptLearner, ctx: torch.Tensor) -> torch.Tensor:
    """(C, D) normalised class embeddings with the context `ctx` (n_ctx, width). Under grad each class
    chunk is checkpointed, even a single one: a prompt the loss does not use then holds no activations,
    and a used one recomputes its chunks one at a time in the backward (not when FLOPs are counted)."""
    spans = learner.chunks.spans(len(learner.tokens))
    if torch.is_grad_enabled() and ctx.requires_grad and learner.recompute:
        parts = [checkpoint(learner.encode, learner.tokens[s], ctx, use_reentrant=False, preserve_rng_state=False)
                 for s in spans]
    else:
        parts = [learner.encode(learner.tokens[s], ctx) for s in spans]
    return F.normalize(torch.cat(parts).float(), dim=-1)


@dataclass(frozen=True)
class Tuned:
    """What one sample's tuning gives back to `step`."""

    chosen: list[int]
    logits: torch.Tensor
    """(C,) the prediction's: the mean over the selected prompts of view 0's logits after the step."""
    loss: torch.Tensor
    stepped: bool
    """Whether the optimiser moved (False: the gradient was not finite and the step was skipped, by the
    loss scaler or, without one, here)."""


@dataclass
class DynaPromptMethod(OnlineBase):
    config: DynaPromptConfig = field(default_factory=DynaPromptConfig)
    name: str = "dynaprompt"
    _learners: dict[tuple, PromptLearner] = field(default_factory=dict, repr=False)
    _text_chunks: Chunks | None = field(default=None, repr=False)
    _counts: dict[tuple, int] = field(default_factory=dict, repr=False)

    def templates(self, task: Task) -> TemplateSet:
        """V0's prompt, "a photo of a {}." by default (the zero-shot classifier of prediction_before)."""
        return prompt_templates(self.config.ctx_init)

    # --- the network pieces ---------------------------------------------------------------------
    def learner(self, teacher: Teacher, task: Task) -> PromptLearner:
        """The class prompts and the text tower, one per (teacher, class names) and worker; its own
        `ctx` parameter is not used: the offsets live in the state."""
        key = (id(teacher), task.classnames)
        if key not in self._learners:
            if self._text_chunks is None:
                self._text_chunks = Chunks(self.config.text_chunk)
            learner = PromptLearner(teacher, task.classnames, self.config.ctx_init, self._text_chunks)
            self._learners[key] = learner.to(teacher.device)
        return self._learners[key]

    def uses_augmix(self, task: Task) -> bool:
        choice = self.config.augmix
        return choice == "on" or (choice == "auto" and task_family(task) in FINE_GRAINED_FAMILIES)

    def view_spec(self, teacher: Teacher, task: Task) -> ViewSpec:
        """TPT's views of every image (their AugMixAugmenter: AugMix on the multi-letter set ids)."""
        return tpt_views(teacher, self.config.views, self.uses_augmix(task), self.config.min_scale)

    def features(self, task: Task, sample: StreamSample) -> torch.Tensor:
        views = self.config.views
        if sample.views is None or sample.views.shape[0] != views:
            got = None if sample.views is None else sample.views.shape[0]
            raise HarnessError(f"dynaprompt needs {views} views of each {task.name} image, was given {got}")
        return sample.views.float()

    # --- the state -----------------------------------------------------------------------------------
    def begin(self, teacher: Teacher, task: Task, length: int) -> State:
        learner = self.learner(teacher, task)
        m, device = self.config.prompts, teacher.device
        return {
            "ctx": torch.zeros(m, learner.n_ctx, learner.ctx_init.shape[-1], dtype=torch.float32, device=device),
            "last": torch.zeros(m, dtype=torch.int64, device=device),
            "uses": torch.zeros(m, dtype=torch.int64, device=device),
            "clock": torch.zeros((), dtype=torch.int64, device=device),
            "scale": torch.tensor(GRAD_SCALER_INIT, dtype=torch.float32, device=device),
            "growth": torch.zeros((), dtype=torch.int64, device=device),
        }

    def state_bytes(self, dim: int, classes: int, length: int) -> int:
        """`dim`: the text tower's token width (512 for ViT-B/16, as its embedding); the context's tokens
        counted as its words (4 for "a photo of a" under CLIP's tokenizer). Independent of C and length."""
        m, n_ctx = self.config.prompts, len(self.config.ctx_init.split())
        return 4 * m * n_ctx * dim + 2 * 8 * m + 8 + 4 + 8

    # --- one sample ----------------------------------------------------------------------------------
    def tune(self, teacher: Teacher, task: Task, state: State, views: torch.Tensor, choose: Chooser) -> Tuned:
        """Steps 2 to 5 on the buffer as it is (after the refresh); writes the offsets and the scaler back."""
        cfg, learner, device = self.config, self.learner(teacher, task), teacher.device
        initial = initial_slot(state) if not state["last"].is_meta else 0
        with torch.enable_grad():
            offsets = torch.nn.Parameter(state["ctx"].detach().clone())
            optimizer = torch.optim.AdamW([offsets], lr=cfg.lr, weight_decay=cfg.weight_decay)
            scaler = self._scaler(device, teacher.config.precision, state)

            def forward_backward() -> tuple[list[int], torch.Tensor]:
                optimizer.zero_grad(set_to_none=True)  # here, so that a failed attempt's half gradient goes too
                with autocast(device, teacher.config.precision):
                    texts = [encode_prompt(learner, learner.ctx_init + offsets[m]) for m in range(len(offsets))]
                logits = [teacher.logit_scale * views @ t.T for t in texts]  # fp32
                chosen = choose(torch.stack([z.detach() for z in logits], 1), initial)
                loss = confident_loss(torch.stack([logits[m] for m in chosen], 1), cfg.top)
                scaler.scale(loss).backward()
                return chosen, loss.detach()

            chosen, loss = learner.fit(forward_backward)
            finite = offsets.grad is None or offsets.grad.is_meta or bool(torch.isfinite(offsets.grad).all())
            if scaler.is_enabled() or finite:
                scaler.step(optimizer)
            scaler.update()
        state["ctx"] = offsets.detach().clone()
        if scaler.is_enabled():
            kept = scaler.state_dict()
            state["scale"] = torch.tensor(kept["scale"], dtype=torch.float32, device=device)
            state["growth"] = torch.tensor(kept["_growth_tracker"], dtype=torch.int64, device=device)
        return Tuned(chosen, learner.fit(lambda: self.predict(teacher, learner, state["ctx"], views[0], chosen)),
                     loss, finite)

    @staticmethod
    def _scaler(device: torch.device, precision: str, state: State) -> torch.amp.GradScaler:
        """The stream's loss scaler (fp16 on CUDA only), continued from the state's scale and tracker."""
        scaler = grad_scaler(device, precision)
        if scaler.is_enabled():
            kept = scaler.state_dict()
            kept.update(scale=float(state["scale"]), _growth_tracker=int(state["growth"]))
            scaler.load_state_dict(kept)
        return scaler

    @staticmethod
    def predict(teacher: Teacher, learner: PromptLearner, offsets: torch.Tensor, view: torch.Tensor,
                chosen: list[int]) -> torch.Tensor:
        """(C,) view 0's logits averaged over the selected prompts (each distinct prompt encoded once)."""
        with torch.no_grad(), autocast(teacher.device, teacher.config.precision):
            texts = {m: encode_prompt(learner, learner.ctx_init + offsets[m]) for m in sorted(set(chosen))}
        return torch.stack([teacher.logit_scale * (view[None] @ texts[m].T)[0] for m in chosen]).mean(0)

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Refresh the buffer, select, tune the selected prompts once, predict with them (their order)."""
        views = self.features(task, sample)
        with torch.autocast(views.device.type, enabled=False):  # fp32 logits even inside a caller's autocast
            before = first_argmax(teacher.logit_scale * (views[0][None] @ self.text(teacher, task))[0])
            refresh(state)
            tuned = self.tune(teacher, task, state, views, lambda z, v0: select(z, v0, self.config.selection))
            record(state, tuned.chosen)
        final = tuned.logits.float()
        out = ranked(final, final_scores(final, teacher.logit_scale), before, self.templates(task))
        return dataclasses.replace(out, steps=int(tuned.stepped), losses=(float(tuned.loss),))

    # --- cost ----------------------------------------------------------------------------------------
    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """Per sample: every view through the image tower (view 0 the teacher's own forward), and one
        step counted on a fresh buffer with the most prompts the rule can select: every prompt's text
        forward, their logits, the selected prompts' backward and their prediction forward (without the
        checkpoints' recomputation). Counted once per (teacher, classes)."""
        cfg = self.config
        key = (id(teacher), tuple(task.classnames))
        if key not in self._counts:
            learner = self.learner(teacher, task)
            state = self.begin(teacher, task, length)
            views = F.normalize(torch.ones(cfg.views, teacher.embed_dim, device=teacher.device), dim=-1)
            k = most_selected(cfg.prompts, cfg.selection)
            with counted(learner):
                step = count_flops(lambda: self.tune(teacher, task, state, views, lambda z, v0: list(range(k))))
            self._counts[key] = cfg.views * teacher.image_flops + step
        return self._counts[key]


def dynaprompt(config: DynaPromptConfig | None) -> DynaPromptMethod:
    return DynaPromptMethod(config=config or DynaPromptConfig())
