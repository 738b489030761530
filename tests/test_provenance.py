"""code_version: the commit of a checkout of this project, never of a repository the package merely sits in."""

import subprocess
from importlib import metadata
from pathlib import Path

from harness.provenance import PACKAGE_ROOT, code_version

INSTALLED = f"apm-bench {metadata.version('apm-bench')}"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false",
                           *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def repo(path: Path, project: str) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(f'[project]\nname = "{project}"\nversion = "9.9"\n')
    git(path, "init", "-q")
    git(path, "add", "pyproject.toml")
    git(path, "commit", "-q", "-m", "first")
    return path


def test_installed_inside_another_repository_reports_the_package_metadata(tmp_path):
    outer = repo(tmp_path / "someone-else", "someone-else")
    site = outer / ".venv" / "lib" / "python3.11" / "site-packages"
    (site / "harness").mkdir(parents=True)
    assert code_version(site) == INSTALLED
    # even a pyproject naming apm-bench there does not make a folder inside another checkout one of ours
    (site / "pyproject.toml").write_text('[project]\nname = "apm-bench"\n')
    assert code_version(site) == INSTALLED
    assert git(outer, "rev-parse", "HEAD") not in code_version(site)


def test_the_top_of_another_project_is_not_ours(tmp_path):
    assert code_version(repo(tmp_path / "other", "other-project")) == INSTALLED


def test_a_checkout_of_this_project_reports_its_commit_and_dirt(tmp_path):
    checkout = repo(tmp_path / "apm-bench", "apm-bench")
    sha = git(checkout, "rev-parse", "HEAD")
    assert code_version(checkout) == sha
    (checkout / "notes.txt").write_text("untracked")
    assert code_version(checkout) == sha
    (checkout / "pyproject.toml").write_text('[project]\nname = "apm_bench"\nversion = "9.10"\n')
    assert code_version(checkout) == sha + "+dirty"


def test_the_default_root_is_the_folder_holding_the_package():
    assert (PACKAGE_ROOT / "harness" / "provenance.py").is_file()
