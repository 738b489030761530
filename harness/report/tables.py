"""The paper's tables as data: which of our tasks fill which column, under the paper's header, and how
our method and teacher names map onto the paper's row labels. The reporter is generic; adding a table
is adding a `TableSpec`, not code.

Task names are written out here rather than imported from `tasks/`, so that reading a report never
imports open_clip; tests/test_report_tables.py checks them against the task registry."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from harness.registry import Registry

REFERENCE_DIR = Path(__file__).parent / "reference"
"""The paper's own numbers (Tables 1 to 3 as published, one CSV each), shipped as package data."""


@dataclass(frozen=True)
class Column:
    task: str
    """Our task name, as written in the rows' `task` column."""
    header: str
    """The paper's header for it; also the column's name in the reference CSV."""
    short: str = ""
    """A short header for wide layouts (markdown, LaTeX), explained in a legend below the table."""

    @property
    def label(self) -> str:
        return self.short or self.header


@dataclass(frozen=True)
class Summary:
    """A column computed from other columns (never copied from the paper)."""

    key: str
    """Machine name (csv/json) and, with `_stated`, the reference CSV's column of the paper's value."""
    header: str
    tasks: tuple[str, ...]
    """The columns it is the unweighted mean of, as the paper averages datasets, not samples."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    """What `--table` takes."""
    title: str
    columns: tuple[Column, ...]
    summaries: tuple[Summary, ...]
    reference: str | None
    """File name under REFERENCE_DIR; None for a layout the paper does not have (no `[paper]` rows)."""

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(c.task for c in self.columns)

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(c.header for c in self.columns) + tuple(s.header for s in self.summaries)

    @property
    def keys(self) -> tuple[str, ...]:
        return self.tasks + tuple(s.key for s in self.summaries)

    @property
    def short_headers(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.columns) + tuple(s.header for s in self.summaries)

    @property
    def legend(self) -> str:
        """What the short headers stand for ("" when the layout has none)."""
        pairs = [f"{c.short} = {c.task}" for c in self.columns if c.short]
        return f"Columns: {'; '.join(pairs)}." if pairs else ""


def _spec(name: str, title: str, pairs: list[tuple[str, str]], reference: str, ood: bool = False,
          short: dict[str, str] | None = None) -> TableSpec:
    columns = tuple(Column(task, header, (short or {}).get(header, "")) for task, header in pairs)
    tasks = tuple(c.task for c in columns)
    summaries = [Summary("average", "Average", tasks)]
    if ood:  # Table 1: the mean of the four shifted sets, ImageNet itself left out
        summaries.append(Summary("ood_average", "OOD Average", tasks[1:]))
    return TableSpec(name, title, columns, tuple(summaries), reference)


CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_noise", "glass_blur",
    "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "shot_noise", "snow", "zoom_blur",
)
SHORT = {"brightness": "brit", "contrast": "contr", "defocus_blur": "defoc", "elastic_transform": "elast", "fog": "fog",
         "frost": "frost", "gaussian_noise": "gauss", "glass_blur": "glass", "impulse_noise": "impul",
         "jpeg_compression": "jpeg", "motion_blur": "motn", "pixelate": "pixel", "shot_noise": "shot", "snow": "snow",
         "zoom_blur": "zoom"}
"""The corruptions' short headers (ImageNet-C's usual abbreviations), for the two 19-column layouts."""

TABLES: Registry[TableSpec] = Registry("table (--table)")
TABLES.add("natural-shift", _spec(
    "natural-shift", "Table 1: natural distribution shift, top-1 accuracy (%)",
    [("imagenet", "ImageNet"), ("imagenet-a", "ImageNet-A"), ("imagenet-v2", "ImageNet-V2"),
     ("imagenet-r", "ImageNet-R"), ("imagenet-sketch", "ImageNet-Sketch")],
    "apm_neurips2024_table1_natural_shift.csv", ood=True,
))
TABLES.add("imagenet-c", _spec(
    "imagenet-c", "Table 2: ImageNet-C at severity 5, top-1 accuracy (%)",
    [(f"imagenet-c/{c}/5", c) for c in CORRUPTIONS],
    "apm_neurips2024_table2_imagenet_c_sev5.csv", short=SHORT,
))
TABLES.add("fine-grained", _spec(
    "fine-grained", "Table 3: fine-grained classification, top-1 accuracy (%)",
    [("flowers102", "Flowers102"), ("dtd", "DTD"), ("oxford-pets", "OxfordPets"), ("ucf101", "UCF101"),
     ("caltech101", "Caltech101"), ("food101", "Food101"), ("sun397", "SUN397"),
     ("fgvc-aircraft", "FGVCAircraft"), ("eurosat", "EuroSAT")],
    "apm_neurips2024_table3_fine_grained.csv",
))
FASHION_MNIST_C = tuple(f"fashion-mnist-c/{c}/5" for c in CORRUPTIONS)
TABLES.add("fashion-mnist-c", TableSpec(  # the offline shift benchmark (README): Table 2's layout, no paper numbers
    "fashion-mnist-c", "Fashion-MNIST-C: clean, and Table 2's 15 corruptions at severity 5, top-1 accuracy (%)",
    (Column("fashion-mnist", "clean"), *(Column(t, c, SHORT[c]) for t, c in zip(FASHION_MNIST_C, CORRUPTIONS))),
    (Summary("average", "Average (corruptions)", FASHION_MNIST_C),),  # as Table 2: the clean set is not averaged in
    None,
))

METHOD_LABELS = {"zeroshot": "CLIP", "ensemble": "Ensemble", "tpt": "TPT", "c-tpt": "C-TPT", "r-tpt": "R-TPT",
                 "tps": "TPS", "rlcf": "RLCF", "ttl": "TTL", "zero": "ZERO", "mta": "MTA", "apm": "APM"}
"""Our method name -> the label the papers use; other methods keep their own name."""
METHOD_ORDER = ("zeroshot", "ensemble", "tpt", "c-tpt", "r-tpt", "tps", "rlcf", "ttl", "zero", "mta", "apm")
"""Row order within a teacher: the paper's (baselines, TPT, APM) with the other episodic methods
before APM; plugin methods follow in the order they appear."""
PAPER_ALIASES = {"zeroshot": ("CLIP", "OpenCLIP")}
"""Paper labels that stand for the same method: its zero-shot rows say OpenCLIP for LAION teachers."""
BASELINE = "zeroshot"
"""What paired differences are taken against, teacher by teacher."""


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def paper_labels(method: str) -> tuple[str, ...]:
    return PAPER_ALIASES.get(method, (method_label(method),))


def teacher_label(model: str, pretrained: str) -> str:
    """The paper's backbone name: ViT-B/16 means OpenAI's weights; L/14 and H/14 whatever their tag
    (the paper uses OpenAI's L/14 in Table 1 and OpenCLIP's in Table 2). Anything else stays verbatim,
    so a different teacher can never be mistaken for the paper's."""
    if model == "ViT-B-16" and pretrained == "openai":
        return "ViT-B/16"
    if model == "ViT-L-14":
        return "ViT-L/14"
    if model.startswith("ViT-H-14"):
        return "ViT-H/14"
    return f"{model}/{pretrained}"


