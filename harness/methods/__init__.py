"""Methods register themselves by name on import."""

from harness.methods import apm, tpt, zeroshot  # noqa: F401
from harness.methods.base import METHODS, Method, Outcome, SampleInput

__all__ = ["METHODS", "Method", "Outcome", "SampleInput"]
