"""The online methods' settings, one frozen dataclass each, with their authors' defaults (configs.py's
conventions: a field's docstring says what it does and where its default comes from). No torch here."""

from __future__ import annotations

from dataclasses import dataclass

from harness.methods.configs import _at_least, _at_most, _one_of  # noqa: F401  (the shared checks)

# --- TDA and DMN (cache and memory methods) ---
from harness.errors import HarnessError  # noqa: E402  (this section's own checks)

CACHE_TEMPLATES = ("single", "task")
"""The prompts of TDA's and DMN's text classifier (harness.methods.online_ranking.prompts)."""
MAX_CACHE_SHOTS = 100
"""TDA's entries per class and cache: 33 times the authors' 3."""
MAX_MEMORY_SLOTS = 1000
"""DMN's memory slots per class: 20 times the authors' 50."""


def _band(name: str, lower: float, upper: float) -> None:
    if not 0 <= lower < upper:
        raise HarnessError(f"{name} needs 0 <= {name}_lower < {name}_upper, not ({lower:g}, {upper:g})")


@dataclass(frozen=True)
class TdaConfig:
    """TDA, the training-free dynamic adapter (Karmanov et al., CVPR 2024), as kdiAAA/TDA runs it on
    one embedding per image, TTA-VLM's protocol (their ImageNet-A/V2/R/Sketch runs average the 6
    lowest-entropy of 64 AugMix views; that is not offered). Positive and negative caches of test
    features under the zero-shot pseudo-label, updated before the sample's own logits are read."""

    pos_alpha: float | None = None
    """Weight of the positive cache's logits; unset: the authors' configs/*.yaml for the task's family
    (2.0 ImageNet, -A and -C; 1.0 -V2, -R; 2.363 -Sketch; 5 Caltech, 2 DTD, 4 EuroSAT, 2 Aircraft,
    1 Food, 1 Flowers, 2 Pets, 1 Cars, 2 SUN, 3 UCF), ImageNet's on any other task."""
    pos_beta: float | None = None
    """Sharpness of the positive affinity exp(-beta (1 - cos)); unset: the authors' per family (5.0
    ImageNet, -A and -C; 8.0 -V2, -R; 7.45 -Sketch; 5 Caltech, 3 DTD, 8 EuroSAT, 2 Aircraft, 1 Food,
    5 Flowers, 7 Pets, 7 Cars, 3 SUN, 8 UCF), ImageNet's on any other task."""
    pos_capacity: int = 3
    """Positive entries per pseudo-class (`shot_capacity: 3` in every config); 0 turns the cache off."""
    neg_alpha: float = 0.117
    """Weight of the negative cache's logits, which are subtracted (0.117 in every config)."""
    neg_beta: float = 1.0
    """Sharpness of the negative affinity (1.0 in every config)."""
    neg_capacity: int = 2
    """Negative entries per pseudo-class (`shot_capacity: 2` in every config); 0 turns the cache off."""
    entropy_lower: float = 0.2
    """A sample enters the negative cache only if entropy_lower < its band entropy < entropy_upper
    (strict; `entropy_threshold` (0.2, 0.5) in every config)."""
    entropy_upper: float = 0.5
    """The band's upper end (see entropy_lower)."""
    entropy_norm: str = "log2"
    """The band entropy: the entropy in nats divided by `log2` (C) as the authors' get_entropy (and
    TTA-VLM's copy) do, so (0.2, 0.5) is (0.2885, 0.7213) of the usual normalised entropy and decides
    which samples enter the negative cache; `ln`: divided by ln C, the normalisation the paper means."""
    mask_lower: float = 0.03
    """A negative entry marks the classes whose zero-shot probability lies strictly between mask_lower
    and mask_upper (`mask_threshold` (0.03, 1.0) in every config); the marks are subtracted."""
    mask_upper: float = 1.0
    """The marks' upper end (see mask_lower)."""
    templates: str = "single"
    """The text classifier's prompts: `single`, "a photo of a {}." (TTA-VLM); `task`, the task's own
    set (CLIP's 80 on the ImageNet tasks, CoOp's prompt on the fine-grained ones); or `authors`, the
    authors' per data set: CLIP's 7 ImageNet-notebook templates (`clip-imagenet-7`) on ImageNet, -A,
    -V2, -C, Caltech, Cars and SUN, the 80 on -R and -Sketch, the task's own (CoOp's prompt, as
    theirs) on the other sets."""

    def __post_init__(self) -> None:
        for name in ("pos_alpha", "pos_beta", "neg_alpha", "neg_beta"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 0)
        for name in ("pos_capacity", "neg_capacity"):
            _at_least(name, getattr(self, name), 0)
            _at_most(name, getattr(self, name), MAX_CACHE_SHOTS, "at ImageNet scale 100 entries per class are 0.2 GB "
                     "of state in the positive cache, 0.3 GB in the negative (a class mask per entry)")
        _band("entropy", self.entropy_lower, self.entropy_upper)
        _band("mask", self.mask_lower, self.mask_upper)
        _one_of("entropy_norm", self.entropy_norm, ("log2", "ln"))
        _one_of("templates", self.templates, (*CACHE_TEMPLATES, "authors"))


