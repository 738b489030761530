"""TPT on the tiny teacher: views, one entropy step, reset, per-sample determinism."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from harness.config import RunConfig
from harness.methods.configs import TptConfig
from harness.errors import HarnessError
from harness.methods.episodic import confident_views, normalisation
from harness.methods.prompt import PromptLearner, average_entropy, tune
from harness.methods.tpt import TptMethod
from harness.methods.tpt_views import make_augmented_views
from tasks.synthetic import SyntheticTask

TASK = SyntheticTask(per_class=1)
CFG = TptConfig()


def _image(i: int = 4):
    return TASK.load(TASK.samples()[i]).image


def _features(teacher, seed: int = 0, views: int = 64):
    """TPT's views of one image as the method makes them: the centre crop, then views-1 seeded crops."""
    image = _image()
    mean, std = normalisation(teacher.preprocess)
    augmented = make_augmented_views(image, views - 1, teacher.input_size, mean, std, seed, augmix=False)
    return F.normalize(teacher.encode_images(torch.cat([teacher.preprocess(image)[None], augmented])), dim=-1)


def test_augmix_is_on_for_fine_grained_sets_only():
    class Named:
        def __init__(self, name):
            self.name = name

    tpt = TptMethod(CFG)
    assert tpt.uses_augmix(Named("dtd")) and tpt.uses_augmix(Named("oxford-pets:/data/pets"))
    assert not tpt.uses_augmix(Named("imagenet-a")) and not tpt.uses_augmix(Named("synthetic"))
    assert TptMethod(dataclasses.replace(CFG, augmix="on")).uses_augmix(Named("imagenet"))
    with pytest.raises(HarnessError, match="augmix must be one of auto, on, off, not 'maybe'"):
        dataclasses.replace(CFG, augmix="maybe")


def test_context_starts_as_a_photo_of_a_and_prompts_match_the_plain_text_encoder(teacher):
    learner = PromptLearner(teacher, TASK.classnames, "a photo of a")
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, 64)
    plain = teacher.model.encode_text(teacher.tokenizer([f"a photo of a {c}." for c in TASK.classnames]), normalize=True)
    with torch.no_grad():
        torch.testing.assert_close(learner(), plain, rtol=1e-5, atol=1e-5)


def test_one_step_lowers_the_selected_views_average_entropy(teacher):
    learner = PromptLearner(teacher, TASK.classnames, "a photo of a")
    features = _features(teacher)
    with torch.no_grad():
        logits = teacher.logit_scale * features @ learner().T
        chosen = confident_views(logits, 0.1)
        before = average_entropy(logits[chosen])
    assert len(chosen) == 6  # int(64 * 0.1)
    losses, selected = tune(learner, features, teacher, CFG.steps, CFG.lr, CFG.weight_decay, CFG.top)
    with torch.no_grad():
        after = average_entropy(teacher.logit_scale * features[chosen] @ learner().T)
    assert torch.equal(selected, chosen)
    assert losses == pytest.approx([before.item()], rel=1e-5)
    assert after < before


def _replay(learner, features, teacher, cfg, reselect: bool) -> tuple[list[float], list[list[int]]]:
    """TPT's loop written out from its definition: choose the confident views once (or, wrongly, at
    every step), entropy of their mean prediction, one AdamW step each."""
    learner.reset()
    optimizer = torch.optim.AdamW([learner.ctx], lr=cfg.lr, weight_decay=cfg.weight_decay)
    chosen, losses, picks = None, [], []
    for _ in range(cfg.steps):
        logits = teacher.logit_scale * features @ learner().T
        if chosen is None or reselect:
            chosen = confident_views(logits, cfg.top)
        picks.append(sorted(chosen.tolist()))
        loss = average_entropy(logits[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, picks


def test_several_steps_keep_the_views_chosen_at_the_first_forward(teacher):
    cfg = dataclasses.replace(CFG, steps=5, lr=0.5)  # big steps, so the most confident views change
    learner = PromptLearner(teacher, TASK.classnames, "a photo of a")
    features = _features(teacher, seed=1)
    kept, kept_picks = _replay(learner, features, teacher, cfg, reselect=False)
    moving, moving_picks = _replay(learner, features, teacher, cfg, reselect=True)
    assert len({tuple(p) for p in moving_picks}) > 1  # re-selecting would have picked other views
    learner.reset()
    losses, selected = tune(learner, features, teacher, cfg.steps, cfg.lr, cfg.weight_decay, cfg.top)
    assert sorted(selected.tolist()) == kept_picks[0]
    assert losses == pytest.approx(kept, rel=1e-4)
    assert losses != pytest.approx(moving, rel=1e-4)


def test_reset_restores_the_prompt_exactly_and_results_do_not_depend_on_order(teacher):
    from harness.methods.base import SampleInput

    method = TptMethod(dataclasses.replace(CFG, steps=3))
    refs = TASK.samples()

    def sample(i):
        img = TASK.load(refs[i])
        emb = teacher.encode_images(teacher.preprocess(img.image)[None])[0]
        return SampleInput(refs[i], img.image, img.content_hash, 100 + i, emb, 0.0)

    b_alone = method.evaluate(teacher, TASK, [sample(7)])[0]
    learner = method.learner(teacher, TASK)
    initial = learner.ctx_init.clone()
    a = method.evaluate(teacher, TASK, [sample(2)])[0]
    assert a.losses[-1] < a.losses[0]  # tuning moved the context ...
    assert torch.equal(learner.ctx, initial)  # ... and the sample left nothing behind
    b_after = method.evaluate(teacher, TASK, [sample(7)])[0]
    assert (b_alone.prediction, b_alone.losses, b_alone.top5) == (b_after.prediction, b_after.losses, b_after.top5)
    assert b_alone.steps == 3 and b_alone.prediction_before is not None


def test_rows_through_a_worker(teacher):
    from harness.engine.shards import plan_shards
    from harness.engine.worker import RunIdentity, ShardWorker

    config = RunConfig(tasks=("synthetic:1",), methods=("zeroshot", "tpt"))
    task = SyntheticTask(per_class=1, name="synthetic:1")
    rows = ShardWorker(config, {task.name: task}, RunIdentity("r", "f", "c")).process(plan_shards([task], 4)[0])
    tpt = [r for r in rows.to_pylist() if r["method"] == "tpt"]
    zeroshot = [r for r in rows.to_pylist() if r["method"] == "zeroshot"]
    assert len(tpt) == 4 and all(r["ttt_steps"] == 1 and len(r["losses"]) == 1 and r["error"] is None for r in tpt)
    # before tuning, the prompt is "a photo of a {}." on view 0: TPT's starting point is the zero-shot row
    assert [r["prediction_before"] for r in tpt] == [r["prediction"] for r in zeroshot]
