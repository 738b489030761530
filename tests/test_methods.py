import dataclasses

import pyarrow as pa
import torch
import pytest

from harness.config import RunConfig
from harness.methods.configs import ApmConfig
from harness.engine.shards import Shard, plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from tasks.registry import resolve_task

APM = ApmConfig(image_size=64, patch_size=8, hidden=(128, 64), steps=8, lr=1e-3)
IDENTITY = RunIdentity("test-run", "f" * 16, "test")
COMPARED = ["sample_id", "method", "prediction", "top5", "confidence", "prediction_before", "losses", "seed", "error"]


def _worker(methods=("zeroshot", "ensemble", "apm"), task_spec="synthetic:2") -> tuple[ShardWorker, list]:
    task = resolve_task(task_spec)
    config = RunConfig(tasks=(task_spec,), methods=methods, settings=(("apm", APM),))
    return ShardWorker(config, {task.name: task}, IDENTITY), list(task.samples())


def _rows(table: pa.Table, sample_id: str) -> list[dict]:
    return [{k: r[k] for k in COMPARED} for r in table.to_pylist() if r["sample_id"] == sample_id]


def test_result_for_b_does_not_depend_on_a_running_first():
    worker, refs = _worker()
    a, b = refs[0], refs[7]
    alone = worker.process(Shard("b", "synthetic:2", (b,)))
    worker.process(Shard("a", "synthetic:2", (a,)))  # A trains the same APM network and optimiser slot
    after_a = worker.process(Shard("b", "synthetic:2", (b,)))
    assert _rows(alone, b.sample_id) == _rows(after_a, b.sample_id)
    assert len(_rows(alone, b.sample_id)) == 3


def test_rows_carry_provenance_and_ttt_trajectory():
    worker, refs = _worker()
    table = worker.process(Shard("s", "synthetic:2", tuple(refs[:3])))
    rows = table.to_pylist()
    assert table.num_rows == 9 and [r["method"] for r in rows[:3]] == ["zeroshot", "ensemble", "apm"]
    apm = [r for r in rows if r["method"] == "apm"]
    assert all(r["ttt_steps"] == 8 and len(r["losses"]) == 8 for r in apm)
    assert all(r["loss_last"] < r["loss_first"] for r in apm)
    assert all(r["prediction_before"] is not None for r in apm)
    ensemble = [r for r in rows if r["method"] == "ensemble"]
    zeroshot = [r for r in rows if r["method"] == "zeroshot"]
    assert {r["n_templates"] for r in ensemble} == {80} and {r["n_templates"] for r in zeroshot} == {1}
    for r in rows:
        assert r["run_id"] == "test-run" and r["content_hash"] and r["error"] is None
        assert r["correct"] == (r["prediction"] == r["label"]) and len(r["top5"]) == 5
        assert r["top5"][0] == r["prediction"] and 0 < r["confidence"] <= 1 and r["seconds"] > 0


def test_apm_with_many_steps_agrees_with_the_teacher_it_distils():
    """Distillation should reproduce the teacher's own prediction when trained long enough."""
    task = resolve_task("synthetic:1")
    config = RunConfig(tasks=("synthetic:1",), methods=("apm",), settings=(("apm", dataclasses.replace(APM, steps=150)),))
    worker = ShardWorker(config, {task.name: task}, IDENTITY)
    rows = worker.process(plan_shards([task], 12)[0]).to_pylist()
    agree = sum(r["prediction"] == r["prediction_before"] for r in rows)
    assert agree >= 11, [(r["prediction"], r["prediction_before"]) for r in rows]


