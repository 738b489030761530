"""The settings of the online methods that learn by gradient steps along a stream (DPE, DynaPrompt),
one frozen dataclass each, with their authors' defaults (configs.py's conventions). No torch here."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.methods.configs import _at_least, _at_most, _one_of  # noqa: F401  (the shared checks)

# --- DPE ---
from harness.methods.configs import AUGMIX_CHOICES, MAX_VIEWS  # noqa: E402  (this section's own bounds)

DPE_PROTOCOLS = ("authors", "tta-vlm")
DPE_VIEWS = 64
"""Views per image where DPE takes views (their get_preprocess: the centre crop and 63 AugMix views)."""
DPE_TEMPLATES = ("single", "task", "clip-imagenet-7")
"""DPE's text prototypes start from these prompts (harness.methods.tip_templates.prompt_choice)."""
MAX_DPE_CAPACITY = 100
"""Image features per class queue: 33 times the authors' 3 (at ImageNet scale 100 are 0.2 GB of state)."""


@dataclass(frozen=True)
class DpeConfig:
    """DPE, dual prototype evolving (Zhang et al., NeurIPS 2024), as zhangce01/DPE-CLIP's main_dpe.py
    runs it: textual prototypes (a running average of adapted classifiers) and per-class queues of
    low-entropy image features (visual prototypes = queue means), with zero-initialised residuals on
    both learnt by one fresh AdamW step per sample and discarded after the prediction."""

    protocol: str = "authors"
    """Where the unset settings and the per-sample details come from: `authors` (zhangce01/DPE-CLIP), or
    `tta-vlm` (TomSheng21/tta-vlm's online_method/dpe.py): 64 views on every set, AugMix on the
    fine-grained sets only; the queue's entropy that of the softmax of the top views' mean logits (log
    with +1e-5) instead of their mean probabilities'; no entropy gradient into the text residual (its
    clip logits are computed under no_grad: only the alignment term moves it); on ImageNet-A the cache
    read-out at the first pass's mean feature; align 0.0002 on SUN397 (theirs, not 0.2)."""
    views: int | None = None
    """The centre crop plus views - 1 augmented views (TPT's recipe). Unset: the authors' 64 on the
    ImageNet family (-C as ImageNet) and 1 (the teacher's embedding alone) on every other set, or 64
    everywhere under tta-vlm. Set: on every task (1: one embedding per image, no views)."""
    top: float = 0.1
    """With views, the int(views * top) lowest-entropy views (6 of 64; view 0 among the candidates) give
    the sample's mean feature, mean logits and entropy (`* 0.1` hard-coded in their get_clip_logits)."""
    augmix: str | None = None
    """AugMix on the views: on, off, or auto (the fine-grained sets). Unset: on under authors (their
    get_preprocess, `augmix=True`), auto under tta-vlm."""
    min_scale: float = 0.08
    """Smallest area fraction of the crops (RandomResizedCrop(224)'s default scale (0.08, 1), both)."""
    capacity: int = 3
    """Image features per class queue (`shot_capacity: 3` in every config)."""
    alpha: float | None = None
    """Weight of the cache logits; unset: the authors' configs/*.yaml for the task's family (6 ImageNet,
    -A and -C; 3 -V2, -R; 7 -Sketch; 15 Caltech, 6 DTD, 3 EuroSAT, 6 Aircraft, 3 Food, 2.5 Flowers,
    4 Pets, 3 Cars, 6 SUN, 9 UCF), ImageNet's on any other task."""
    beta: float | None = None
    """Sharpness of the affinity exp(-beta (1 - f.k)); unset: the authors' per family (5 ImageNet, -A,
    -C; 8 -V2, -R; 7.45 -Sketch; 5 Caltech, 3 DTD, 8 EuroSAT, 2 Aircraft, 1 Food, 5 Flowers, 7 Pets,
    7 Cars, 3 SUN, 8 UCF), ImageNet's on any other task."""
    lr: float | None = None
    """AdamW's learning rate of both residuals (`learning_rate.text` = `.image` in every config); unset:
    the authors' per family (6e-4 ImageNet, -R, -Sketch, -C, Caltech, DTD, Aircraft; 3e-4 -A; 5e-4 -V2;
    5e-5 EuroSAT, Pets; 2e-4 Food, SUN; 1e-4 Flowers, Cars; 4e-4 UCF), ImageNet's on any other task."""
    align: float | None = None
    """Weight of the InfoNCE alignment of the visual to the textual prototypes (`learning_rate.align`);
    unset: the authors' per family (0.5 ImageNet, -V2, -C; 2.5 -A; 0 -R; 0.2 -Sketch and the fine-grained
    sets but Cars, 1.5), ImageNet's on any other task."""
    temperature: float = 0.01
    """InfoNCE's temperature (`InfoNCE(temperature=0.01)`, hard-coded)."""
    threshold: float = 0.1
    """The textual prototypes evolve when the final logits' entropy / log2(C) is below this (strict;
    `get_entropy(loss) < 0.1`, hard-coded; log2 as theirs: 0.1 is 0.997 nats at C = 1000)."""
    templates: str = "single"
    """The prompts of the initial textual prototypes: `single`, "a photo of a {}." (TTA-VLM's); `task`,
    the task's own set; `clip-imagenet-7`, CLIP's 7 ImageNet-notebook templates. The authors' text adds
    all CuPL GPT-3 sentences of each class to their hand templates; those are not here."""

    def __post_init__(self) -> None:
        _one_of("protocol", self.protocol, DPE_PROTOCOLS)
        if self.views is not None:
            _at_least("views", self.views, 1)
            _at_most("views", self.views, MAX_VIEWS, f"a sample's views are made and encoded at once: {self.views} "
                     "of a 224 px teacher are that many image forwards per sample")
        if not 0 < self.top <= 1:
            raise HarnessError(f"top must lie in (0, 1], not {self.top:g}")
        most = DPE_VIEWS if self.views is None else self.views
        if most > 1 and int(most * self.top) < 1:
            raise HarnessError(f"top = {self.top:g} of {most} views keeps none (int(views * top) = 0)")
        if self.augmix is not None:
            _one_of("augmix", self.augmix, AUGMIX_CHOICES)
        if not 0 < self.min_scale <= 1:
            raise HarnessError(f"min_scale must lie in (0, 1], not {self.min_scale:g}")
        _at_least("capacity", self.capacity, 1)
        _at_most("capacity", self.capacity, MAX_DPE_CAPACITY, "at ImageNet scale 100 features per class are "
                 "0.2 GB of state")
        for name in ("alpha", "beta", "lr", "align"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 0)
        if not self.temperature > 0:
            raise HarnessError(f"temperature must be positive, not {self.temperature:g}")
        _at_least("threshold", self.threshold, 0)
        _one_of("templates", self.templates, DPE_TEMPLATES)


