"""The attack stage (`--attack pgd`): its settings as the CLI parses them, the attacked image (within
the ball, seeded, in 8 bits), that it does what an attack is for on a trained teacher, and that a run
records it (config, fingerprint, feature cache key, rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from harness.attack_config import AttackConfig
from harness.config import RunConfig, TeacherConfig
from harness.engine.features import feature_key
from harness.engine.shards import plan_shards
from harness.engine.worker import RunIdentity, ShardWorker
from harness.errors import HarnessError
from harness.methods.base import score
from harness.models.pgd import attack_image
from harness.models.teacher import load_teacher, split_preprocess
from tasks.registry import resolve_task
from tasks.synthetic import SyntheticTask
from tasks.templates import SINGLE

TRAINED = TeacherConfig("apm-mini", "synthetic-teacher")


@pytest.fixture(scope="module")
def mini():
    return load_teacher(TRAINED)


def test_settings_parse_with_r_tpt_defaults_and_name_the_flag_on_errors():
    default = AttackConfig.parse("pgd")
    assert (default.eps, default.steps, default.step_size, default.target) == (1 / 255, 7, 1 / 1020, "prediction")
    assert default.label == "pgd:eps=1/255,steps=7" == AttackConfig(step=1 / 1020).label
    assert AttackConfig(eps=4 / 255, step=2 / 255, target="label").label == "pgd:eps=4/255,steps=7,step=2/255,target=label"
    custom = AttackConfig.parse("pgd:eps=4/255, steps=3,step=1/255,target=label")
    assert (custom.eps, custom.steps, custom.step_size, custom.target) == (4 / 255, 3, 1 / 255, "label")
    for bad in ("fgsm", "", "pgd:eps=2", "pgd:steps=two", "pgd:eps=x/255", "pgd:size=3", "pgd:target=mean"):
        with pytest.raises(HarnessError, match="attack"):
            AttackConfig.parse(bad)
    with pytest.raises(HarnessError, match=r"eps \(-1\) and step \(-0.25\) must lie in \(0, 1\]"):
        AttackConfig.parse("pgd:eps=-1")  # the values given, not a label made from them


def test_the_attacked_image_stays_in_the_ball_is_seeded_and_is_8_bit(mini):
    image = SyntheticTask().load(SyntheticTask().samples()[0]).image
    classifier = mini.classifier(SyntheticTask().classnames, SINGLE)
    config = AttackConfig(eps=4 / 255, steps=3)
    one = attack_image(mini, classifier, image, 11, config)
    again = attack_image(mini, classifier, image, 11, config)
    other = attack_image(mini, classifier, image, 12, config)
    crop = np.asarray(split_preprocess(mini.preprocess)[0](image), dtype=np.int16)
    moved = np.asarray(one, dtype=np.int16) - crop
    assert one.size == (mini.input_size, mini.input_size) and one.mode == "RGB"
    assert np.array_equal(np.asarray(one), np.asarray(again)) and not np.array_equal(np.asarray(one), np.asarray(other))
    assert np.abs(moved).max() <= 5 and np.abs(moved).max() >= 3  # 4/255, rounded down to 8 bits as ToPILImage
    assert np.abs(moved).mean() > 1  # the perturbation fills the ball, it is not a rounding artefact


def test_pgd_lowers_the_trained_teachers_zero_shot_accuracy(mini):
    """On the drawn shapes the shipped teacher is right on most images; within 8/255 it is not."""
    task = SyntheticTask()
    classifier = mini.classifier(task.classnames, SINGLE)
    refs = task.samples()[:24]
    images = [task.load(r).image for r in refs]
    labels = torch.tensor([r.label for r in refs])

    def accuracy(batch):
        pixels = torch.stack([mini.preprocess(i) for i in batch])
        return float((torch.tensor(score(mini.encode_images(pixels), classifier, mini.logit_scale).prediction) == labels).float().mean())

    attacked = [attack_image(mini, classifier, img, i, AttackConfig(eps=8 / 255, steps=7)) for i, img in enumerate(images)]
    clean, robust = accuracy(images), accuracy(attacked)
    assert clean >= 0.7 and robust <= clean - 0.3, (clean, robust)


def test_a_run_records_its_attack_in_the_fingerprint_the_cache_key_and_every_row(mini):
    clean = RunConfig(tasks=("synthetic:4",), methods=("zeroshot",), teacher=TRAINED)
    attacked = RunConfig(tasks=("synthetic:4",), methods=("zeroshot",), teacher=TRAINED, attack=AttackConfig())
    assert "attack" not in clean.to_dict() or clean.to_dict()["attack"] is None
    assert clean.fingerprint() != attacked.fingerprint()
    assert RunConfig.from_dict(attacked.to_dict()) == attacked
    task = resolve_task("synthetic:4")
    assert feature_key(clean, task, "s") != feature_key(attacked, task, "s")
    rows = {}
    for name, config in (("clean", clean), ("attacked", attacked)):
        worker = ShardWorker(config, {task.name: task}, RunIdentity(name, config.fingerprint(), "c"))
        shard = plan_shards([task], 16, None, 0)[0]
        rows[name] = worker.rows(shard)
    assert {r.attack for r in rows["clean"]} == {None}
    assert {r.attack for r in rows["attacked"]} == {AttackConfig().label}
    assert [r.content_hash for r in rows["clean"]] == [r.content_hash for r in rows["attacked"]]  # the source's
    assert [r.msp for r in rows["clean"]] != [r.msp for r in rows["attacked"]]


def test_the_teacher_preprocessing_splits_at_to_tensor(mini):
    pil_steps, normalise = split_preprocess(mini.preprocess)
    image = SyntheticTask().load(SyntheticTask().samples()[0]).image
    assert torch.allclose(normalise(TF.to_tensor(pil_steps(image))), mini.preprocess(image))


def test_seeds_share_their_samples_and_differ_in_everything_drawn():
    """`run --seeds`: subset_seed pins --limit's subset (so the shards) to the first seed; per-sample
    seeds still follow each run's own seed; a config without it keeps its old fingerprint."""
    from harness.config import DataConfig
    from harness.seeding import derive_seed

    task = resolve_task("synthetic")
    first = RunConfig(tasks=("synthetic",), methods=("zeroshot",), data=DataConfig(limit=6), seed=0)
    second = RunConfig(tasks=("synthetic",), methods=("zeroshot",), data=DataConfig(limit=6), seed=1, subset_seed=0)
    assert second.sample_seed == 0 and first.sample_seed == 0
    ids = [[r.sample_id for s in plan_shards([task], 16, 6, c.sample_seed) for r in s.refs] for c in (first, second)]
    assert ids[0] == ids[1]
    assert [r.sample_id for s in plan_shards([task], 16, 6, 1) for r in s.refs] != ids[0]  # seed 1's own subset
    assert derive_seed(first.seed, "synthetic", "x") != derive_seed(second.seed, "synthetic", "x")
    assert "subset_seed" not in json_payload(first) and "attack" not in json_payload(first)


def json_payload(config: RunConfig) -> str:
    """What the fingerprint hashes (fields at their older defaults are left out)."""
    import hashlib
    import json

    from harness.config import NEWER_DEFAULTS

    payload = config.to_dict()
    payload.pop("suite")
    for name, default in NEWER_DEFAULTS.items():
        if payload[name] == default:
            payload.pop(name)
    assert hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16] == config.fingerprint()
    return json.dumps(payload)
