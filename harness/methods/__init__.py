"""Methods by name. Only the registry is imported here: a method's own module (torch, open_clip) is
loaded when a worker builds it."""

from harness.methods.registry import METHODS

__all__ = ["METHODS"]
