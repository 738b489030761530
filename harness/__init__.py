"""apm-bench: per-sample test-time-training evaluation of CLIP teachers on Ray workers."""

__version__ = "0.1.0"
