"""Which teacher a run uses, and in what precision: its own module, below the models that load it,
so that harness.models and harness.methods never import the run configuration (harness.config)."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "bf16", "fp16")
"""--precision choices (harness/precision.py maps them to autocast dtypes)."""


@dataclass(frozen=True)
class TeacherConfig:
    model: str = "apm-tiny"
    """open_clip architecture name (e.g. ViT-B-16), or the harness's own `apm-tiny`."""
    pretrained: str = "none"
    """open_clip tag (openai, laion2b_s34b_b88k), `hf-hub:ORG/REPO`, a local checkpoint file or
    open_clip model directory, or `none` for random weights drawn from `init_seed`."""
    precision: str = "fp32"
    """fp32, or fp16 / bf16 autocast for the networks' forward passes on GPU (CPU stays fp32).
    Scoring (normalise, cosine, softmax, top-k) is fp32 in every case. fp16 is what TPT and
    CLIP_benchmark ran by default; its training steps use a gradient scaler."""
    init_seed: int = 0
    """Seed of the random weights when pretrained is `none`: the same tiny teacher on every worker."""
    weights_sha256: str | None = None
    """Content hash of the weights (file, or the weight files of a directory), filled when the run is
    prepared: retrained weights under the same name or path make another fingerprint. None: random."""
