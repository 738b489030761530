"""Method settings as data: --set and TOML files, checked against each method's config dataclass,
in the manifest and the fingerprint; `apm-bench ls methods` prints them from the same dataclasses."""

import dataclasses

import pytest
from typer.testing import CliRunner

import cli
from harness import settings
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.methods import METHODS
from harness.methods.configs import (ApmConfig, CtptConfig, MtaConfig, RlcfConfig, RtptConfig, TpsConfig, TptConfig,
                                      TtlConfig)


@pytest.mark.parametrize(
    ("kind", "field", "raw", "value"),
    [
        (TptConfig, "steps", "3", 3),
        (TptConfig, "lr", "1e-3", 1e-3),
        (ApmConfig, "use_patch", "yes", True),
        (ApmConfig, "hidden", "256, 128", (256, 128)),
        (ApmConfig, "hidden", [64, 32], (64, 32)),  # from TOML
        (CtptConfig, "weight", "none", None),
        (CtptConfig, "weight", "20", 20.0),
        (TpsConfig, "lr", 0.001, 0.001),
    ],
)
def test_values_take_the_type_their_field_declares(kind, field, raw, value):
    assert settings.coerce(kind, field, raw) == value


@pytest.mark.parametrize(
    ("kind", "field", "raw", "message"),
    [
        (TptConfig, "steps", "two", "expects an integer, not 'two'"),
        (TptConfig, "steps", 1.5, "expects an integer"),
        (ApmConfig, "use_patch", "maybe", "expects true or false"),
        (TptConfig, "stpes", "2", "did you mean 'steps'"),
        (TptConfig, "ctx_init", 3, "expects text"),
    ],
)
def test_a_wrong_value_or_field_is_named(kind, field, raw, message):
    with pytest.raises(HarnessError, match=message):
        settings.coerce(kind, field, raw)


def test_every_problem_of_a_set_is_collected_with_its_flag():
    problems: list[str] = []
    out = settings.apply(("tpt", "apm"), {"apm": {"steps": 5}}, {
        "tpt": {"augmix": "maybe"}, "apm": {"lr": "0.5"}, "zero": {"top": "0.2"}, "tptt": {"steps": "1"},
    }, problems)
    assert out["apm"] == ApmConfig(steps=5, lr=0.5)  # the suite's value, then the override
    assert "tpt" not in out
    assert problems == [
        "--set tpt: augmix must be one of auto, on, off, not 'maybe'",
        "--set zero.top: zero is not among the run's methods (tpt, apm)",
        f"--set tptt: unknown method 'tptt'; did you mean 'tpt'? (known: {', '.join(METHODS.names()[:12])}, ...)",
    ]


def test_the_config_holds_the_settings_of_its_methods_only_and_they_change_the_fingerprint():
    config = RunConfig(tasks=("synthetic",), methods=("zeroshot", "tpt"), settings=(("apm", ApmConfig(steps=1)),))
    assert config.settings == (("tpt", TptConfig()),)  # defaults filled in; apm is not in the run
    faster = dataclasses.replace(config, settings=(("tpt", TptConfig(steps=2)),))
    assert faster.fingerprint() != config.fingerprint()
    assert RunConfig.from_dict(faster.to_dict()) == faster
    assert faster.to_dict()["settings"] == {"tpt": dataclasses.asdict(TptConfig(steps=2))}
    assert RunConfig(tasks=("synthetic",), methods=("zeroshot", "apm")).fingerprint() != \
        RunConfig(tasks=("synthetic",), methods=("zeroshot", "apm"), settings=(("apm", ApmConfig(lr=1.0)),)).fingerprint()


def test_every_setting_has_a_docstring_and_a_type_the_command_line_can_give():
    for name, entry in METHODS.items():
        kind = entry.settings_class()
        for field, hint, default, doc in settings.describe(kind) if kind else ():
            assert doc, f"{name}.{field} has no docstring"
            value = getattr(kind(), field)
            shown = "none" if value is None else ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert settings.coerce(kind, field, shown) == value  # what ls prints can be given back with --set


def _captured_run(monkeypatch, tmp_path, *args):
    """Run `apm-bench run ARGS` up to the engine and return the config and execution it would run."""
    seen = {}

    def engine(config, execution, tasks):
        seen.update(config=config, execution=execution)
        raise SystemExit(0)

    monkeypatch.setattr("harness.engine.runner.run", engine)
    done = CliRunner().invoke(cli.app, ["run", *args, "--out-root", str(tmp_path / "results")])
    assert "config" in seen, done.output
    return seen["config"], seen["execution"]


