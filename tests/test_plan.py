"""`apm-bench plan`: samples, shards and rows per task, and device-hours per method from an earlier
run's seconds per sample or from FLOPs counted on the meta device; nothing is run or written."""

import json

import pytest
from typer.testing import CliRunner

import cli
from harness import resultfiles, rundir
from harness.config import RunConfig, TeacherConfig
from harness.engine.prepare import check
from harness.methods.configs import ApmConfig, RlcfConfig
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
    assert [c.strip() for c in row.split("|")[1:-1]] == ["synthetic", "48", "10", "96", "data"]  # shards of 5, 2 methods
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


PUBLISHED = {
    "imagenet": 50_000, "imagenet-a": 7_500, "imagenet-v2": 10_000, "imagenet-r": 30_000, "imagenet-sketch": 50_889,
    "flowers102": 2_463, "dtd": 1_692, "oxford-pets": 3_669, "ucf101": 3_783, "caltech101": 2_465, "food101": 30_300,
    "sun397": 19_850, "fgvc-aircraft": 3_333, "eurosat": 8_100, "stanford-cars": 8_041, "imagenet-c/fog/5": 50_000,
    "imagenet-c/snow/3": 50_000, "fashion-mnist": 10_000, "fashion-mnist-c/fog/5": 10_000,
}
"""The test sets' published sizes (the papers', and CoOp's test splits for the fine-grained sets)."""


def test_every_benchmark_task_knows_the_published_size_of_its_test_set():
    from harness.errors import MissingData
    from tasks.registry import SUITES, planned_task

    for spec, size in PUBLISHED.items():
        planned = planned_task(spec, None, MissingData("absent"))
        assert planned is not None and planned.size.samples == size and planned.size.source, spec
    for suite in ("natural-shift", "imagenet-c", "fine-grained", "fashion-mnist-c", "ood-mcm"):
        assert all(planned_task(t, None, MissingData("absent")) for t in SUITES.get(suite).tasks), suite
    textures = planned_task("mcm-textures@imagenet", None, MissingData("absent"))  # MCM's OOD sets, ImageNet's classes
    assert textures.size.samples == 5_640 and len(textures.classnames) == 1000 and textures.name == "mcm-textures@imagenet"
    assert len(planned_task("dtd", None, MissingData("absent")).classnames) == 47  # the class count FLOPs need
    assert planned_task("imagefolder:/x", None, MissingData("absent")) is None  # only its data knows its size


def test_a_plan_without_the_data_counts_the_published_sizes_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("APM_BENCH_DATA", raising=False)
    done = CliRunner().invoke(cli.app, ["plan", "--task", "imagenet-a", "--task", "dtd", "--task", "imagenet-c/fog/5",
                                        "--task", "synthetic:1", "--method", "zeroshot", "--limit", "5000",
                                        "--out-root", str(tmp_path / "results")])
    assert done.exit_code == 0, done.output
    rows = {cells[0]: cells[1:] for line in done.stdout.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.split("|")[1:-1]]]}
    assert rows["imagenet-a"] == ["5,000", "313", "5,000", "known size"]  # --limit applies to the known size
    assert rows["dtd"] == ["1,692", "106", "1,692", "known size"]  # fewer than the limit: all of CoOp's test split
    assert rows["imagenet-c/fog/5"] == ["5,000", "313", "5,000", "known size"]
    assert rows["synthetic:1"] == ["12", "1", "12", "data"]
    assert ("note: imagenet-a: counted from the published size of its test set, 7,500 (ImageNet-A (Hendrycks et al., "
            "Natural Adversarial Examples, CVPR 2021)), since no data root; give --data-root") in done.stdout
    assert "note: dtd: counted from the published size of its test set, 1,692 (the test split of CoOp's " in done.stdout
    assert "note: weights of the teacher apm-tiny/none: random weights" in done.stdout
    assert not (tmp_path / "results").exists()


def test_a_run_without_the_data_still_stops_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("APM_BENCH_DATA", raising=False)
    done = CliRunner().invoke(cli.app, ["run", "--task", "imagenet-a", "--method", "zeroshot",
                                        "--out-root", str(tmp_path / "results")])
    assert done.exit_code != 0 and "task imagenet-a: no data root" in str(done.exception)


