"""How many torch threads a single-process job (`apm-bench teacher train`) should use on this machine
now. Torch's threads wait for each other at every operation, spinning: on a machine whose other
processes hold the cores, a thread that loses its core stalls all the others, and two threads can be
four to ten times slower than one (0.74-1.77 s a step against 0.18 s at a load average of 5-8 on 2
cores). So the default counts the CPUs the other processes leave free (the 1-minute load average
subtracted from the CPUs this process may use), rounded, at least 1."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. a container's cpuset), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_threads(cpus: int | None = None, load: float | None = None) -> tuple[int, str]:
    """(threads, why in a few words) for the CPUs free now."""
    cpus = cpus or usable_cpus()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this system: every CPU
            return cpus, f"{cpus} CPU(s)"
    threads = max(1, min(cpus, int(cpus - load + 0.5)))
    return threads, f"{cpus} CPU(s), load average {load:.2f}"
