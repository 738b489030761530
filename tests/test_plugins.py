"""A method and a task from another package, found through entry points (`apm_bench.methods`,
`apm_bench.tasks`) and run by the command line, as the README's "Write your own method" shows."""

import os
import subprocess
import sys
from pathlib import Path

from harness import resultfiles

EXE = str(Path(sys.executable).parent / "apm-bench")

PLUGIN = '''
"""A tiny plugin: the majority vote of the views' argmaxes over ALL views, and 6 drawn shapes."""
from dataclasses import dataclass

from harness.methods.configs import ViewsConfig
from harness.methods.registry import MethodEntry
from tasks.families import TaskFamily


@dataclass(frozen=True)
class AllVoteConfig(ViewsConfig):
    views: int = 8
    """Views per sample."""
    min_scale: float = 0.5
    """Crops keep at least half the image."""
    ctx_init: str = "a photo of a"
    """The prompt's words."""


def all_vote(settings):
    import torch

    from harness.methods.base import Outcome
    from harness.methods.episodic import ViewMethod

    class AllVote(ViewMethod):
        def adapt(self, teacher, task, features, sample):
            logits = features @ teacher.classifier(task.classnames, self.templates(task))
            votes = torch.bincount(logits.argmax(-1), minlength=len(task.classnames))
            top = votes.argsort(descending=True, stable=True)[:5].tolist()
            return Outcome(top[0], tuple(top), confidence=float(votes.max()) / len(features),
                           n_templates=1, template_set=self.templates(task).name)

    return AllVote(settings, name="all-vote")


def build_shapes(request):
    from tasks.synthetic import SyntheticTask

    return SyntheticTask(per_class=1, name=request.spec)


METHOD = MethodEntry(f"{__name__}:all_vote", "every view votes", f"{__name__}:AllVoteConfig", "a test plugin")
TASK = TaskFamily(build_shapes, "12 drawn shapes, from a plugin", local=True)
'''


def _install(root: Path) -> dict[str, str]:
    """What `pip install` of a package with these entry points leaves on the path: its module and a
    dist-info folder (the test writes them by hand, so it needs no network and no build)."""
    root.mkdir()
    (root / "demo_plugin.py").write_text(PLUGIN)
    info = root / "demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[apm_bench.methods]\nall-vote = demo_plugin:METHOD\n\n[apm_bench.tasks]\nplugin-shapes = demo_plugin:TASK\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


def test_a_plugin_method_and_task_run_like_built_in_ones(tmp_path):
    env = _install(tmp_path / "site")
    listed = subprocess.run([EXE, "ls", "methods"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert "all-vote         every view votes [a test plugin]" in listed.stdout, listed.stderr
    assert "all-vote.min_scale = 0.5  (float)" in listed.stdout
    done = subprocess.run(
        [EXE, "run", "--task", "plugin-shapes", "--method", "zeroshot,all-vote", "--set", "all-vote.views=4",
         "--workers", "1", "--no-progress", "--run-id", "p"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = resultfiles.read_rows([tmp_path / "results" / "p"])
    votes = rows[rows["method"] == "all-vote"]
    assert len(votes) == 12 and votes["error"].isna().all() and (votes["flops"] > 0).all()
    assert votes["top5_correct"].notna().all() and set(votes["template_set"]) == {"single"}
    assert set(votes["task"]) == {"plugin-shapes"}
    typo = subprocess.run([EXE, "run", "--task", "plugin-shapes", "--method", "all-vote", "--set", "all-vote.view=4"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert typo.returncode == 2 and "did you mean 'views'" in typo.stderr
    refused = subprocess.run([EXE, "run", "--task", "plugin-shapes", "--method", "all-vote", "--set",
                              "all-vote.augmix=sometimes"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert refused.returncode == 2 and "augmix must be one of auto, on, off, not 'sometimes'" in refused.stderr


def test_a_broken_plugin_is_one_line_naming_it(tmp_path):
    env = _install(tmp_path / "site")
    (tmp_path / "site" / "demo_plugin.py").write_text("raise ImportError('missing dependency zzz')\n")
    done = subprocess.run([EXE, "ls", "methods"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("error: cannot load method (--method) 'all-vote' from plugin demo-plugin "
                                   "(demo_plugin:METHOD): missing dependency zzz")
