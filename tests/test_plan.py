"""`apm-bench plan`: samples, shards and rows per task, and device-hours per method from an earlier
run's seconds per sample or from FLOPs counted on the meta device; nothing is run or written."""

import json

import pytest
from typer.testing import CliRunner

import cli
from harness import resultfiles, rundir
from harness.config import RunConfig, TeacherConfig
from harness.engine.prepare import check
from harness.plan import cost_lines, task_lines
from harness.store import rows_to_table
from test_report_tables import make_row

SMOKE = ["--task", "synthetic", "--method", "zeroshot,apm", "--model", "apm-mini", "--pretrained", "synthetic-teacher",
         "--set", "apm.image_size=64", "--set", "apm.patch_size=8", "--set", "apm.hidden=64", "--shard-size", "5"]


def _plan(tmp_path, *extra: str) -> str:
    done = CliRunner().invoke(cli.app, ["plan", *SMOKE, "--out-root", str(tmp_path / "results"), *extra])
    assert done.exit_code == 0, done.output
    return done.output


def test_a_plan_counts_tasks_and_writes_nothing(tmp_path):
    text = _plan(tmp_path, "--device-tflops", "10")
    row = next(line for line in text.splitlines() if line.startswith("| synthetic"))
    assert [c.strip() for c in row.split("|")[1:-1]] == ["synthetic", "48", "10", "96"]  # shards of 5, 2 methods
    assert "no earlier run; FLOPs counted on the meta device, at 10 TFLOP/s peak" in text
    assert not (tmp_path / "results").exists()


def test_flops_on_the_meta_device_agree_with_what_a_run_records():
    """The plan's count and the row's count are the same torch.utils.flop_counter arithmetic, on the
    meta device and on the CPU alike (attention included: harness/flops.py)."""
    from harness.engine.shards import plan_shards
    from harness.engine.worker import RunIdentity, ShardWorker

    config, tasks, _ = check(RunConfig(tasks=("synthetic:1",), methods=("zeroshot", "tpt"),
                                       teacher=TeacherConfig("apm-mini", "synthetic-teacher")))
    costs = cost_lines(config, task_lines(config, tasks), tasks, [], device_tflops=1.0)
    rows = ShardWorker(config, {t.name: t for t in tasks}, RunIdentity("r", "f", "c")).process(
        plan_shards(tasks, 12)[0]).to_pylist()
    recorded = {r["method"]: r["flops"] for r in rows}
    assert {c.method: c.flops for c in costs} == recorded  # attention counted the same on every device
    assert costs[0].hours == pytest.approx(costs[0].flops * 12 / 1e12 / 3600)


def test_an_earlier_run_with_the_same_settings_gives_the_seconds(tmp_path):
    config = RunConfig(tasks=("synthetic",), methods=("zeroshot", "apm"))
    earlier = tmp_path / "results" / "earlier"
    rundir.write_manifest(earlier, {"run_id": "earlier", "started": "2026-01-01T00:00:00",
                                   "config": json.loads(json.dumps(config.to_dict(), default=list))})
    rows = [make_row("synthetic", "zeroshot", i, True, model="apm-tiny", pretrained="none", seconds=0.5) for i in range(9)]
    resultfiles.write_shard(earlier, "s-00000", rows_to_table(rows), "f")
    config, tasks, _ = check(config)
    costs = {c.method: c for c in cost_lines(config, task_lines(config, tasks), tasks, [earlier], None)}
    assert costs["zeroshot"].seconds == 0.5 and costs["zeroshot"].hours == pytest.approx(48 * 0.5 / 3600)
    assert str(earlier) in costs["zeroshot"].source
    assert costs["apm"].seconds is None and costs["apm"].hours is None  # no apm rows there, no peak stated
