"""Where a result came from: code version and the versions of the libraries that shape numbers."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

PACKAGES = ("apm-bench", "torch", "torchvision", "open_clip_torch", "ray", "pyarrow", "pandas", "numpy", "pillow")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding the `harness` package: a checkout of this project, or site-packages when installed."""
GIT_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
"""Variables that point git at a repository other than the one around `root` (set inside git hooks, say)."""


def code_version(root: Path = PACKAGE_ROOT) -> str:
    """The git commit of the harness source, with `+dirty` when a tracked file has uncommitted changes;
    otherwise `apm-bench VERSION` from the installed package's metadata. Git is asked only when `root`
    is itself the top of a checkout of this project: installed into a virtual environment that lives
    inside another project's repository, the package would otherwise report that repository's commit."""
    try:
        if _is_checkout(root):
            sha = _git(root, "rev-parse", "HEAD")
            if sha.returncode == 0:
                dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
                return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        return f"apm-bench {metadata.version('apm-bench')}"
    except (OSError, subprocess.SubprocessError, metadata.PackageNotFoundError):
        return "unknown"


def _is_checkout(root: Path) -> bool:
    """`root` is the top level of a git work tree whose pyproject.toml names this project."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    name = project.get("name") if isinstance(project, dict) else None
    if not isinstance(name, str) or re.sub(r"[-_.]+", "-", name).lower() != "apm-bench":
        return False
    top = _git(root, "rev-parse", "--show-toplevel")
    return top.returncode == 0 and Path(top.stdout.strip()).resolve() == root.resolve()


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in GIT_REDIRECTS}
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=10,
                          check=False)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
