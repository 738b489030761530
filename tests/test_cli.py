"""The console script as a user runs it: a subprocess, its own local Ray, files on disk."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import resultfiles

EXE = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")


def apm_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([EXE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_smoke_run_then_report(tmp_path):
    done = apm_bench("run", "--suite", "smoke", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = list((tmp_path / "results").iterdir())
    assert len(runs) == 1 and (runs[0] / "manifest.json").is_file()
    rows = resultfiles.read_rows([runs[0]])
    assert len(rows) == 48 * 3 and rows[["sample_id", "method"]].drop_duplicates().shape[0] == 144
    assert rows["error"].isna().all()
    apm = rows[rows["method"] == "apm"]
    assert (apm["ttt_steps"] == 20).all() and (apm["loss_last"] < apm["loss_first"]).all()

    table = apm_bench("report", "--format", "markdown", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    title, top1 = table.stdout.split("\n\n")[:2]
    assert title == "Top-1 accuracy (%)"
    lines = top1.strip().splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:3]] == ["method", "synthetic"]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["zeroshot", "ensemble", "apm"]
    assert all("(n=48)" in line for line in lines[2:])
    zeroshot = float(lines[2].split("|")[2].split()[0])
    assert zeroshot >= 90.0  # the shipped teacher was trained on these shapes; chance is 8.3%


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--no-such-flag"], "No such option: --no-such-flag"),
        (["run", "--suite", "smoke", "--model", "ViT-B-61"], "did you mean 'ViT-B-16'"),
        (["run", "--task", "imagenet-x", "--method", "zeroshot"], "unknown task 'imagenet-x'"),
        (["run", "--suite", "smok"], "unknown suite 'smok'; did you mean 'smoke'"),
        (["run", "--suite", "smoke", "--set", "apm.hidden=4096,x"], "--set apm.hidden: expects an integer, not 'x'"),
        (["run", "--suite", "smoke", "--set", "apm.stpes=3"], "did you mean 'steps'"),
        (["run", "--suite", "smoke", "--set", "tpt.steps=3"], "tpt is not among the run's methods"),
        (["run", "--suite", "smoke", "--set", "apm.steps"], "--set expects METHOD.FIELD=VALUE"),
        (["run", "--task", "synthetic:1", "--method", "zeroshot", "--model", "ViT-B-16", "--pretrained", "openai"],
         "cannot fetch the weights of ViT-B-16 openai"),  # offline: found on the driver, before Ray starts
        (["report", "--format", "xlsx"], "unknown format (--format) 'xlsx'"),
        (["run", "--suite", "smoke", "--precision", "fp8"], "--precision must be one of fp32, bf16, fp16"),
        (["run", "--suite", "smoke", "--set", "apm.recipe=demoo"], "unknown APM recipe (apm.recipe) 'demoo'; did you mean 'demo'"),
        (["report", "nowhere"], "not a run directory"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, args, message):
    done = apm_bench(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_every_problem_is_reported_at_once_before_anything_heavy_is_imported(tmp_path):
    """Argument and data errors come from light modules only (torch, open_clip and Ray take seconds
    to import); bench/bench_cli.py measures the time to the first error."""
    code = (
        "import sys; from typer.testing import CliRunner; import cli;"
        "r = CliRunner().invoke(cli.app, ['run', '--task', 'imagefolder:/nonexistent', '--suite', 'smok',"
        " '--precision', 'fp8', '--method', 'apm', '--set', 'apm.recipe=demoo']);"
        "print(type(r.exception).__name__, [m for m in ('torch', 'open_clip', 'ray') if m in sys.modules]);"
        "print(r.exception)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    first, *problems = done.stdout.strip().splitlines()
    assert first == "Problems []", done.stdout + done.stderr
    assert [p.split(" ")[0] for p in problems] == ["unknown", "--precision", "--set", "task"]  # not "no methods"
    assert "image folder not found: /nonexistent" in problems[-1] and "did you mean 'demo'" in problems[2]


def test_the_console_script_prints_one_error_line_per_problem(tmp_path):
    done = apm_bench("run", "--task", "imagefolder:/nonexistent", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "no methods" in lines[0] and "/nonexistent" in lines[1]


def test_help_lists_every_method_and_task_family(tmp_path):
    from harness.methods import METHODS
    from tasks.registry import TASKS

    text = " ".join(apm_bench("run", "--help", cwd=tmp_path).stdout.split()).replace("- ", "-")  # undo the wrapping
    for name in [*METHODS.names(), *TASKS.names()]:
        assert name in text
    assert "apm-bench ls methods" in text
    for command in (["run"], ["report"], ["teacher", "train"]):
        assert "…" not in apm_bench(*command, "--help", cwd=tmp_path).stdout  # no word cut at 80 columns


def test_the_fashion_suite_says_where_its_teacher_lives_and_how_to_make_it(tmp_path):
    done = subprocess.run([EXE, "run", "--suite", "fashion-mnist-c"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "APM_BENCH_HOME": str(tmp_path / "home")}, timeout=120)
    assert done.returncode == 2
    message = done.stderr
    assert str(tmp_path / "home" / "teachers" / "fashion-mnist") in message
    assert "apm-bench teacher train --data fashion-mnist" in message and "results/teachers" not in message


def test_a_run_whose_every_row_is_an_error_exits_non_zero_and_says_why(ray_local, tmp_path):
    from typer.testing import CliRunner

    import cli

    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "x.jpg").write_bytes(b"not an image")
    done = CliRunner().invoke(cli.app, ["run", "--task", f"imagefolder:{tmp_path / 'data'}", "--method", "zeroshot",
                                        "--no-progress", "--out-root", str(tmp_path / "results")])
    assert done.exit_code == 4, done.output
    assert "every row this run wrote is an error row (the first: " in done.stderr and "x.jpg" in done.stderr


def test_a_run_says_what_it_will_be_before_its_first_shard(tmp_path):
    """The estimate and the random-teacher note are read while no shard exists yet."""
    out = tmp_path / "results"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    with subprocess.Popen([EXE, "run", "--task", "synthetic:1", "--method", "zeroshot,apm", "--set", "apm.preset=cpu-small",
                           "--no-progress", "--out-root", str(out)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        first = proc.stderr.readline()
        shards_then = list(out.rglob("*.parquet"))
        rest, _ = proc.stderr.read(), proc.wait(timeout=600)
    assert proc.returncode == 0, first + rest
    assert first.startswith("about 12 sample(s) x 2 method(s) (zeroshot, apm) in 1 shard(s), under a minute on 1 CPU "
                            "worker(s) (from FLOPs at 60 GFLOP/s per worker, assumed for a CPU)"), first
    assert shards_then == []
    assert rest.splitlines()[0].startswith("note: the teacher apm-tiny has random weights (--pretrained none)")
    assert "APM at this size" not in rest  # the small preset: nothing to warn about


def test_the_estimate_offers_the_small_apm_where_the_papers_size_would_crawl():
    from harness.config import ExecConfig, RunConfig
    from harness.engine.prepare import check
    from harness.estimate import estimate

    config, tasks, _ = check(RunConfig(tasks=("synthetic:1",), methods=("apm",)))
    lines = estimate(config, ExecConfig(out_root="nowhere", workers=1), tasks)
    assert lines[0].startswith("about 12 sample(s) x 1 method(s) (apm) in 1 shard(s), ~") and "min on 1 CPU" in lines[0]
    assert lines[2].startswith("note: APM at this size costs ~28 s a sample on a CPU worker; "
                               "--set apm.preset=cpu-small is the suites' small CPU APM")


def test_each_paper_suite_names_the_table_its_rows_fill():
    """The hint after a run names the suite's table (`report --table fashion-mnist-c`), not the plain pivots."""
    from harness.report.tables import TABLES
    from tasks.registry import SUITES

    tables = {name: suite.table for name, suite in SUITES.items()}
    assert tables == {"smoke": None, "natural-shift": "natural-shift", "imagenet-c": "imagenet-c",
                      "fine-grained": "fine-grained", "fashion-mnist-c": "fashion-mnist-c", "ood-mcm": "trust"}
    # a paper layout's columns are its suite's tasks (the Fashion-MNIST suite adds its open-set pair after them)
    assert all(SUITES.get(name).tasks[:len(TABLES.get(table).tasks)] == TABLES.get(table).tasks
               for name, table in tables.items() if table and table != "trust")


def test_an_unknown_report_table_lists_trust_among_the_choices(tmp_path):
    done = apm_bench("report", "--table", "trusts", cwd=tmp_path)
    assert done.returncode != 0 and "did you mean 'trust'" in done.stderr and "natural-shift" in done.stderr