def test_the_command_line_narrows_a_files_methods_and_its_wildcard_wins_over_the_file(monkeypatch, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "synthetic:1"\nmethod = ["tpt", "zero"]\n\n[tpt]\nsteps = 2\nviews = 8\n\n[zero]\ntop = 0.25\n')
    config, _ = _captured_run(monkeypatch, tmp_path, "--config", str(path), "--method", "tpt,tpt",
                              "--set", "*.views=16")
    assert config.methods == ("tpt",)  # a method given twice runs once
    assert config.settings == (("tpt", TptConfig(steps=2, views=16)),)


def test_a_toml_file_holds_the_run_and_the_command_line_wins(monkeypatch, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "synthetic:1"\nmethod = ["zeroshot", "tpt", "zero"]\nlimit = 12\nshard-size = 4\n'
                    'workers = 2\n\n[tpt]\nsteps = 2\nviews = 8\n\n[zero]\ntop = 0.25\n')
    config, execution = _captured_run(monkeypatch, tmp_path, "--config", str(path), "--shard-size", "6",
                                      "--set", "tpt.views=16")
    assert config.tasks == ("synthetic:1",) and config.methods == ("zeroshot", "tpt", "zero")
    assert config.data.limit == 12 and config.shard_size == 6 and execution.workers == 2
    assert config.settings_of("tpt") == TptConfig(steps=2, views=16)  # file, then --set
    assert config.settings_of("zero").top == 0.25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shard_sise = 4\n", "unknown option in"),
        ("limit = 'many'\n", "limit"),
        ("method = 'tpt'\n[tpt]\nsteps = 'two'\n", "run.toml tpt.steps: expects an integer, not 'two'"),
        ("method = 'tpt'\n[tpy]\nsteps = 2\n", "run.toml tpy: unknown method 'tpy'; did you mean 'tpt'?"),
        ("limit = [\n", "not valid TOML"),
    ],
)
def test_a_bad_toml_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    done = CliRunner().invoke(cli.app, ["run", "--task", "synthetic:1", "--config", str(path)])
    assert done.exit_code != 0
    assert message in str(done.exception) + done.output


def test_ls_methods_prints_every_setting_with_its_default_and_source():
    done = CliRunner().invoke(cli.app, ["ls", "methods"])
    assert done.exit_code == 0, done.output
    for name, entry in METHODS.items():
        assert f"  {name} " in done.output and entry.paper.split(";")[0] in done.output
    assert "zero.top = 0.3  (float)" in done.output and "c-tpt.weight = unset  (float | None)" in done.output
    assert "gamma 0.3 since the authors' commit of October 2024" in done.output
    one = CliRunner().invoke(cli.app, ["ls", "methods", "zero"])
    assert one.exit_code == 0 and "zero.top = 0.3" in one.output and "tpt.steps" not in one.output
    typo = CliRunner().invoke(cli.app, ["ls", "methods", "zeroo"])
    assert typo.exit_code != 0 and "did you mean 'zero'" in str(typo.exception)


def test_a_run_made_before_settings_were_data_says_which_version_finishes_it(tmp_path):
    from harness import rundir
    from harness.engine.prepare import resume_config

    old = RunConfig(tasks=("synthetic",), methods=("apm",)).to_dict()
    old.pop("settings")
    old["apm"] = dataclasses.asdict(ApmConfig())
    rundir.write_manifest(tmp_path / "old", {"config": old, "code_version": "c3d9fff"})
    with pytest.raises(HarnessError, match="made by an earlier apm-bench \\(c3d9fff\\).*finish it with that version"):
        resume_config(tmp_path / "old")


def test_the_offline_suites_reward_rlcf_with_their_own_teacher_and_the_paper_suites_with_vit_l():
    from tasks.registry import SUITES

    problems: list[str] = []
    for name in ("smoke", "fashion-mnist-c"):
        chosen = settings.apply(("rlcf",), SUITES.get(name).settings, {}, problems)
        assert chosen["rlcf"].extra_teachers() == ()
    assert settings.apply(("rlcf",), SUITES.get("natural-shift").settings, {}, problems) == {}
    assert RunConfig(tasks=("imagenet",), methods=("rlcf",)).settings_of("rlcf").extra_teachers() == (
        ("ViT-L-14", "openai", None),)
    assert problems == []