@dataclass(frozen=True)
class ReferenceRow:
    """One row of the paper's table, as printed."""

    method: str
    teacher: str
    uses_imagenet_train: bool
    values: dict[str, float]
    """Header -> the paper's number, per task column."""
    stated: dict[str, float]
    """Summary key -> the average the paper states (compared with the mean of `values`, never used for it)."""


def load_reference(spec: TableSpec) -> tuple[ReferenceRow, ...]:
    """The paper's rows for `spec`, checked against the spec's headers so a renamed column fails loudly;
    none for a layout of ours the paper does not have."""
    if spec.reference is None:
        return ()
    with open(REFERENCE_DIR / spec.reference, newline="") as fh:
        records = list(csv.DictReader(fh))
    out = []
    for rec in records:
        missing = [c.header for c in spec.columns if c.header not in rec]
        if missing:
            raise ValueError(f"{spec.reference} lacks columns {missing}")
        out.append(ReferenceRow(
            method=rec["method"],
            teacher=rec["backbone"],
            uses_imagenet_train=rec.get("uses_imagenet_train") == "yes",
            values={c.header: float(rec[c.header]) for c in spec.columns},
            stated={s.key: float(rec[f"{s.key}_stated"]) for s in spec.summaries if rec.get(f"{s.key}_stated")},
        ))
    return tuple(out)
