"""A run touches nothing that is not its own: run ids are names, a failed run removes only a directory
it created (proven by identity), result folders never lead outside the run, reads never expand a
pattern, and every malformed run directory is one line. A folder of someone's files (`precious`) must
come through every case unchanged."""

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cli
from harness import resultfiles, rundir
from harness.config import ExecConfig, RunConfig
from harness.engine import runner
from harness.engine.shards import plan_shards
from harness.errors import HarnessError, StorageError
from harness.report.inputs import read_report_input
from harness.store import rows_to_table
from tasks.registry import resolve_task
from test_report_tables import make_row

CONFIG = RunConfig(tasks=("synthetic:1",), methods=("zeroshot",), shard_size=4)


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root`: a file's sha256, a link's target, or `dir`."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[key] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[key] = "dir"
        else:
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def precious(tmp_path):
    """Someone's folder: a thesis, notes in a sub-folder, and a Parquet file of their own."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "thesis.tex").write_text("precious\n")
    (victim / "sub" / "notes.txt").write_text("notes\n")
    pq.write_table(pa.table({"x": [1, 2]}), victim / "sub" / "data.parquet")
    before = tree(victim)
    yield victim
    assert tree(victim) == before, "a folder that is not the run's was changed"


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The console entry point in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["apm-bench", *args])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, *wanted: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in wanted:
        assert text in lines[0], err


# --- 1 and 2: a run id is a name; a failed run removes only what it created -------------------------

def test_the_reported_case_leaves_the_folder_alone(tmp_path, precious, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "run", "--task", "synthetic:1", "--method", "zeroshot", "--model",
                           "apm-mini", "--pretrained", "not-a-checkpoint.pt", "--out-root", "nonexist",
                           "--run-id", "../victim")
    assert code == 2 and "a run id is one folder name" in err and "Traceback" not in err


@pytest.mark.parametrize("run_id", ["..", ".", "../victim", "../../x", "/abs/path", "a/b", "-x", ".hidden", "a b",
                                    "x" * 300])
def test_a_run_id_that_is_not_a_safe_name_is_one_line(tmp_path, precious, monkeypatch, capsys, run_id):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "run", "--suite", "smoke", "--out-root", "results", "--run-id", run_id)
    one_error(code, err, "--run-id", "a run id is one folder name")
    assert len(err) < 400 and not (tmp_path / "results").exists()


def test_a_run_id_in_a_config_file_is_checked_alike(tmp_path, precious, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text('suite = "smoke"\nrun-id = "../victim"\n')
    code, _, err = run_cli(monkeypatch, capsys, "run", "--config", "run.toml")
    one_error(code, err, "'../victim'", "a run id is one folder name")


def test_the_engine_refuses_a_path_as_run_id(tmp_path, precious):
    with pytest.raises(HarnessError, match="a run id is one folder name"):
        runner.run(CONFIG, ExecConfig(out_root=str(tmp_path / "out"), run_id="../victim", device="cpu"))


def test_release_removes_only_a_directory_this_process_made(tmp_path, precious):
    claim = rundir.claim_new(tmp_path / "run")
    assert rundir.claim_new(tmp_path / "run") is None and rundir.claim_new(precious) is None  # taken: never ours
    rundir.write_manifest(claim.path, {"run_id": "run"})
    resultfiles.write_shard(claim.path, "t-00000", rows_to_table([make_row("t", "zeroshot", 0, True)]), "f")
    (claim.path / rundir.SHARDS / ".t.0123.tmp").write_bytes(b"half")
    (claim.path / rundir.SHARDS / "link.parquet").symlink_to(precious / "sub" / "data.parquet")
    assert rundir.release(claim) and not claim.path.exists()


def test_release_keeps_what_others_put_in_the_run_directory(tmp_path, precious):
    claim = rundir.claim_new(tmp_path / "run")
    rundir.write_manifest(claim.path, {"run_id": "run"})
    (claim.path / "mine.txt").write_text("a user's note")
    assert not rundir.release(claim)
    assert sorted(p.name for p in claim.path.iterdir()) == ["mine.txt"]  # the run's own files went, not the note


def test_release_never_follows_a_directory_swapped_for_a_link_or_a_new_folder(tmp_path, precious):
    claim = rundir.claim_new(tmp_path / "run")
    claim.path.rename(tmp_path / "moved")
    claim.path.symlink_to(precious)  # the run's path now leads to someone's folder
    assert not rundir.release(claim) and claim.path.is_symlink()
    claim.path.unlink()
    claim.path.mkdir()  # a new folder at the same path (it may even get the same inode): no token in it
    (claim.path / rundir.MANIFEST).write_text("{}")
    assert not rundir.release(claim) and (claim.path / rundir.MANIFEST).exists()


@contextlib.contextmanager
def failing_dispatch(monkeypatch, error: BaseException):
    """Runs fail after the run directory is opened, before any shard is written (no Ray started)."""
    monkeypatch.setattr(runner, "ray_session", lambda execution: contextlib.nullcontext())

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(runner, "_dispatch", fail)
    yield


def _run(root: Path, run_id: str | None):
    return runner.run(CONFIG, ExecConfig(out_root=str(root), run_id=run_id, device="cpu", progress=False))


@pytest.mark.parametrize("error", [RuntimeError("a worker was lost"), KeyboardInterrupt()])
def test_a_failed_new_run_removes_its_own_directory_only(tmp_path, precious, monkeypatch, error):
    (tmp_path / "out" / "empty").mkdir(parents=True)  # made by someone else: used, never removed
    with failing_dispatch(monkeypatch, error):
        for run_id in ("new", "empty", None):
            with pytest.raises((RuntimeError, HarnessError)):
                _run(tmp_path / "out", run_id)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["empty"]


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path, precious, monkeypatch):
    with failing_dispatch(monkeypatch, RuntimeError("never reached")):
        with pytest.raises(HarnessError, match="exists and is not a run directory"):
            _run(tmp_path, "victim")


def test_a_failed_resume_keeps_the_run(tmp_path, monkeypatch):
    run_dir = tmp_path / "out" / "kept"
    with failing_dispatch(monkeypatch, RuntimeError("first")):
        with pytest.raises(RuntimeError):
            _run(tmp_path / "out", "kept")
        assert not run_dir.exists()
        run_dir.mkdir()  # the same run, started again in a folder a user made
        with pytest.raises(RuntimeError):
            _run(tmp_path / "out", "kept")
        with pytest.raises(RuntimeError):  # resumed: the run is not this process's to remove
            _run(tmp_path / "out", "kept")
    assert (run_dir / rundir.MANIFEST).is_file()


# --- 3: reads only of the run's own files -------------------------------------------------------------

def _fake_run(root: Path, name: str, task: str, n: int) -> Path:
    run_dir = root / name
    rundir.write_manifest(run_dir, {"run_id": name, "fingerprint": "f", "started": "2026-01-01T00:00:00"})
    resultfiles.write_shard(run_dir, "t-00000", rows_to_table([make_row(task, "zeroshot", i, True) for i in range(n)]), "f")
    return run_dir


@pytest.mark.parametrize("pattern", ["o[12]", "o?", "o*"])
def test_a_report_reads_its_own_files_whatever_characters_their_path_holds(tmp_path, pattern):
    mine = _fake_run(tmp_path / pattern, "run", "mine", 3)
    _fake_run(tmp_path / "o1", "run", "theirs", 5)
    read = read_report_input([mine], tmp_path)
    assert read.rows.count() == 3 and set(read.rows.query("SELECT DISTINCT task FROM rows")["task"]) == {"mine"}
    assert list(resultfiles.read_rows([mine])["task"].unique()) == ["mine"]


def test_an_image_folder_whose_path_holds_pattern_characters_is_read_as_named(tmp_path, image_folder):
    image_folder.rename(tmp_path / "d[12]")
    (tmp_path / "d1" / "one").mkdir(parents=True)
    task = resolve_task(f"imagefolder:{tmp_path / 'd[12]'}")
    assert len(task.samples()) == 9 and task.classnames == ("golden retriever", "tabby", "zebra")


# --- 4: result folders stay inside the run ------------------------------------------------------------

def test_a_run_whose_result_folder_leads_elsewhere_is_refused(tmp_path, precious, monkeypatch, capsys):
    run_dir = _fake_run(tmp_path, "run", "mine", 3)
    (precious / ".x.0123.tmp").write_text("someone's temporary file")
    for kept in (run_dir / rundir.SHARDS).iterdir():
        kept.unlink()
    (run_dir / rundir.SHARDS).rmdir()
    (run_dir / rundir.SHARDS).symlink_to(precious)
    with pytest.raises(HarnessError, match="is a symbolic link"):
        runner.open_run_dir(tmp_path, "run", CONFIG, ExecConfig(), 1)
    for command in (["report", str(run_dir)], ["verify", str(run_dir)], ["run", "--resume", str(run_dir)]):
        code, _, err = run_cli(monkeypatch, capsys, *command)
        one_error(code, err, f"{run_dir / rundir.SHARDS} is a symbolic link")
    (precious / ".x.0123.tmp").unlink()  # the fixture's own check: nothing else changed


# --- 5: shard ids never collide -----------------------------------------------------------------------

def test_tasks_whose_safe_names_agree_get_their_own_shards(tmp_path, image_folder):
    spaced, underscored = image_folder.rename(tmp_path / "a b"), tmp_path / "a_b"
    shutil.copytree(spaced, underscored)
    shards = plan_shards([resolve_task(f"imagefolder:{spaced}"), resolve_task(f"imagefolder:{underscored}")], 4)
    ids = [s.shard_id for s in shards]
    assert len(set(ids)) == len(ids) == 6 and {s.task for s in shards} == {"imagefolder:a b", "imagefolder:a_b"}


def test_a_long_task_name_still_makes_a_file_name(tmp_path, image_folder):
    deep = image_folder.rename(tmp_path / ("class-folder-" * 18))
    [shard] = plan_shards([resolve_task(f"imagefolder:{deep}")], 16)
    assert len(f"{shard.shard_id}.parquet".encode()) < 120


# --- 8: malformed run directories are one line, and one bad run does not hide the others --------------

BAD_MANIFESTS = {"array": "[1, 2, 3]", "config-string": '{"config": "x"}', "teacher-string": '{"config": {"teacher": 3}}',
                 "not-json": "{not json", "not-utf8": b"\xff\xfe{}"}


@pytest.mark.parametrize("kind", BAD_MANIFESTS)
def test_a_manifest_of_the_wrong_shape_is_one_line_and_skipped_among_others(tmp_path, monkeypatch, capsys, kind):
    good = _fake_run(tmp_path / "results", "good", "mine", 3)
    bad = tmp_path / "results" / "zz-bad"
    bad.mkdir()
    content = BAD_MANIFESTS[kind]
    (bad / rundir.MANIFEST).write_bytes(content if isinstance(content, bytes) else content.encode())
    for command in (["report", str(bad)], ["verify", str(bad)], ["run", "--resume", str(bad)]):
        code, _, err = run_cli(monkeypatch, capsys, *command)
        one_error(code, err, str(bad / rundir.MANIFEST))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "runs")
    assert code == 0 and "good" in out and "results/zz-bad: results/zz-bad/manifest.json" in out and "Traceback" not in err
    code, out, err = run_cli(monkeypatch, capsys, "report")
    assert code == 0 and "mine" in out and "Skipped a run that cannot be read: results/zz-bad/manifest.json" in err
    code, out, err = run_cli(monkeypatch, capsys, "plan", "--suite", "smoke")
    assert code == 0 and "samples" in out and "Traceback" not in err
    assert good.exists()


def test_an_empty_manifest_cannot_be_resumed(tmp_path, monkeypatch, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / rundir.MANIFEST).write_text("{}")
    code, _, err = run_cli(monkeypatch, capsys, "run", "--resume", str(tmp_path / "run"))
    one_error(code, err, "names no tasks and methods")


@pytest.mark.parametrize("name", [rundir.MANIFEST, rundir.RECORDS])
def test_a_run_file_that_is_a_folder_is_one_line(tmp_path, monkeypatch, capsys, name):
    run_dir = _fake_run(tmp_path, "run", "mine", 3)
    (run_dir / name).unlink()
    (run_dir / name).mkdir()
    for command in (["report", str(run_dir)], ["verify", str(run_dir)]):
        code, _, err = run_cli(monkeypatch, capsys, *command)
        one_error(code, err, f"{run_dir / name} is not a regular file")


def test_report_and_verify_on_a_file_are_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    for command in ("report", "verify"):
        code, _, err = run_cli(monkeypatch, capsys, command, str(tmp_path / "notes.txt"))
        one_error(code, err, "is a file, not a run directory")


def _wrong_columns(run_dir: Path) -> Path:
    """A result file whose `correct` column is text, recorded as if the run had written it."""
    table = rows_to_table([make_row("mine", "zeroshot", i, True) for i in range(3)])
    table = table.set_column(table.schema.get_field_index("correct"), "correct", pa.array(["yes"] * 3))
    path = run_dir / rundir.SHARDS / "t-00001.parquet"
    pq.write_table(table.replace_schema_metadata({resultfiles.FINGERPRINT_KEY: b"f"}), path)
    resultfiles.record(run_dir, path, ["t-00001"], 3, "f")
    return path


def _link_loop(run_dir: Path) -> Path:
    path = run_dir / rundir.SHARDS / "loop.parquet"
    path.symlink_to(path)
    return path


def _not_utf8_footer(run_dir: Path) -> Path:
    table = rows_to_table([make_row("mine", "zeroshot", 9, True)])
    path = run_dir / rundir.SHARDS / "t-00002.parquet"
    pq.write_table(table.replace_schema_metadata({resultfiles.FINGERPRINT_KEY: b"\xff\xfe"}), path)
    resultfiles.record(run_dir, path, ["t-00002"], 1, "f")
    return path


@pytest.mark.parametrize(("damage", "reason"), [(_wrong_columns, "not this harness's rows (column correct is string"),
                                                (_link_loop, "a symbolic link, not a file this run wrote"),
                                                (_not_utf8_footer, "from another run")])
def test_a_damaged_result_file_is_named_never_a_traceback(tmp_path, monkeypatch, capsys, damage, reason):
    run_dir = _fake_run(tmp_path, "run", "mine", 3)
    path = damage(run_dir)
    verdict = resultfiles.verify(run_dir, "f")
    assert [(p, r.split(")")[0] + ")" if "(" in r else r) for p, r in verdict.bad][0][0] == path
    assert verdict.bad[0][1].startswith(reason)
    code, out, err = run_cli(monkeypatch, capsys, "verify", str(run_dir))
    assert code == 1 and f"{path}: {reason}" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "report", str(run_dir))
    one_error(code, err, f"{path}: {reason}")
    code, out, err = run_cli(monkeypatch, capsys, "report", str(run_dir), "--allow-incomplete")
    assert code == 0 and "mine" in out


def test_a_report_memory_setting_that_is_not_a_size_is_one_line(tmp_path, monkeypatch, capsys):
    run_dir = _fake_run(tmp_path, "run", "mine", 3)
    monkeypatch.setenv("APM_BENCH_REPORT_MEMORY", "lots")
    code, _, err = run_cli(monkeypatch, capsys, "report", str(run_dir))
    one_error(code, err, "APM_BENCH_REPORT_MEMORY='lots' is not a memory size")


@pytest.mark.parametrize(("code", "advice"), [(errno.EACCES, "fix that"), (errno.ENOSPC, "free space")])
def test_a_write_error_says_what_happened(tmp_path, code, advice):
    with pytest.raises(StorageError) as stopped, runner._storage(tmp_path / "run", 4):
        raise OSError(code, os.strerror(code), str(tmp_path / "run" / "shards" / "x.parquet"))
    assert f"{os.strerror(code)}; the 0/4 finished shards are kept; {advice}, then finish" in str(stopped.value)


def test_a_run_of_look_alike_tasks_in_a_patterned_folder_finishes_and_resumes(tmp_path, image_folder, ray_local):
    """The reported case end to end: `a b` and `a_b` once shared one shard file (a false disk error, a
    record listing the shard twice, a resume that never finished); here under a folder named `d[12]`."""
    root = tmp_path / "d[12]"
    root.mkdir()
    spaced = image_folder.rename(root / "a b")
    shutil.copytree(spaced, root / "a_b")
    shutil.copytree(spaced, tmp_path / "d1" / "a b")  # what `d[12]` would also match as a pattern
    config = RunConfig(tasks=(f"imagefolder:{spaced}", f"imagefolder:{root / 'a_b'}"), methods=("zeroshot",),
                       shard_size=4)
    execution = ExecConfig(out_root=str(tmp_path / "out[1]"), run_id="look-alike", workers=1, progress=False)
    first = runner.run(config, execution)
    assert first.shards_done == first.shards_total == 6 and first.rows_written == 18
    again = runner.run(config, execution)
    assert again.rows_written == 0 and again.shards_done == 6
    merged = [s for path, rec in resultfiles.records(first.run_dir).items() if path.startswith("segments/")
              for s in rec.shards]
    assert len(merged) == len(set(merged)) == 6
    read = read_report_input([first.run_dir], tmp_path)
    assert read.rows.count() == 18 and read.runs[0].finished