def test_a_wildcard_sets_a_field_in_every_method_that_has_it_and_a_methods_own_value_wins():
    problems: list[str] = []
    out = settings.apply(("zeroshot", "tpt", "zero", "apm"), {}, {"*": {"views": "16"}, "zero": {"views": "8"}}, problems)
    assert out["tpt"].views == 16 and out["zero"].views == 8 and "apm" not in out and problems == []
    settings.apply(("zeroshot", "apm"), {}, {"*": {"views": "16"}}, problems)
    assert problems == ["--set *.views: no method of the run (zeroshot, apm) has a setting 'views'"]


def test_the_reward_models_weights_are_pinned_like_the_teachers(siglip_dir, tmp_path):
    import shutil

    from harness.engine.prepare import pin_weights
    from harness.methods.configs import RlcfConfig

    def config(folder):
        return RunConfig(tasks=("synthetic",), methods=("rlcf",),
                         settings=(("rlcf", RlcfConfig(reward_model="apm-tiny", reward_pretrained=str(folder))),))

    pinned = pin_weights(config(siglip_dir))
    digest = pinned.settings_of("rlcf").reward_weights_sha256
    assert len(digest) == 64 and pinned.fingerprint() != config(siglip_dir).fingerprint()
    assert pin_weights(pinned) == pinned  # a resume over the same weights
    other = tmp_path / "other"
    shutil.copytree(siglip_dir, other)
    weights = other / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")
    moved = dataclasses.replace(pinned, settings=(("rlcf", dataclasses.replace(
        pinned.settings_of("rlcf"), reward_pretrained=str(other))),))
    with pytest.raises(HarnessError, match="rlcf: the weights of rlcf's teacher .* changed since this run started"):
        pin_weights(moved)


def test_a_run_id_reused_with_other_settings_names_the_settings_that_differ():
    import json

    from harness.engine.runner import config_differences

    then = json.loads(json.dumps(RunConfig(tasks=("synthetic",), methods=("tpt",)).to_dict()))  # as the manifest holds it
    now = RunConfig(tasks=("synthetic",), methods=("tpt",), settings=(("tpt", TptConfig(steps=2)),)).to_dict()
    assert config_differences(then, now) == ["settings.tpt.steps (1 there, 2 now)"]
    assert config_differences(then, json.loads(json.dumps(then))) == []


@pytest.mark.parametrize(
    ("kind", "values", "message"),
    [
        (TptConfig, {"views": 1_000_000}, "views must be at most 2048, not 1000000 (a sample's views are made at once: "
                                          "1000000 of a 224 px teacher are 602 GB of pixels"),
        (ApmConfig, {"hidden": (4096, 1_000_000)}, "hidden must be at most 65536, not 1000000 (a layer 1000000 wide"),
        (ApmConfig, {"image_size": 100_000}, "image_size must be at most 8192, not 100000 (a 100000 px image is 120 GB"),
        (ApmConfig, {"batch_size": 5000}, "batch_size must be at most 1024, not 5000"),
        (ApmConfig, {"patch_size": 500}, "patch_size must be at most 448, not 500"),
        (TtlConfig, {"rank": 4096}, "rank must be at most 2048, not 4096"),
        (MtaConfig, {"inner_steps": 1000}, "inner_steps must be at most 250, not 1000"),
        (MtaConfig, {"neighbours": 2.0}, "neighbours must lie in [0, 1], not 2"),
        (RtptConfig, {"neighbours": 5000}, "neighbours must be at most 2048, not 5000"),
        (RlcfConfig, {"steps": 10**6}, "steps must be at most 20000, not 1000000"),
    ],
)
def test_an_absurd_size_is_refused_up_front_naming_the_field_and_its_bound(kind, values, message):
    with pytest.raises(HarnessError) as info:
        kind(**values)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_size_bounds_leave_ten_times_every_authors_value():
    ApmConfig(steps=12_000, copies=80, hidden=(40_960, 20_480, 10_240), image_size=4480, heads=80, chunk_size=10_240)
    TptConfig(views=640, steps=30)
    RtptConfig(neighbours=200)
    MtaConfig(outer_steps=50, inner_steps=50)
    TtlConfig(blocks=30, rank=160)
    RlcfConfig(sample_k=30, steps=30)