def test_checking_a_pretrained_tag_imports_neither_open_clip_nor_torch(tmp_path):
    """The tag table is read from open_clip's source as data: `plan` and a run's first checks stay fast."""
    import subprocess
    import sys

    code = (
        "import sys; from harness.config import RunConfig, TeacherConfig; from harness.engine.prepare import check;"
        "_, _, ok = check(RunConfig(tasks=('synthetic:1',), methods=('zeroshot', 'rlcf'),"
        " teacher=TeacherConfig('ViT-B-16', 'openai')));"
        "_, _, typo = check(RunConfig(tasks=('synthetic:1',), methods=('zeroshot',), teacher=TeacherConfig('ViT-B-16', 'opnai')));"
        "print(ok, [m for m in ('open_clip', 'torch') if m in sys.modules]); print(typo[0])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    first, typo = done.stdout.strip().splitlines()
    assert first == "[] []", done.stdout + done.stderr
    assert typo.startswith("unknown pretrained tag for ViT-B-16 (--pretrained) 'opnai'; did you mean 'openai'?")


def test_the_tag_table_read_as_text_is_open_clips():
    import open_clip

    from harness.openclip_meta import pretrained_tags

    ours = {(model, tag): (entry.hf_hub, entry.url) for model, tags in pretrained_tags().items() for tag, entry in tags.items()}
    theirs = {(model, tag): (open_clip.get_pretrained_cfg(model, tag).get("hf_hub", ""),
                             open_clip.get_pretrained_cfg(model, tag).get("url", "")) for model, tag in open_clip.list_pretrained()}
    assert ours == theirs and list(ours) == list(theirs)
    assert all(list(pretrained_tags().get(m, {})) == open_clip.list_pretrained_tags_by_model(m)
               for m in ("ViT-B-16", "ViT-L-14", "ViT-H-14-quickgelu", "RN50-quickgelu"))


def test_a_plan_checks_rlcfs_reward_weights_without_fetching_them(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from harness.plan import weight_lines

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # conftest: HF_HUB_OFFLINE=1
    config, _, problems = check(RunConfig(tasks=("synthetic:1",), methods=("zeroshot", "rlcf"),
                                          teacher=TeacherConfig("apm-mini", "synthetic-teacher")))
    assert problems == []
    teacher, reward = weight_lines(config)
    assert teacher[0] and teacher[1].startswith("weights of the teacher apm-mini/synthetic-teacher: shipped, ")
    assert reward == (False, "weights of rlcf's own model ViT-L-14/openai: not in the cache, and HF_HUB_OFFLINE is "
                             "set: the run would stop (offline, --set rlcf.reward_model=teacher rewards with the run's "
                             "own teacher)")
    own = RunConfig(tasks=("synthetic:1",), methods=("rlcf",), settings=(("rlcf", RlcfConfig(reward_model="teacher")),))
    assert [text for _, text in weight_lines(own)] == ["weights of the teacher apm-tiny/none: random weights"]


def test_a_second_plan_reads_its_flop_counts_from_the_cache():
    config, tasks, _ = check(RunConfig(tasks=("synthetic:1",), methods=("zeroshot", "apm"),
                                       settings=(("apm", ApmConfig(image_size=64, patch_size=8, hidden=(64,))),)))
    first = cost_lines(config, task_lines(config, tasks), tasks, [], None)
    again = cost_lines(config, task_lines(config, tasks), tasks, [], None)
    assert [c.flops for c in first] == [c.flops for c in again] and all("(cached)" in c.source for c in again)


def test_a_plan_counts_every_stream_of_an_online_method(tmp_path):
    """Rows: one per episodic method and sample, one per online method, stream and sample; an online
    method's FLOPs per sample are the ones its rows record."""
    from harness.engine.stream_parts import part, plan_streams
    from harness.engine.worker import RunIdentity, ShardWorker

    config, tasks, _ = check(RunConfig(tasks=("synthetic:1",), methods=("zeroshot", "tda", "ecalp"), streams=3,
                                       teacher=TeacherConfig("apm-mini", "synthetic-teacher")))
    lines = task_lines(config, tasks)
    assert lines[0].samples == 12 and lines[0].rows == 12 * (1 + 2 * 3)
    costs = {c.method: c for c in cost_lines(config, lines, tasks, [], device_tflops=1.0)}
    assert (costs["zeroshot"].samples, costs["tda"].samples) == (12, 36)
    stream = plan_streams(config, tasks)[0]
    result = ShardWorker(config, {t.name: t for t in tasks}, RunIdentity("r", "f", "c")).process(
        part(config, stream, 0, None, 3600.0))
    recorded = {r["method"]: r["flops"] for r in result.table.to_pylist()}
    assert recorded == {"tda": costs["tda"].flops, "ecalp": costs["ecalp"].flops}


def test_seeds_plan_one_run_per_seed_and_refuse_bad_lists(tmp_path):
    text = _plan(tmp_path, "--seeds", "0,3", "--run-id", "study", "--limit", "12")
    assert "seed 0: run study-seed0" in text and "seed 3: run study-seed3" in text
    assert text.count("| synthetic") == 2 and not (tmp_path / "results").exists()
    for seeds, extra, message in (("0,x", [], "--seeds expects comma-separated integers"), ("0,1,0", [], "each seed once"),
                                  ("0,1", ["--seed", "3"], "drop --seed"), ("", [], "--seeds expects")):
        done = CliRunner().invoke(cli.app, ["plan", *SMOKE, "--seeds", seeds, *extra])
        assert done.exit_code != 0 and message in str(done.exception), (seeds, done.exception)