@dataclass(frozen=True)
class DmnConfig:
    """DMN-ZS (Zhang et al., CVPR 2024, YBZh/DMN) on one view per image: TTA-VLM's `dmn_weak` (the
    authors always run 32 views). A memory of test features per zero-shot pseudo-class, written before
    it is read; each class's slots and its text feature are read by a softmax(beta * cos) attention."""

    memory: int = 50
    """Slots per class (`--memory_size 50`, the authors' and TTA-VLM's)."""
    beta: float = 5.5
    """Sharpness of the read-out weights exp(-beta (1 - cos)) (`--beta 5.5`, both)."""
    alpha: float = 1.0
    """Weight of the memory's probabilities in text probs + alpha * memory probs. 1.0: TTA-VLM's fixed
    value (and the authors' ImageNet value). The authors pick it per data set after the stream, by a
    grid search on the test labels (ViT-B/16: I 1, A 3, V2 1, R 0.3, Sketch 1, Flowers 10, DTD 10,
    Pets 1, Cars 0.3, UCF 0.3, Caltech 0.3, Food 0.3, SUN 3, Aircraft 1, EuroSAT 0.3), so those
    numbers use the labels; set it to compare with them."""
    replace: str = "if-lower"
    """A full class's slot with the highest entropy (the lowest slot on ties) is overwritten by a new
    sample `if-lower`, only when the sample's entropy is strictly lower (the authors), or `always`
    (TTA-VLM's dmn_weak)."""
    templates: str = "single"
    """The text classifier's prompts: `single`, "a photo of a {}." (TTA-VLM), or `task`, the task's own
    set (the authors use the 7 TIP templates plus CuPL's GPT-3 sentences, not offered here)."""

    def __post_init__(self) -> None:
        _at_least("memory", self.memory, 1)
        _at_most("memory", self.memory, MAX_MEMORY_SLOTS, "every slot of every class is one fp32 feature: at "
                 "ImageNet scale 50 slots are 0.1 GB of state, 1000 are 2 GB")
        _at_least("beta", self.beta, 0)
        _at_least("alpha", self.alpha, 0)
        _one_of("replace", self.replace, ("if-lower", "always"))
        _one_of("templates", self.templates, CACHE_TEMPLATES)


# --- OnZeta and ECALP (proxy and graph methods) ---
PROXY_TEMPLATES = ("single", "task", "clip-imagenet-7")
"""The prompts of OnZeta's and ECALP's text classifier (harness.methods.tip_templates.prompt_choice)."""
MAX_IMAGE_NEIGHBOURS = 256
"""ECALP's image neighbours per node: 32 times the authors' 8."""
MAX_TEXT_NEIGHBOURS = 1000
"""ECALP's class neighbours per node: 333 times the authors' 3 (ImageNet has 1000 classes)."""
MAX_PROPAGATIONS = 250
"""ECALP's propagation rounds per sample: 83 times the authors' 3."""


