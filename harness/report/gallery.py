"""The samples behind the numbers: for each method, a few samples on which it changed zero-shot's
prediction, the ones it fixed and the ones it broke, as small JPEG thumbnails with their class names.

Which samples: read from the runs' rows (zero-shot's prediction is the `zeroshot` row of the same
sample and teacher, else the method's own `prediction_before`); the query engine tallies and picks,
so a run of millions of rows costs two passes over four columns and returns a few dozen lines. The
picks are spread over tasks (one per task before a second from any) in an order fixed by a hash of the
sample id, so the same run always shows the same samples.

The pixels: from the data on disk, through the task as the run resolved it (its manifest's task specs,
data settings and data root). Where the data is not there any more, that task's samples are skipped
and a note says why; the report never fails for want of a picture."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import duckdb
from PIL import Image

from harness import resultfiles, rundir
from harness.errors import HarnessError
from harness.report.inputs import RunRead
from harness.report.rowset import literal_path
from harness.report.tables import BASELINE, METHOD_ORDER
from tasks.base import SampleRef, Task

PER_KIND = 8
"""Thumbnails per method and kind (fixed, broke): the page stays a few hundred kB per method at most."""
THUMB = 96
"""Pixels of a thumbnail's longer side (smaller images are kept as they are and scaled by the page)."""
JPEG_QUALITY = 85
COLUMNS = ("run_id", "task", "sample_id", "label", "method", "model", "pretrained", "prediction",
           "prediction_before", "error", "filename")

CHANGED = """
WITH r AS (SELECT CASE WHEN $side THEN run_id ELSE '' END AS run, filename, task, sample_id, label, method, model,
                  pretrained, prediction, prediction_before
           FROM g WHERE error IS NULL AND prediction IS NOT NULL),
z AS (SELECT run, task, sample_id, model, pretrained, any_value(prediction) AS zp FROM r WHERE method = $base
      GROUP BY ALL),
c AS (SELECT r.*, coalesce(z.zp, r.prediction_before) AS before FROM r
      LEFT JOIN z USING (run, task, sample_id, model, pretrained) WHERE r.method <> $base)
"""
"""Every non-baseline row with zero-shot's prediction of the same sample beside it (null: none known)."""
TALLY_SQL = CHANGED + """
SELECT run, method, model, pretrained, count(*) AS n, count(before) AS compared,
       count(*) FILTER (WHERE prediction <> before) AS changed,
       count(*) FILTER (WHERE prediction = label AND before <> label) AS fixed,
       count(*) FILTER (WHERE prediction <> label AND before = label) AS broke
FROM c GROUP BY ALL
"""
PICK_SQL = CHANGED + """,
k AS (SELECT *, CASE WHEN prediction = label THEN 'fixed' ELSE 'broke' END AS kind FROM c
      WHERE (prediction = label) <> (before = label)),
ranked AS (SELECT *, row_number() OVER (PARTITION BY run, method, model, pretrained, kind, task
                                        ORDER BY md5(sample_id), sample_id) AS turn FROM k)
SELECT run, filename, method, model, pretrained, kind, task, sample_id, label, before, prediction FROM ranked
QUALIFY row_number() OVER (PARTITION BY run, method, model, pretrained, kind ORDER BY turn, md5(task), task)
        <= $per_kind
ORDER BY run, method, model, pretrained, kind, turn, md5(task), task
"""


@dataclass(frozen=True)
class Thumb:
    kind: str
    """fixed (zero-shot wrong, the method right) or broke (the other way round)."""
    task: str
    sample_id: str
    truth: str
    before: str
    """Zero-shot's class."""
    after: str
    """The method's class."""
    jpeg: bytes


@dataclass(frozen=True)
class MethodChanges:
    run: str
    """The run id where runs are side by side, else ""."""
    method: str
    model: str
    pretrained: str
    compared: int
    """Scored samples with a zero-shot prediction to compare with."""
    changed: int
    fixed: int
    broke: int
    thumbs: tuple[Thumb, ...]


@dataclass(frozen=True)
class Gallery:
    methods: tuple[MethodChanges, ...]
    notes: tuple[str, ...]


def _view(runs: tuple[RunRead, ...]) -> tuple[duckdb.DuckDBPyConnection, dict[str, Path]]:
    """The runs' result files as view `g` (columns a file lacks read as null), and each file's run
    folder: a row's images are found through the manifest of the run that holds it, whatever run id
    it carries."""
    files, folders = [], {}
    for run in runs:
        manifest = rundir.read_manifest(run.run_dir)
        for path in resultfiles.verify(run.run_dir, manifest.get("fingerprint"), content=False).files:
            files.append(literal_path(str(path)))
            folders[str(path)] = run.run_dir
    connection = duckdb.connect()
    relation = connection.read_parquet(files, union_by_name=True, filename=True)
    present = set(relation.columns)
    relation.create_view("g_files")
    columns = ", ".join(c if c in present else f"NULL AS {c}" for c in COLUMNS)
    connection.execute(f"CREATE VIEW g AS SELECT {columns} FROM g_files")
    return connection, folders


