"""Benchmark tasks and suites."""

from tasks.base import LoadedImage, SampleRef, Task
from tasks.registry import SUITES, TASKS, Suite, resolve_task

__all__ = ["LoadedImage", "SampleRef", "Task", "SUITES", "TASKS", "Suite", "resolve_task"]
