"""How fast the command line answers before any work starts: an argument error, `--help`, `ls`,
against the import of what a run needs (torch, open_clip, Ray), which the checks used to wait for.

    python bench/bench_cli.py      # about 30 s
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
REPEATS = 5


def seconds(command: list[str]) -> float:
    """Median wall time of `command` over REPEATS runs (a fresh process each, as a user types it)."""
    times = []
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(REPEATS):
            start = time.perf_counter()
            subprocess.run(command, cwd=cwd, capture_output=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    heavy = seconds([sys.executable, "-c", "import torch, open_clip, ray"])
    cases = {
        "run with 5 bad arguments (all reported)": [EXE, "run", "--task", "imagefolder:/nonexistent", "--suite", "smok",
                                                    "--precision", "fp8", "--set", "apm.recipe=demoo"],
        "run --help": [EXE, "run", "--help"],
        "ls": [EXE, "ls"],
    }
    print(f"import torch + open_clip + ray: {heavy:.2f} s (median of {REPEATS})")
    for name, command in cases.items():
        took = seconds(command)
        print(f"{name}: {took:.2f} s ({heavy / took:.1f}x faster than the imports alone)")


if __name__ == "__main__":
    main()