class TaskImages:
    """The tasks of the runs, resolved on first use from each run's manifest, with their sample
    references by id; a task that cannot be resolved (its data gone, say) is remembered with why."""

    def __init__(self) -> None:
        self.resolved: dict[tuple[Path, str], tuple[Task, dict[str, SampleRef]] | str] = {}

    def get(self, run_dir: Path, task: str) -> tuple[Task, dict[str, SampleRef]] | str:
        key = (run_dir, task)
        if key not in self.resolved:
            try:
                self.resolved[key] = self._resolve(run_dir, task)
            except Exception as exc:  # noqa: BLE001 - any failure to find data skips the task, with its reason
                self.resolved[key] = f"{task}: {_reason(exc)}"
        return self.resolved[key]

    def _resolve(self, run_dir: Path, name: str) -> tuple[Task, dict[str, SampleRef]]:
        from harness.config import DataConfig
        from tasks.registry import resolve_task

        manifest = rundir.read_manifest(run_dir)
        config, execution = manifest.get("config") or {}, manifest.get("execution") or {}
        fields = {k: v for k, v in (config.get("data") or {}).items() if k in DataConfig.__dataclass_fields__}
        data, root, splits = DataConfig(**fields), execution.get("data_root"), execution.get("splits_dir")
        family = name.split("/")[0]
        specs = sorted(config.get("tasks") or (), key=lambda s: (s != name, s.split(":")[0].split("/")[0] != family))
        problem: Exception | None = None
        for spec in specs:  # the spec that is the name, then those of its family: usually the first resolves
            try:
                task = resolve_task(spec, data, root, splits)
            except HarnessError as exc:  # another task's data missing must not hide this one's
                problem = problem or exc
                continue
            if task.name == name:
                return task, {ref.sample_id: ref for ref in task.samples()}
        raise problem or LookupError(f"no task spec of run {run_dir} makes a task named {name}")


def _reason(exc: Exception) -> str:
    """The first line of why; the exception's type too where it is not one of the harness's own."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return first if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {first}"


def thumbnail(image: Image.Image) -> bytes:
    image = image.convert("RGB")
    image.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _class(names: tuple[str, ...], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"class {index}"


def build_gallery(runs: tuple[RunRead, ...], side_by_side: bool, per_kind: int = PER_KIND) -> Gallery:
    """The changed samples of every method of `runs` (pooled unless `side_by_side`), with thumbnails."""
    if not runs:
        return Gallery((), ("No run directory given: the gallery reads its samples from the runs.",))
    connection, folders = _view(runs)
    params = {"side": side_by_side, "base": BASELINE}
    tallies = connection.execute(TALLY_SQL, params).df()
    picks = connection.execute(PICK_SQL, {**params, "per_kind": per_kind}).df()
    images = TaskImages()
    skipped: dict[str, str] = {}
    failed: list[str] = []
    chosen: dict[tuple, list[Thumb]] = {}
    for p in picks.itertuples():
        found = images.get(folders[p.filename], p.task)
        if isinstance(found, str):
            skipped.setdefault(p.task, found)
            continue
        task, refs = found
        ref = refs.get(p.sample_id)
        try:
            if ref is None:
                raise LookupError("not among the task's samples any more")
            jpeg = thumbnail(task.load(ref).image)
        except Exception as exc:  # noqa: BLE001 - one unreadable image is skipped, not the report
            failed.append(f"{p.task} {p.sample_id}: {_reason(exc)}")
            continue
        names = task.classnames
        chosen.setdefault((p.run, p.method, p.model, p.pretrained), []).append(Thumb(
            p.kind, p.task, p.sample_id, _class(names, int(p.label)), _class(names, int(p.before)),
            _class(names, int(p.prediction)), jpeg))
    methods = tuple(
        MethodChanges(t.run, t.method, t.model, t.pretrained, int(t.compared), int(t.changed), int(t.fixed),
                      int(t.broke), tuple(chosen.get((t.run, t.method, t.model, t.pretrained), ())))
        for t in tallies.itertuples())
    notes = [f"Thumbnails of task {why} (skipped: its images are not readable here)" for why in skipped.values()]
    if failed:
        notes.append(f"{len(failed)} sample(s) could not be loaded and are not shown: {'; '.join(failed[:5])}"
                     + (" ..." if len(failed) > 5 else ""))
    return Gallery(tuple(sorted(methods, key=_rank)), tuple(notes))


def _rank(m: MethodChanges) -> tuple:
    """Teacher, then the paper's method order (as the tables), then other methods by name, then run."""
    known = METHOD_ORDER.index(m.method) if m.method in METHOD_ORDER else len(METHOD_ORDER)
    return (m.model, m.pretrained, known, m.method, m.run)