@dataclass(frozen=True)
class OnzetaConfig:
    """OnZeta (Qian & Hu, ECCV 2024), as idstcv/OnZeta's main_online.py runs it on one normalised
    embedding per image: online label learning (the zero-shot probabilities re-weighted by exp(rho), rho
    the dual variable of a lower bound alpha/K on each class's share) mixed with a vision proxy per class
    learnt by SGD towards those labels; the mixing weight beta * sqrt(t / n) needs the stream length n."""

    tau_t: float = 0.01
    """Temperature of the text logits, softmax(x . t_c / tau_t) (`--tau_t 0.01`)."""
    tau_i: float = 0.04
    """Temperature of the vision-proxy logits, softmax(x . w_c / tau_i) (`--tau_i 0.04`)."""
    cw: float = 0.5
    """The proxies' step size at sample t is cw / sqrt(t) (`--cw 0.5`)."""
    cr: float = 20.0
    """The dual variable's step size at sample t is cr / sqrt(t) (`--cr 20`)."""
    alpha: float | None = None
    """Each class's share is kept at least alpha / K; 0 turns the constraint off (rho stays 0). Unset:
    the authors' 1 (`--alpha 1`; their repository runs ImageNet only), or under per_dataset = tta-vlm
    TTA-VLM's 0 on Caltech101 and 1 elsewhere."""
    beta: float | None = None
    """Final weight of the vision proxy's probabilities (reached at the stream's last sample). Unset:
    the authors' 0.8 (`--beta 0.8`), or under per_dataset = tta-vlm TTA-VLM's 0.8 on the ImageNet
    family and 0.4 on every other set."""
    per_dataset: str = "authors"
    """Where unset alpha and beta come from: `authors` (1 and 0.8 on every set) or `tta-vlm`
    (TomSheng21/tta-vlm's online_method/onzeta.py: beta 0.4 off the ImageNet family, alpha 0 on
    Caltech101; the paper's own settings for those sets could not be checked)."""
    templates: str = "single"
    """The text proxies' prompts: `single`, "a photo of a {}." (TTA-VLM), `task`, the task's own set,
    or `clip-imagenet-7`, the authors' 7 templates of CLIP's ImageNet notebook (itap of a {}., ...;
    each normalised, averaged, normalised again), which they use on ImageNet."""

    def __post_init__(self) -> None:
        for name in ("tau_t", "tau_i"):
            if not getattr(self, name) > 0:
                raise HarnessError(f"{name} must be positive, not {getattr(self, name):g}")
        _at_least("cw", self.cw, 0)
        _at_least("cr", self.cr, 0)
        if self.alpha is not None:
            _at_least("alpha", self.alpha, 0)
            _at_most("alpha", self.alpha, 1, "the lower bounds alpha / K of the K classes' shares sum to alpha, "
                     "and no distribution has shares summing to more than 1")
        if self.beta is not None and not 0 <= self.beta <= 1:
            raise HarnessError(f"beta must lie in [0, 1], not {self.beta:g} (a weight between two probability vectors)")
        _one_of("per_dataset", self.per_dataset, ("authors", "tta-vlm"))
        _one_of("templates", self.templates, PROXY_TEMPLATES)


