"""Every method on a SigLIP-shaped teacher (sigmoid-trained, with a logit bias, a custom text tower
and squash resizing): rows without errors, and the prompt learner reproduces the tower exactly."""

import dataclasses

import torch

from harness.config import DataConfig, RunConfig, TeacherConfig
from harness.engine.shards import plan_shards
from harness.engine.stream_parts import part, plan_streams
from harness.engine.worker import RunIdentity, ShardWorker
from harness.methods import METHODS
from harness.methods.configs import ApmConfig
from harness.methods.prompt import PromptLearner
from harness.models.teacher import load_teacher
from tasks.synthetic import SyntheticTask

TASK = SyntheticTask(per_class=1, name="synthetic:1")


def test_the_teacher_is_siglip_shaped_and_the_prompt_learner_matches_its_text_tower(siglip_dir):
    teacher = load_teacher(TeacherConfig(pretrained=str(siglip_dir)))
    model = teacher.model
    assert type(model).__name__ == "CustomTextCLIP" and float(model.logit_bias) == -10.0
    assert model.text.attn_mask is None and model.text.pool_type == "last" and teacher.input_size == 224
    from harness.methods.ttl import lora_sites

    assert {s.param for s in lora_sites(model.visual, 3)} == {f"trunk.blocks.{i}.attn.qkv.weight" for i in (9, 10, 11)}
    learner = PromptLearner(teacher, TASK.classnames, "a photo of a")
    plain = model.encode_text(teacher.tokenizer([f"a photo of a {c}." for c in TASK.classnames]), normalize=True)
    with torch.no_grad():
        torch.testing.assert_close(learner(), plain, rtol=1e-5, atol=1e-5)


def test_a_tokenizer_without_a_start_token_puts_the_context_first(siglip_dir):
    """SigLIP's own (SentencePiece) tokenizers add no start-of-text token: the context then starts at
    position 0, found from the tokens themselves."""
    teacher = load_teacher(TeacherConfig(pretrained=str(siglip_dir)))
    clip = teacher.tokenizer

    def no_start(texts):
        tokens = clip(texts)
        return torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])], dim=1)

    learner = PromptLearner(dataclasses.replace(teacher, tokenizer=no_start), TASK.classnames, "a photo of a")
    assert (learner.start, learner.n_ctx) == (0, 4)
    plain = teacher.model.encode_text(no_start([f"a photo of a {c}." for c in TASK.classnames]), normalize=True)
    with torch.no_grad():
        torch.testing.assert_close(learner(), plain, rtol=1e-5, atol=1e-5)


def test_every_method_runs_on_a_siglip_teacher(siglip_dir):
    methods = tuple(METHODS.names())
    small = {}
    for name in methods:  # few views, so that a CPU runs them in seconds
        kind = METHODS.get(name).settings_class()
        if kind is not None and "views" in {f.name for f in dataclasses.fields(kind)}:
            small[name] = kind(views=10)
    small["rlcf"] = dataclasses.replace(small["rlcf"], reward_model="teacher")
    small["apm"] = ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=2, lr=1e-3)
    config = RunConfig(tasks=(TASK.name,), methods=methods, teacher=TeacherConfig(pretrained=str(siglip_dir)),
                       settings=tuple(small.items()))
    worker = ShardWorker(config, {TASK.name: TASK}, RunIdentity("r", "f", "c"))
    rows = worker.process(plan_shards([TASK], 2)[0]).to_pylist()
    stream = plan_streams(dataclasses.replace(config, data=DataConfig(limit=2)), [TASK])[0]  # the online methods
    rows += worker.process(part(config, stream, 0, None, 3600.0)).table.to_pylist()
    by_method = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    assert sorted(by_method) == sorted(methods)
    for name, got in by_method.items():
        assert len(got) == 2 and all(r["error"] is None and r["prediction"] is not None for r in got), name
        assert all(r["flops"] > 0 and r["seconds"] > 0 for r in got), name
    zeroshot = [r["prediction"] for r in by_method["zeroshot"]]
    for name in ("tpt", "c-tpt", "r-tpt", "zero", "mta"):  # their untuned start is the zero-shot prompt
        assert [r["prediction_before"] for r in by_method[name]] == zeroshot, name
