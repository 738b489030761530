"""The optional attack stage (`apm-bench run --attack pgd[:FIELD=VALUE,...]`) as data: what the
fingerprint, the manifest and every attacked row record. Torch-free, as the rest of the config."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from harness.errors import HarnessError

KINDS = ("pgd",)
TARGETS = ("prediction", "label")


def _number(text: str, flag: str) -> float:
    """`1/255`, `0.004` or `eps/4` (with eps already known) as a float."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise HarnessError(f"{flag}: '{text}' is not a number or a fraction such as 1/255") from None


def _fraction_of_255(value: float) -> str:
    scaled = value * 255
    return f"{scaled:g}/255" if abs(scaled - round(scaled, 6)) < 1e-9 else f"{value:g}"


@dataclass(frozen=True)
class AttackConfig:
    """PGD (Madry et al., 2018) in the teacher's input pixels, [0, 1] after its resize and crop: a
    uniform random start in the eps-ball (torchattacks' default, which R-TPT runs), `steps` signed-
    gradient steps of `step` on the cross-entropy of the teacher's zero-shot logits, each projected
    back into the ball and [0, 1]; the image each method then sees is that crop, rounded down to 8 bits
    as torchvision's ToPILImage does (R-TPT hands its views the same PIL image). Defaults: R-TPT's
    (Sheng et al., CVPR 2025) eps = 1/255, 7 steps of eps/4. `target`: the teacher's own zero-shot
    prediction (no label is read: an attacker without labels), or the true label, as R-TPT's script."""

    kind: str = "pgd"
    eps: float = 1 / 255
    steps: int = 7
    step: float | None = None
    """None: eps / 4."""
    target: str = "prediction"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise HarnessError(f"--attack must be one of {', '.join(KINDS)}, not '{self.kind}'")
        if not 0 < self.eps <= 1 or self.steps < 1 or (self.step is not None and not 0 < self.step <= 1):
            raise HarnessError(f"--attack: eps ({self.eps:g}) and step ({self.step_size:g}) must lie in (0, 1] and "
                               f"steps ({self.steps}) be at least 1")
        if self.target not in TARGETS:
            raise HarnessError(f"--attack target must be one of {', '.join(TARGETS)}, not '{self.target}'")

    @property
    def step_size(self) -> float:
        return self.step if self.step is not None else self.eps / 4

    @property
    def label(self) -> str:
        """What attacked rows carry in `attack`: `pgd:eps=1/255,steps=7`, then `step=...` where it is not
        eps/4 and `target=label` where it is not the prediction (short enough for a legend, and one
        label per setting)."""
        extra = ([f"step={_fraction_of_255(self.step_size)}"] if self.step is not None and self.step != self.eps / 4 else []) \
            + ([f"target={self.target}"] if self.target != "prediction" else [])
        return ",".join([f"{self.kind}:eps={_fraction_of_255(self.eps)}", f"steps={self.steps}", *extra])

    @classmethod
    def parse(cls, text: str) -> AttackConfig:
        """`pgd` or `pgd:eps=4/255,steps=10,step=1/255,target=label`."""
        kind, _, rest = text.partition(":")
        fields: dict[str, object] = {"kind": kind.strip()}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in ("eps", "steps", "step", "target"):
                raise HarnessError(f"--attack {text}: expected KIND[:eps=E,steps=N,step=S,target=prediction|label], "
                                   f"not '{item}'")
            if key == "steps":
                if not value.strip().isdigit():
                    raise HarnessError(f"--attack {text}: steps must be a whole number, not '{value}'")
                fields[key] = int(value)
            else:
                fields[key] = value.strip() if key == "target" else _number(value, f"--attack {key}")
        return cls(**fields)  # type: ignore[arg-type]