# --- DynaPrompt ---
from harness.methods.configs import ViewsConfig  # noqa: E402  (this section's base)

DYNAPROMPT_SELECTIONS = ("code", "paper")
MAX_PROMPTS = 120
"""DynaPrompt's buffer: 10 times the authors' script's 12 (each prompt is one pass of every class through
the text tower per sample)."""


@dataclass(frozen=True)
class DynaPromptConfig(ViewsConfig):
    """DynaPrompt, dynamic test-time prompt tuning (Xiao et al., ICLR 2025), as zzzx1224/DynaPrompt's
    dynap_classification.py runs it (run_dynap.sh): a buffer of prompts, each a learnt offset on the
    context "a photo of a"; per image the initial prompt and the prompts its two criteria pick get one
    fresh AdamW step on TPT's loss over the confident views, keep it, and predict together; when every
    prompt has been picked, the least recently picked one is reset to the initial prompt."""

    prompts: int = 12
    """M, the buffer's prompts (`num_p=12` in the authors' run_dynap.sh; the paper, and TTA-VLM's
    hard-coded `num_p = 10`, use 10)."""
    selection: str = "code"
    """Which prompts besides the initial one are tuned and predict: `code`, the authors' code literally
    (rank the prompts by mean view entropy, descending, and by the mean drop of the top logit from view 0
    to the other views, descending; keep the ids both among the prompts ranked below the initial one by
    entropy and among the first r by drop, r the initial prompt's entropy rank; then take the prompts at
    those ids used as positions of the entropy ranking); `paper`, the rule the paper and the maintainer
    (issue #1) describe: entropy below the initial prompt's and drop above it."""
    top: float = 0.1
    """The int(views * top) views of lowest entropy, averaged over the selected prompts, give the loss
    (6 of 64; `--selection_p 0.1`)."""
    lr: float = 5e-3
    """AdamW's learning rate (`--lr 5e-3`, on every set; TTA-VLM's copy uses 3e-3 on the fine-grained
    sets)."""
    weight_decay: float = 0.01
    """AdamW's; torch's default, as the authors' code leaves it. It applies to every prompt of the buffer
    at each step (one tensor), the unselected ones included."""
    ctx_init: str = "a photo of a"
    """The initial prompt's context words (`--ctx_init a_photo_of_a`): every prompt is these tokens'
    embeddings plus its offset, zero at the start and after a reset."""
    text_chunk: int = 100
    """Classes whose text-tower activations the backward holds at once (0: all), as TPT's setting: a
    harness setting, not the authors'; a worker that runs out of memory halves it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("prompts", self.prompts, 1)
        _at_most("prompts", self.prompts, MAX_PROMPTS, "each prompt is one pass of every class through the text "
                 "tower per sample")
        _one_of("selection", self.selection, DYNAPROMPT_SELECTIONS)
        if not 0 < self.top <= 1:
            raise HarnessError(f"top must lie in (0, 1], not {self.top:g}")
        if int(self.views * self.top) < 1:
            raise HarnessError(f"top = {self.top:g} of {self.views} views keeps none (int(views * top) = 0)")
        _at_least("lr", self.lr, 0)
        _at_least("weight_decay", self.weight_decay, 0)
        _at_least("text_chunk", self.text_chunk, 0)