def test_a_bad_image_becomes_error_rows_and_the_shard_completes(image_folder):
    (image_folder / "tabby" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    worker, refs = _worker(methods=("zeroshot", "apm"), task_spec=f"imagefolder:{image_folder}")
    table = worker.process(plan_shards([worker.tasks["imagefolder:folder"]], 100)[0])
    rows = table.to_pylist()
    assert table.num_rows == 2 * 10
    bad = [r for r in rows if r["sample_id"] == "tabby/broken.jpg"]
    assert len(bad) == 2 and all("broken.jpg" in r["error"] and r["prediction"] is None for r in bad)
    assert sum(r["error"] is None for r in rows) == 18


@pytest.mark.parametrize("templates", ["single", "ensemble"])
def test_apm_classifies_with_the_chosen_templates(templates):
    task = resolve_task("synthetic:1")
    config = RunConfig(tasks=("synthetic:1",), methods=("apm",), settings=(("apm", dataclasses.replace(APM, steps=1, templates=templates)),))
    rows = ShardWorker(config, {task.name: task}, IDENTITY).process(plan_shards([task], 2)[0]).to_pylist()
    assert {r["n_templates"] for r in rows} == {1 if templates == "single" else 80}


def test_text_classifiers_are_built_once_and_adopted_by_other_workers():
    first, _ = _worker()
    second, _ = _worker()
    shared = first.text_classifiers()
    assert len(shared) == 2  # single template (zeroshot) and the 80-template ensemble (ensemble, apm)
    assert not second.teacher.export_classifiers()
    second.adopt_classifiers(shared)
    task = second.tasks["synthetic:2"]
    from tasks.templates import SINGLE_TEMPLATE

    adopted = second.teacher.classifier(task.classnames, (SINGLE_TEMPLATE,))
    assert adopted is second.teacher.classifier(task.classnames, (SINGLE_TEMPLATE,))
    assert torch.equal(adopted, shared[(task.classnames, (SINGLE_TEMPLATE,))])


def test_prefetched_shard_gives_the_same_rows_and_is_consumed():
    worker, refs = _worker(methods=("zeroshot",))
    shard = Shard("p", "synthetic:2", tuple(refs[:4]))
    plain = worker.process(shard)
    worker.prefetch(shard)
    assert "p" in worker._prefetched
    ahead = worker.process(shard)
    assert "p" not in worker._prefetched
    assert _rows(ahead, refs[1].sample_id) == _rows(plain, refs[1].sample_id)


def test_scoring_is_fp32_even_inside_autocast():
    """Reduced-precision features are allowed; the cosine, softmax and top-k never are."""
    from harness.methods.base import score

    torch.manual_seed(0)
    embeddings = torch.randn(64, 32)
    classifier = torch.nn.functional.normalize(torch.randn(32, 200), dim=0)
    plain = score(embeddings, classifier, 100.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.randn(4, 4) @ torch.randn(4, 4)).dtype == torch.bfloat16  # autocast is really on
        inside = score(embeddings, classifier, 100.0)
    assert inside == plain


def test_rows_name_their_protocol_and_template_set():
    worker, refs = _worker(methods=("zeroshot", "ensemble", "apm", "tpt"))
    rows = worker.process(Shard("s", "synthetic:2", tuple(refs[:2]))).to_pylist()
    sets = {r["method"]: r["template_set"] for r in rows}
    assert sets == {"zeroshot": "single", "ensemble": "openai-imagenet-80", "apm": "openai-imagenet-80",
                    "tpt": "tpt-context:a photo of a"}
    assert {r["protocol"] for r in rows} == {"apm-bench"} and {r["n_classes"] for r in rows} == {12}
    assert all(r["top5_correct"] is not None for r in rows)


def test_top5_is_left_empty_below_5_classes(image_folder):
    worker, _ = _worker(methods=("zeroshot",), task_spec=f"imagefolder:{image_folder}")
    rows = worker.process(plan_shards([worker.tasks["imagefolder:folder"]], 100)[0]).to_pylist()
    assert {r["n_classes"] for r in rows} == {3} and all(r["top5_correct"] is None for r in rows)
    assert all(r["correct"] is not None for r in rows) and {r["protocol"] for r in rows} == {"folder"}


def test_the_paper_suites_fill_every_row_the_paper_reports_for_our_methods():
    from tasks.registry import SUITES

    assert SUITES.get("natural-shift").methods == ("zeroshot", "ensemble", "tpt", "apm")
    assert SUITES.get("fine-grained").methods == ("zeroshot", "ensemble", "tpt", "apm")
    assert "tpt" not in SUITES.get("imagenet-c").methods  # Table 2 has no TPT row
