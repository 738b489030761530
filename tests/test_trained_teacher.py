"""The shipped teacher trained on the synthetic task (harness/models/weights/synthetic-teacher) and
the trainer that made it: accuracy far above chance, lowered by corruptions, distilled faithfully
by APM, and a checkpoint that loads through `--pretrained PATH` unchanged."""

import dataclasses

import pytest
import torch

from harness.config import RunConfig, TeacherConfig
from harness.methods.configs import ApmConfig
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.models.teacher import load_teacher
from harness.models.train_teacher import TrainConfig, train, zero_shot_accuracy
from harness.seeding import derive_seed
from tasks.corruptions import corrupt
from tasks.registry import SUITES, resolve_task
from tasks.templates import SINGLE_TEMPLATE

SHIPPED = TeacherConfig(model="apm-mini", pretrained="synthetic-teacher")


@pytest.fixture(scope="module")
def shipped():
    return load_teacher(SHIPPED)


def test_smoke_suite_uses_the_shipped_teacher(shipped):
    suite = SUITES.get("smoke")
    assert (suite.model, suite.pretrained) == ("apm-mini", "synthetic-teacher")  # a name: same fingerprint anywhere
    assert shipped.source.kind == "shipped"


def test_shipped_teacher_is_far_above_chance_on_the_clean_synthetic_task(shipped):
    task = resolve_task("synthetic")  # the smoke suite's 48 images; chance is 1/12
    assert zero_shot_accuracy(shipped, task) >= 0.9
    assert zero_shot_accuracy(shipped, task, templates=task.templates) >= 0.9


def test_severity_5_corruptions_lower_its_accuracy_on_average(shipped):
    task = resolve_task("synthetic:2")
    refs = task.samples()
    classifier = shipped.classifier(task.classnames, (SINGLE_TEMPLATE,))

    def accuracy(images):
        predictions = (shipped.encode_images(torch.stack([shipped.preprocess(i) for i in images])) @ classifier).argmax(1)
        return sum(int(p) == r.label for p, r in zip(predictions, refs)) / len(refs)

    clean = [task.load(r).image for r in refs]
    corrupted = {
        name: accuracy([corrupt(img, name, 5, derive_seed(0, name, r.sample_id)) for img, r in zip(clean, refs)])
        for name in ("gaussian_noise", "contrast", "pixelate", "snow")
    }
    assert sum(corrupted.values()) / len(corrupted) < accuracy(clean) - 0.1, corrupted


def test_apm_with_enough_steps_agrees_with_the_trained_teacher():
    task = resolve_task("synthetic")
    apm = ApmConfig(image_size=64, patch_size=8, hidden=(256, 256, 128), lr=1e-3, steps=120)
    config = RunConfig(tasks=(task.name,), methods=("apm",), teacher=SHIPPED, settings=(("apm", apm),))
    worker = ShardWorker(config, {task.name: task}, RunIdentity("t", "f" * 16, "test"))
    rows = worker.process(plan_shards([task], 48)[0]).to_pylist()
    agree = sum(r["prediction"] == r["prediction_before"] for r in rows)
    assert agree >= 0.95 * len(rows), [(r["prediction"], r["prediction_before"]) for r in rows]


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_a_trained_checkpoint_loads_through_pretrained_path_with_identical_embeddings(tmp_path, dtype):
    cfg = TrainConfig(steps=3, batch_size=16, synthetic_per_class=2, warmup=1, dtype=dtype, threads=1)
    model, meta = train(cfg, tmp_path / "teacher", progress=False)
    assert (tmp_path / "teacher" / "open_clip_config.json").is_file() and meta["images"] == 24
    loaded = load_teacher(TeacherConfig(model="apm-mini", pretrained=str(tmp_path / "teacher")))
    assert loaded.source.kind == "local-dir"
    pixels = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode_images(pixels), model.encode_image(pixels))
        tokens = loaded.tokenizer(["a photo of a red circle."])
        assert torch.equal(loaded.model.encode_text(tokens), model.encode_text(tokens))
    again, _ = train(dataclasses.replace(cfg), None, progress=False)  # fixed seed: the same weights
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize(("cpus", "load", "threads"), [(2, 0.05, 2), (2, 0.4, 2), (2, 0.7, 1), (2, 6.5, 1), (8, 3.2, 5)])
def test_the_default_threads_are_the_cpus_other_processes_leave_free(cpus, load, threads):
    from harness.cpus import free_threads

    assert free_threads(cpus, load) == (threads, f"{cpus} CPU(s), load average {load:.2f}")


def test_training_shows_its_threads_and_seconds_per_step(capsys):
    cfg = TrainConfig(steps=2, batch_size=16, synthetic_per_class=2, warmup=1, threads=1)
    train(cfg, None, progress=True)
    shown = capsys.readouterr().out
    assert "(1 thread(s))" in shown and " s/step" in shown and "- s/step" not in shown
