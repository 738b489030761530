"""Every method's settings, one frozen dataclass each, with its authors' defaults. A field's
docstring says what it does and where its default comes from; `apm-bench ls methods` prints them and
`--set METHOD.FIELD=VALUE` or a TOML table `[METHOD]` changes them. This module imports no torch, so
checking a run's settings costs nothing."""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.errors import HarnessError

AUGMIX_CHOICES = ("auto", "on", "off")
TPS_TEMPLATES = ("openai-imagenet-80", "single")
"""TPS's prototype templates, named as tasks.templates names the sets (and the rows record them)."""


def _one_of(field: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise HarnessError(f"{field} must be one of {', '.join(choices)}, not '{value}'")


def _at_least(field: str, value: float, low: float) -> None:
    if value < low:
        raise HarnessError(f"{field} must be at least {low:g}, not {value:g}")


def _gb(size: float) -> str:
    """Bytes, readable: 0.6 MB, 38 MB, 1.2 GB, 2,408 GB."""
    unit, scale = ("GB", 1e9) if size >= 1e8 else ("MB", 1e6)
    return f"{size / scale:,.0f} {unit}" if size >= 10 * scale else f"{size / scale:.1f} {unit}"


def _at_most(field: str, value: float, high: float, why: str) -> None:
    """Sizes are checked before a run starts: an absurd one would otherwise grow memory (or a row's
    loss curve) until the worker dies, far into the run."""
    if value > high:
        shown = value if isinstance(value, int) else f"{value:g}"
        raise HarnessError(f"{field} must be at most {high:g}, not {shown} ({why})")


# Upper bounds of the size settings: 10 to 50 times (or more) the largest value an author uses, so no
# real experiment is refused; where memory is the reason, the message says how much.
MAX_VIEWS = 2048
"""TPT's views: 64 in every author's scripts; a view of a 224 px teacher is 0.6 MB of float32 pixels."""
MAX_STEPS = 20000
"""Optimiser steps per sample: 17 times the APM demo's 1200 (TPT's family uses 1 to 3)."""
MAX_ITERATIONS = 250
"""MTA's rounds and inner iterations: 50 times the authors' 5."""
MAX_IMAGE_SIZE = 8192
"""APM's input side: 18 times the paper's 448."""
MAX_WIDTH = 65536
"""APM's hidden and RGB-head widths: 16 times the paper's widest, 4096."""
MAX_HEADS = 256
"""APM's pooling heads: 32 times the paper's 8."""
MAX_COPIES = 256
"""APM's copies of the image per step: 32 times the demo's 8."""
MAX_BATCH = 1024
"""APM's samples trained together (a harness setting; 0 picks what fits, at most 16 on a CPU)."""
MAX_CHUNK = 65536
"""APM's locations per chunk: 64 times the paper's 1024 (32 x 32)."""
MAX_BLOCKS = 128
"""TTL's adapted blocks: 43 times the authors' 3; open_clip's deepest image tower has 48."""
MAX_RANK = 2048
"""TTL's LoRA rank: 128 times the authors' 16, wider than any open_clip image tower (ViT-bigG-14: 1664)."""
MAX_SAMPLE_K = 1000
"""RLCF's classes per view: 333 times the scripts' 3; it is clipped to the task's classes anyway."""


@dataclass(frozen=True)
class ApmConfig:
    """The reconstructed APM (Modi & Rawat, NeurIPS 2024; docs/apm-method.md)."""

    recipe: str = "spec"
    """How the TTT loop runs. `spec`: the paper's description (fresh Adam, zero_grad every step, no
    schedule, bicubic resize, predict after the last update). `demo`: the authors' released demo
    (train_tta.py): gradients zeroed once per image so they accumulate, StepLR(200, 0.1), bilinear
    resize, prediction from the last training forward."""
    image_size: int = 448
    """Input side S (resize, no crop); the paper's 448."""
    patch_size: int = 14
    """Trigger conv kernel and stride p; the grid has (S/p)^2 locations (the paper's 14)."""
    hidden: tuple[int, ...] = (4096, 2048, 1024)
    """Widths of the shared MLP's hidden layers (ReLU after each); the last layer maps to D."""
    pooling: str = "attention"
    """`attention` (learned query, `heads` heads, fixed 2-D sin/cos code added) or `mean`."""
    heads: int = 8
    """Attention heads of the pooling."""
    rgb_hidden: int = 256
    """Width of the RGB head (present in the network, weight 0 in TTT by default)."""
    rgb_weight: float = 0.0
    """Loss weight of the RGB reconstruction of each location's mean colour."""
    use_patch: bool = False
    """Append each location's own pixels to its query (the paper's figure; off in the spec)."""
    chunk_size: int = 0
    """Locations evaluated per chunk (0 = all at once). Chunks are checkpointed under grad, so
    memory stays bounded as the grid grows."""
    init_std: float = 0.01
    """Every parameter is drawn from N(0, init_std) before each sample."""
    steps: int = 20
    """Adam steps per sample (the paper's 20)."""
    lr: float = 1e-4
    """Adam learning rate (the paper's 1e-4)."""
    copies: int = 1
    """Identical copies of the image per step (the demo code uses 8)."""
    templates: str = "ensemble"
    """Class embeddings from the task's template ensemble, or `single` ("a photo of a {}.")."""
    batch_size: int = 0
    """Samples whose independent APMs train as one batched computation; 0 = fit the device, 1 = one
    at a time. Results equal one-at-a-time training up to float rounding."""

    def __post_init__(self) -> None:
        from harness.models.recipes import RECIPES

        RECIPES.get(self.recipe)
        _one_of("pooling", self.pooling, ("attention", "mean"))
        _one_of("templates", self.templates, ("ensemble", "single"))
        for name in ("image_size", "patch_size", "heads", "copies", "rgb_hidden"):
            _at_least(name, getattr(self, name), 1)
        if not self.hidden or min(self.hidden) < 1:
            raise HarnessError(f"hidden must be positive widths, not {self.hidden}")
        side = self.image_size
        _at_most("image_size", side, MAX_IMAGE_SIZE, f"a {side} px image is {_gb(3 * side * side * 4 * self.copies)} "
                 f"of float32 pixels per step, before the network's activations")
        _at_most("patch_size", self.patch_size, side, "a patch cannot be larger than the image")
        for name, width in [("hidden", w) for w in self.hidden] + [("rgb_hidden", self.rgb_hidden)]:
            _at_most(name, width, MAX_WIDTH, f"a layer {width} wide after another as wide holds "
                     f"{_gb(16 * width * width)} of weights, gradients and Adam state")
        _at_most("heads", self.heads, MAX_HEADS, "each head takes a slice of the teacher's embedding, "
                 "768 wide for ViT-B-16")
        _at_most("copies", self.copies, MAX_COPIES, f"each copy is another {side} px image through the network at "
                 "every step")
        _at_most("chunk_size", self.chunk_size, MAX_CHUNK, "a chunk holds each of its locations' activations "
                 "through every hidden layer")
        _at_most("steps", self.steps, MAX_STEPS, "each step's loss is kept in the sample's row")
        _at_least("batch_size", self.batch_size, 0)
        _at_most("batch_size", self.batch_size, MAX_BATCH, "each sample of a batch trains its own network: at the "
                 "paper's size 0.35 GB of weights, gradients and Adam state each")


@dataclass(frozen=True)
class ViewsConfig:
    """TPT's views (azshue/TPT, data/datautils.py AugMixAugmenter): the centre crop plus views - 1
    random resized crops with a flip, AugMix-mixed on some data sets."""

    views: int = 64
    """The original view plus views-1 augmented ones (`-b 64` in every author's scripts)."""
    augmix: str = "auto"
    """AugMix on the views: `auto` (TPT's rule: the fine-grained sets, not the ImageNet family), on, off."""
    min_scale: float = 0.08
    """Smallest area fraction of the random resized crops (torchvision's default, as TPT)."""

    def __post_init__(self) -> None:
        _one_of("augmix", self.augmix, AUGMIX_CHOICES)
        _at_least("views", self.views, 2)
        _at_most("views", self.views, MAX_VIEWS, f"a sample's views are made at once: {self.views} of a 224 px "
                 f"teacher are {_gb(self.views * 3 * 224 * 224 * 4)} of pixels, and the next samples' are made ahead")
        if not 0 < self.min_scale <= 1:
            raise HarnessError(f"min_scale must lie in (0, 1], not {self.min_scale:g}")


@dataclass(frozen=True)
class TptConfig(ViewsConfig):
    """TPT (Shu et al., NeurIPS 2022), as azshue/TPT runs it."""

    top: float = 0.1
    """Fraction of views kept: the int(views * top) lowest-entropy ones (`--selection_p 0.1`)."""
    steps: int = 1
    """AdamW steps per sample (`--tta_steps 1`)."""
    lr: float = 5e-3
    """AdamW learning rate (`--lr 5e-3`)."""
    weight_decay: float = 0.01
    """AdamW's; torch's default, as TPT's code leaves it."""
    ctx_init: str = "a photo of a"
    """The learnable context's initial words; their token count is the context length (4)."""
    text_chunk: int = 100
    """Classes whose text-tower activations the backward holds at once (0: all, as TPT's code). A
    harness setting, not the authors': with more classes, the prompts go through the tower in chunks,
    each recomputed in the backward (one extra text forward per step). The default runs ImageNet in
    ten chunks of about 2.5 GiB (ViT-B/16) or 4.3 GiB (ViT-L/14) in fp32, instead of 25 or 43 GiB at
    once, and tasks of up to 100 classes whole. The gradient is the same up to float rounding, which
    is why it is part of the run's settings; a worker that runs out of memory halves it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.top <= 1:
            raise HarnessError(f"top must lie in (0, 1], not {self.top:g}")
        _at_least("text_chunk", self.text_chunk, 0)
        if self.steps is not None:  # None: a method's per-family default (RLCF)
            _at_least("steps", self.steps, 0)
            _at_most("steps", self.steps, MAX_STEPS, "each step's loss is kept in the sample's row")


@dataclass(frozen=True)
class CtptConfig(TptConfig):
    """C-TPT (Yoon et al., ICLR 2024), as hee-suk-yoon/C-TPT runs it: TPT's loss minus lambda times the
    text features' average distance to their centroid."""

    weight: float | None = None
    """lambda; unset: the published scripts' value for the task's family, 50 for the fine-grained
    sets and ImageNet (test_tpt_ctpt_fg.sh), 20 for ImageNet-A, -V2, -R and -Sketch
    (test_tpt_ctpt_ds.sh); 50 elsewhere."""
    augmix: str = "auto"
    """`auto`: the scripts' rule, AugMix on the fine-grained sets and on ImageNet-A, -V2, -R, -Sketch
    (`--I_augmix` in the ds script), not on ImageNet; on; off."""


@dataclass(frozen=True)
class RtptConfig(TptConfig):
    """R-TPT (Sheng et al., CVPR 2025), as TomSheng21/R-TPT runs it: the mean of the confident views'
    entropies as loss; the prediction weighs every view's tuned logits by its reliability."""

    neighbours: int = 20
    """Reliability of a view: mean cosine similarity to its k most similar other views (k = 20,
    get_top_sim)."""
    temperature: float = 0.01
    """Weights = softmax(reliability / temperature) over the views (0.01 in the code)."""
    self_mask: str = "diagonal"
    """How a view's own similarity leaves its neighbours: `diagonal` removes it; `threshold` is the
    authors' `sim >= 1.0` mask, under which a view whose fp32 self-similarity rounds just below 1.0
    (about 39% of them at D = 512) keeps itself among its neighbours, and exact duplicates drop each other."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of("self_mask", self.self_mask, ("diagonal", "threshold"))
        _at_least("neighbours", self.neighbours, 1)
        _at_most("neighbours", self.neighbours, MAX_VIEWS, "a view has at most views - 1 others, and views are "
                 f"at most {MAX_VIEWS}")


@dataclass(frozen=True)
class TpsConfig(TptConfig):
    """TPS, test-time prototype shifting (Sui et al., WACV 2025), as elaine-sui/TPS runs it: a
    zero-initialised shift per class added to the normalised class prototypes, tuned with TPT's loss."""

    lr: float | None = None  # type: ignore[assignment]
    """AdamW learning rate; unset: TTA-VLM's rule, 5e-3 on the ImageNet family (the authors' README)
    and 1e-3 elsewhere."""
    templates: str = "openai-imagenet-80"
    """The prototypes' templates on every data set, the authors' two choices: `openai-imagenet-80`,
    CLIP's 80 ImageNet templates averaged (`--with_templates`, their class_embeds_w_imagenet_templates
    files), or `single`, "a photo of a {}." (without it). Their GPT-4 descriptors are not shipped here."""
    ctx_init: str = "a photo of a"
    """Unused by TPS (it tunes no prompt); kept so that TPT's settings read the same."""
    text_chunk: int = 100
    """Unused by TPS (it never runs the text tower while it adapts); kept so that TPT's settings read the same."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of("templates", self.templates, TPS_TEMPLATES)


@dataclass(frozen=True)
class ZeroConfig(ViewsConfig):
    """ZERO (Farina et al., NeurIPS 2024), as FarinaMatteo/zero runs it: keep the lowest-entropy views and
    predict by the majority vote of their argmaxes; nothing is trained."""

    top: float = 0.3
    """Fraction of views kept, int(views * top) (gamma 0.3 since the authors' commit of October 2024;
    0.1 before)."""
    augmix: str = "off"
    """The authors' views are crops and flips only, on every data set (TTA-VLM adds AugMix on the
    fine-grained sets: `auto`)."""
    ctx_init: str = "a photo of a"
    """The prompt's words before the class name ("a photo of a {}.")."""
    vote: str = "hard"
    """`hard`: each kept view's argmax is one vote (TTA-VLM's fp32 votes). `fp16-soft`: the authors'
    softmax(l / eps) of the unscaled cosines l in fp16 (eps = 2^-10), computed in fp16 on any device:
    a vote splits between classes whose cosines lie within about 0.004 (15 fp16 steps); for
    comparisons with their `--precision fp16` numbers."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of("vote", self.vote, ("hard", "fp16-soft"))
        if not 0 < self.top < 1:
            raise HarnessError(f"top must lie in (0, 1), not {self.top:g} (the tie-break needs discarded views)")


@dataclass(frozen=True)
class MtaConfig(ViewsConfig):
    """MTA, MeanShift for test-time augmentation (Zanella & Ben Ayed, CVPR 2024), as MaxZanella/MTA runs
    it: a mode of the view embeddings weighted by inlierness scores; nothing is trained."""

    lambda_y: float = 0.2
    """Temperature of the inlierness scores' softmax (`--lambda_y 0.2`)."""
    lambda_q: float = 4.0
    """Weight of the affinity term A y, with A = P P^T of the views' class posteriors (`--lambda_q 4`)."""
    outer_steps: int = 5
    """Rounds of (inlierness update, mode update) (`max_iter = 5`)."""
    inner_steps: int = 5
    """Iterations of each update within a round, stopping early below `tolerance` (5 in the code)."""
    tolerance: float = 1e-6
    """L2 change under which an inner loop stops."""
    neighbours: float = 0.3
    """A view's kernel bandwidth comes from its int(neighbours * (views - 1)) nearest views (0.3)."""
    augmix: str = "off"
    """The authors run MTA without TPT's AugMix on every data set (TTA-VLM adds it on the
    fine-grained sets: `auto`)."""
    ctx_init: str = "a photo of a"
    """The prompt's words before the class name ("a photo of a {}.")."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lambda_y <= 0:
            raise HarnessError(f"lambda_y must be positive, not {self.lambda_y:g}")
        _at_least("outer_steps", self.outer_steps, 1)
        _at_least("inner_steps", self.inner_steps, 1)
        for name in ("outer_steps", "inner_steps"):
            _at_most(name, getattr(self, name), MAX_ITERATIONS, "each iteration is a views x views update")
        if not 0 <= self.neighbours <= 1:  # above 1 asks for more neighbours than a view has
            raise HarnessError(f"neighbours must lie in [0, 1], not {self.neighbours:g} (a fraction of the other views)")


@dataclass(frozen=True)
class TtlConfig(ViewsConfig):
    """TTL, test-time low-rank adaptation (Imam et al., WACV 2025), as Razaimam45/TTL-Test-Time-Low-Rank-
    Adaptation runs it: LoRA on the query and value projections of the image tower's last attention
    blocks, one step on the confidence-weighted entropy of every view; the text side is frozen."""

    blocks: int = 3
    """LoRA on the last `blocks` attention blocks of the image tower (ViT-B/16's 9-11, `--layer_range 9,11`)."""
    rank: int = 16
    """LoRA rank r (16)."""
    alpha: float = 32.0
    """LoRA alpha; the update is scaled by alpha / rank (32 / 16 = 2)."""
    margin: float = 0.4
    """E0 of the weights exp(E0 - H) of each view's entropy H, in nats (DeYO's margin, 0.4)."""
    steps: int = 1
    """AdamW steps per sample (`TTA_STEPS=1`)."""
    lr: float = 5e-3
    """AdamW learning rate (`LR=5e-3`)."""
    weight_decay: float = 0.01
    """AdamW's; torch's default, as the code leaves it."""
    ctx_init: str = "a photo of a"
    """The class prompts' words ("a photo of a {}.")."""
    augmix: str = "off"
    """The authors' views are crops and flips on every data set: their AugMixAugmenter sets
    `aug_list = []` in both branches (data/datautils.py). `auto`: TPT's AugMix on the fine-grained sets; on."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("blocks", self.blocks, 1)
        _at_least("rank", self.rank, 1)
        _at_least("steps", self.steps, 0)
        _at_most("blocks", self.blocks, MAX_BLOCKS, "deeper than any open_clip image tower")
        _at_most("rank", self.rank, MAX_RANK, "wider than any open_clip image tower: no longer low rank")
        _at_most("steps", self.steps, MAX_STEPS, "each step's loss is kept in the sample's row")


@dataclass(frozen=True)
class RlcfConfig(TptConfig):
    """RLCF, reinforcement learning with CLIP feedback (Zhao et al., ICLR 2024), as mzhaoshuai/RLCF's
    prompt variant runs it: TPT's prompt, tuned towards the classes a reward CLIP scores high on the
    confident views (REINFORCE with a per-view baseline)."""

    steps: int | None = None  # type: ignore[assignment]
    """AdamW steps per sample; unset: the authors' per task family, 5 on the fine-grained sets
    (scripts/rlcf-prompt-fine.sh, `tta_steps=5`; it does not parse as shipped, `${augmix}` is never
    defined) and 3 elsewhere (rlcf-prompt.sh). TTA-VLM takes 3 everywhere: `--set rlcf.steps=3`."""
    lr: float = 7e-3
    """AdamW learning rate (7e-3)."""
    weight_decay: float = 5e-4
    """AdamW weight decay (5e-4)."""
    sample_k: int = 3
    """Classes per confident view: its top-k under the current prompt (every script uses 3)."""
    reward_weight: float = 2.5
    """CLIPScore weight w in max(0, w * cos) (2.5)."""
    reward_model: str = "ViT-L-14"
    """The reward teacher's open_clip architecture (the authors' ViT-L/14), or `teacher` for the run's
    own teacher (TTA-VLM's choice)."""
    reward_pretrained: str = "openai"
    """Its weights: any --pretrained value (tag, hf-hub:, file, directory)."""
    reward_weights_sha256: str | None = None
    """The reward weights' content hash, filled when the run is prepared (as the teacher's): other
    weights under the same name make another fingerprint, and a worker with other weights refuses."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("sample_k", self.sample_k, 1)
        _at_most("sample_k", self.sample_k, MAX_SAMPLE_K, "classes per confident view; ImageNet has 1000")

    EXTRA_TEACHER_HINT = "offline, --set rlcf.reward_model=teacher rewards with the run's own teacher"

    def extra_teachers(self) -> tuple[tuple[str, str, str | None], ...]:
        """(model, pretrained, sha256 if pinned) of the teachers the method loads besides the run's:
        checked, fetched and hashed before a run starts."""
        if self.reward_model == "teacher":
            return ()
        return ((self.reward_model, self.reward_pretrained, self.reward_weights_sha256),)

    def with_weights(self, pinned: tuple[tuple[str, str | None], ...]) -> RlcfConfig:
        """The settings with each extra teacher's (pretrained as every node can resolve it, sha256)."""
        return replace(self, reward_pretrained=pinned[0][0], reward_weights_sha256=pinned[0][1]) if pinned else self