@dataclass(frozen=True)
class EcalpConfig:
    """ECALP (Li et al., ICLR 2025), as Yushu-Li/ECALP's zero-shot mode runs it on one normalised
    embedding per image: every test sample joins a graph with the class prompts (its k image and k_text
    class neighbours, similarities to the power gamma, image similarities re-weighted per dimension by
    the prompts' variance), and labels are propagated from the prompts for a few rounds; the sample is
    added before it is predicted. The graph keeps every sample (the authors never evict)."""

    k_image: int = 8
    """Image neighbours of each image node (`--k_image 8`; all nodes while there are at most 8). Each
    node keeps its k_image + 2 best as the authors' incremental store."""
    k_text: int = 3
    """Class (prompt) neighbours of each image node (`--k_text 3`)."""
    gamma: float = 10.0
    """Edge weight = similarity ** gamma, for image and class edges (`--gamma 10.0`). A whole even
    number: a negative similarity to another power gives a negative or NaN weight (torch.pow, as the
    authors') that spreads through the degrees to the whole graph."""
    alpha: float = 1.0
    """Y <- alpha W Y + (1 - alpha) Y_0 (`--alpha 1.0`: the starting labels only warm-start the rounds)."""
    iterations: int = 3
    """Propagation rounds per sample (`--num_iterations 3`)."""
    templates: str = "single"
    """The class nodes' prompts: `single`, "a photo of a {}." (TTA-VLM), `task`, the task's own set,
    or `clip-imagenet-7`, the 7 ImageNet templates of the authors' feature source (DMN's `tip_cupl`,
    which adds CuPL's GPT-3 sentences, not offered here; off ImageNet it has one template per set)."""

    def __post_init__(self) -> None:
        _at_least("k_image", self.k_image, 1)
        _at_least("k_text", self.k_text, 1)
        _at_least("iterations", self.iterations, 1)
        _at_most("k_image", self.k_image, MAX_IMAGE_NEIGHBOURS, "every sample of the stream keeps k_image + 2 "
                 "neighbours and each round reads 2 k_image edges per node: at 256, 50,000 samples keep 155 MB of "
                 "neighbour lists")
        _at_most("k_text", self.k_text, MAX_TEXT_NEIGHBOURS, "every sample keeps k_text class neighbours; no task "
                 "here has more than 1000 classes")
        _at_most("iterations", self.iterations, MAX_PROPAGATIONS, "each round is a pass over the whole graph, "
                 "(stream so far) x classes")
        if not (self.gamma >= 2 and self.gamma == int(self.gamma) and int(self.gamma) % 2 == 0):
            raise HarnessError(f"gamma must be a whole even number of at least 2, not {self.gamma:g} (a negative "
                               "similarity to an odd or fractional power is a negative or NaN weight)")
        if not 0 <= self.alpha <= 1:
            raise HarnessError(f"alpha must lie in [0, 1], not {self.alpha:g}")
        _one_of("templates", self.templates, PROXY_TEMPLATES)

# --- DMN with views (dmn) ---
from harness.methods.configs import ViewsConfig  # noqa: E402  (TPT's views settings and checks)

VIEW_AVERAGES = ("probs", "logits")
"""What DMN averages over its confident views: the authors' probabilities or TTA-VLM's logits."""


@dataclass(frozen=True)
class DmnViewsConfig(ViewsConfig, DmnConfig):
    """DMN-ZS (Zhang et al., CVPR 2024) as the authors (YBZh/DMN, dmn_main.py) run it, with TPT's
    views: the pseudo-label and the entropy that ranks memory entries come from the int(views * top)
    lowest-entropy views of each image; the feature written, the memory's query and the text term are
    the centre view's, as in `dmn-weak`. TTA-VLM's `dmn`: views 64, min_scale 0.08, average logits,
    replace always (top 0.1 keeps 6 of its 64)."""

    views: int = 32
    """The centre view plus views - 1 augmented ones (`-b 32` in the authors' scripts/run.sh; TTA-VLM's
    `aug_bs = 64`)."""
    augmix: str = "auto"
    """AugMix on the augmented views: `auto`, the authors' loader (on the fine-grained sets, their
    multi-letter set ids; not on the ImageNet family; TTA-VLM the same), on, off."""
    min_scale: float = 0.5
    """Smallest area fraction of the random resized crops (`scale=(0.5, 1)` in the authors'
    data/datautils.py; TTA-VLM and TPT: torchvision's 0.08)."""
    top: float = 0.1
    """Fraction of views whose text predictions give the pseudo-label: the int(views * top) (at least
    one) lowest-entropy ones, the centre view among the candidates (`--selection_p 0.1`, both: 3 of 32,
    6 of 64)."""
    average: str = "probs"
    """`probs`: the selected views' probabilities are averaged, views ranked by -sum p log(p + 1e-6)
    (the authors); `logits`: their logits are averaged and then soft-maxed, views ranked by their exact
    entropy (TTA-VLM's dmn). Either way the pseudo-label is the average's argmax and the memory ranks
    it by -sum q log(q + 1e-8) of the averaged probabilities q (TTA-VLM's eps there is 1e-5)."""

    def __post_init__(self) -> None:
        ViewsConfig.__post_init__(self)
        DmnConfig.__post_init__(self)
        if not 0 < self.top <= 1:
            raise HarnessError(f"top must lie in (0, 1], not {self.top:g}")
        _one_of("average", self.average, VIEW_AVERAGES)


# --- BoostAdapter ---
from harness.methods.configs import AUGMIX_CHOICES, MAX_VIEWS  # noqa: E402  (this section's view checks)