def test_a_set_beyond_a_bound_stops_the_run_with_one_line(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("apm-bench") or str(Path(sys.executable).parent / "apm-bench")
    done = subprocess.run([exe, "run", "--suite", "smoke", "--method", "tpt", "--set", "tpt.views=1000000", "--no-progress"],
                          cwd=tmp_path, env=os.environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: --set tpt: views must be at most 2048, not 1000000 (a sample's views are "
                                        "made at once: 1000000 of a 224 px teacher are 602 GB of pixels, and the next "
                                        "samples' are made ahead)"]


SMALL = {"image_size": 64, "patch_size": 8, "hidden": (256, 256, 128), "steps": 20, "lr": 1e-3}


def test_a_preset_is_expanded_into_its_fields_and_a_field_given_beside_it_or_later_wins():
    problems: list[str] = []
    alone = settings.resolve(("apm",), {}, {}, "--config run.toml", [("apm", "preset", "cpu-small")], problems)
    assert {k: getattr(alone["apm"], k) for k in SMALL} == SMALL
    beside = settings.resolve(("apm",), {}, {}, "--config run.toml",
                              [("apm", "steps", "5"), ("apm", "preset", "cpu-small")], problems)
    assert beside["apm"].steps == 5 and beside["apm"].image_size == 64
    in_file = settings.resolve(("apm",), {}, {"apm": {"preset": "cpu-small", "steps": 7}}, "--config run.toml", [], problems)
    assert in_file["apm"].steps == 7 and in_file["apm"].patch_size == 8
    command_line = settings.resolve(("apm",), {}, {"apm": {"steps": 7}}, "--config run.toml",
                                    [("apm", "preset", "cpu-small")], problems)
    assert command_line["apm"].steps == 20  # the command line's preset wins over the file's field
    assert problems == []


def test_the_fingerprint_sees_a_presets_values_never_its_name():
    problems: list[str] = []
    named = settings.resolve(("apm",), {}, {}, "f", [("apm", "preset", "cpu-small")], problems)
    by_name = RunConfig(tasks=("synthetic",), methods=("apm",), settings=tuple(named.items()))
    by_values = RunConfig(tasks=("synthetic",), methods=("apm",), settings=(("apm", ApmConfig(**SMALL)),))
    assert by_name.fingerprint() == by_values.fingerprint() and "preset" not in by_name.to_dict()["settings"]["apm"]


def test_the_suites_small_apm_is_the_preset():
    from harness.presets import preset_fields
    from tasks.registry import SUITES

    assert preset_fields("apm", "cpu-small") == SMALL
    for name in ("smoke", "fashion-mnist-c"):
        assert SUITES.get(name).settings["apm"] == SMALL


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (("apm", "preset", "cpu-smal"), "--set apm.preset: unknown APM preset (apm.preset) 'cpu-smal'; did you mean "
                                        "'cpu-small'? (known: cpu-small)"),
        (("tpt", "preset", "cpu-small"), "--set tpt.preset: tpt has no presets (methods with presets: apm)"),
        (("*", "view", "16"), "--set *.view: no method of the run (apm, tpt) has a setting 'view'; did you mean '*.views'?"),
    ],
)
def test_a_wrong_preset_or_wildcard_field_is_one_line_with_the_closest_name(assignment, message):
    problems: list[str] = []
    settings.resolve(("apm", "tpt"), {}, {}, "f", [assignment], problems)
    assert problems == [message]


def test_the_preset_reaches_a_run_from_the_command_line_and_a_toml_file(tmp_path):
    (tmp_path / "run.toml").write_text('task = ["synthetic:1"]\nmethod = ["apm"]\n\n[apm]\npreset = "cpu-small"\n')
    for args in (["--task", "synthetic:1", "--method", "apm", "--set", "apm.preset=cpu-small"],
                 ["--config", str(tmp_path / "run.toml")]):
        done = CliRunner().invoke(cli.app, ["plan", *args, "--out-root", str(tmp_path / "results")])
        assert done.exit_code == 0, done.output
        apm = next(line for line in done.stdout.splitlines() if line.startswith("| apm"))
        assert float(apm.split("|")[4]) < 2  # GFLOPs/sample: 64 px and 20 steps (about 1), not the paper's 1,672