BOOST_PROTOCOLS = ("authors", "tta-vlm")
"""Where BoostAdapter's unset view settings come from (BoostAdapterConfig.protocol)."""
HISTORICAL_CHOICES = ("view0", "mean")
"""BoostAdapter's historical sample: the centre crop, or the mean of the top views."""


@dataclass(frozen=True)
class BoostAdapterConfig(TdaConfig):
    """BoostAdapter (Zhang et al., NeurIPS 2024), as taolinzhang/BoostAdapter's runner.py runs it
    (`--mode boostadapter`): TDA's two caches (the settings above, the same defaults: their configs
    are TDA's) with the negative cache first-in-first-out (their update_cache's default; TDA keeps the
    lowest entropies), plus, per image, a throw-away copy of the positive cache boosted with the
    image's own lowest-entropy views. Takes TPT-style views of every image (crops and flips)."""

    views: int = 64
    """The centre crop plus views - 1 random resized crops with a flip (`--views 64`, the authors'
    default and run.sh's). 1: no views, no boosting (TDA with a FIFO negative cache)."""
    top: float = 0.1
    """The int(views * top) lowest-entropy views (6 of 64; view 0 among the candidates) are the
    boosting samples and, on ImageNet-A, -V2, -R and -Sketch, the historical sample's (0.1,
    hard-coded in both places of their code)."""
    delta: int | None = None
    """Extra entries per class in the boosted copy (capacity pos_capacity + delta). Unset: the authors'
    configs/*.yaml by family (-A 3, -V2 1, -R 3, -Sketch 1, Caltech 2, DTD 0, EuroSAT 0, Aircraft 2,
    Food 3, Flowers 0, Pets 0, Cars 3, SUN 1, UCF 0); ImageNet none under protocol = authors (their
    ImageNet loader gives one view: no views, no boosting), 1 under tta-vlm; 1 on ImageNet-C and on
    any other task (TTA-VLM's ImageNet value: neither has a config for them). Set: on every task."""
    historical: str | None = None
    """What the persistent caches take and what queries the caches: `view0`, the centre crop, or
    `mean`, the top views' unnormalised mean feature with their mean logits, mean probabilities and
    the entropy of that mean (view 0 alone when a sample has one view). Unset: the authors' (`mean` on
    -A, -V2, -R, -Sketch; `view0` elsewhere), `view0` everywhere under protocol = tta-vlm."""
    augmix: str | None = None
    """AugMix on the views: on, off, or auto (the fine-grained sets). Unset: off, the authors' (no
    AugMix on any set), or auto under protocol = tta-vlm (its TPT loader's rule)."""
    min_scale: float = 0.08
    """Smallest area fraction of the crops (the authors' RandomResizedCrop, scale (0.08, 1))."""
    protocol: str = "authors"
    """Where the unset delta, historical and augmix come from: `authors`, or `tta-vlm`
    (TomSheng21/tta-vlm's online_method/boostadapter.py: view 0 as the historical sample on every
    set, 64 views and delta 1 on ImageNet, AugMix on the fine-grained sets)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("views", self.views, 1)
        _at_most("views", self.views, MAX_VIEWS, f"a sample's views are made and encoded at once: {self.views} "
                 "of a 224 px teacher are that many image forwards per sample")
        if not 0 < self.top <= 1:
            raise HarnessError(f"top must lie in (0, 1], not {self.top:g}")
        if self.views > 1 and int(self.views * self.top) < 1:
            raise HarnessError(f"top = {self.top:g} of {self.views} views keeps none (int(views * top) = 0)")
        if self.delta is not None:
            _at_least("delta", self.delta, 0)
            _at_most("delta", self.delta, MAX_CACHE_SHOTS, "the boosted copy holds pos_capacity + delta entries "
                     "per class, and at most int(views * top) of them are new")
        if self.historical is not None:
            _one_of("historical", self.historical, HISTORICAL_CHOICES)
        if self.augmix is not None:
            _one_of("augmix", self.augmix, AUGMIX_CHOICES)
        if not 0 < self.min_scale <= 1:
            raise HarnessError(f"min_scale must lie in (0, 1], not {self.min_scale:g}")
        _one_of("protocol", self.protocol, BOOST_PROTOCOLS)
