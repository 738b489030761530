"""The trust table's text (harness.report.trust): its two tables, accuracy and calibration, and
out-of-distribution detection, as headers and cell parts every format shares. A column no line has a
number for is left out, with a note saying what would fill it."""

from __future__ import annotations

from harness.report.celltext import Parts
from harness.report.tables import teacher_label
from harness.report.trust import SIGNIFICANCE, Spread, TrustLine, TrustReport
from harness.report.values import Cell

TITLE = "Trust: accuracy, calibration, robustness and out-of-distribution detection (%)"
OOD_TITLE = "Out-of-distribution detection (%)"
ACCURACY_COLUMNS = (
    ("accuracy", "accuracy", "top-1 accuracy, mean over the in-distribution tasks", False),
    ("delta", "vs zero-shot", "mean paired difference against zero-shot (points); interval with tasks as clusters", True),
    ("mcnemar", "McNemar +/-", f"tasks where McNemar's exact test (p < {SIGNIFICANCE}) finds it better / worse, of those paired", False),
    ("ece", "ECE", "expected calibration error of the confidence (20 bins, C-TPT's), mean over tasks; its interval the resamples' spread centred on it; lower is better", False),
    ("robust", "robust accuracy", "top-1 accuracy on attacked images (--attack), mean over tasks", False),
)
OOD_COLUMNS = (
    ("auroc", "AUROC", "area under the ROC curve, in- vs out-of-distribution, maximum-softmax score", False),
    ("fpr95", "FPR95", "out-of-distribution samples kept at 95% of in-distribution kept, maximum-softmax; lower is better", False),
    ("aupr", "AUPR", "average precision, in-distribution positive, maximum-softmax score", False),
    ("auroc_mcm", "AUROC (MCM)", "AUROC of the MCM score (softmax at temperature 1 of cosine-scale logits)", False),
    ("fpr95_mcm", "FPR95 (MCM)", "FPR95 of the MCM score; lower is better", False),
)
NO_CLEAN = ("No clean in-distribution rows: accuracy, ECE and the tests against zero-shot need a run without --attack; "
            "report it beside this one.")
NO_ATTACK = "No attacked rows: robust accuracy needs a run with --attack pgd (report it beside the clean run)."
NO_CONFIDENCE = "No confidences recorded (rows of an older version): no ECE."
NO_OOD = ("No out-of-distribution rows: run a pairing (--ood ID:OOD, e.g. fashion-mnist-open/in:fashion-mnist-open/out, "
          "or a suite that names one) to fill AUROC, FPR95 and AUPR.")
ATTACKED_OOD = ("The out-of-distribution rows read are attacked ones; AUROC, FPR95 and AUPR compare clean rows: report "
                "the clean run beside this one.")
NO_MCM = "MCM: - where a method's output is not logits (dmn, dmn-weak, onzeta, ecalp: README, \"Trust\")."


def legend(columns: tuple) -> str:
    """What the shown columns mean."""
    return ("Each value is a mean over tasks with its 95% bootstrap interval in brackets. "
            + " ".join(f"{short}: {full}." for _, short, full, _ in columns))



def _cell_parts(cell: Cell, signed: bool) -> Parts:
    if cell.value is None:
        return ("-",) if cell.note != "baseline" else ("baseline",)
    fmt = "{:+.1f}" if signed else "{:.1f}"
    interval = () if cell.low is None else (f"[{fmt.format(cell.low)}, {fmt.format(cell.high)}]",)
    return (fmt.format(cell.value), *interval)


def _parts(line: TrustLine, field: str, signed: bool) -> Parts:
    if field == "mcnemar":
        return (f"+{line.better} / -{line.worse} of {line.tasks}",) if line.tasks else ("-",)
    return _cell_parts(getattr(line, field), signed)


def _filled(report: TrustReport, columns: tuple) -> tuple:
    """The columns some line has a number for."""
    return tuple(c for c in columns if any(
        (line.tasks if c[0] == "mcnemar" else getattr(line, c[0]).value is not None) for line in report.lines))


def _notes(report: TrustReport, accuracy: tuple, ood: tuple) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What each table's empty columns need, from what rows were read."""
    shown = {c[0] for c in accuracy + ood}
    first = [NO_CLEAN] if "clean" not in report.kinds else ([NO_CONFIDENCE] if "ece" not in shown else [])
    first += [NO_ATTACK] if "attacked" not in report.kinds else []
    second = [] if ood else [ATTACKED_OOD if "attacked-ood" in report.kinds and "ood" not in report.kinds else NO_OOD]
    if any(line.auroc.value is not None and line.auroc_mcm.value is None for line in report.lines):
        second.append(NO_MCM)
    return tuple(first), tuple(second)


Table = tuple[str, tuple[str, ...], list[list[Parts]], tuple[str, ...]]


def tables(report: TrustReport) -> list[Table]:
    """(title, headers, body, notes) of the accuracy and the OOD table, and the stability table where
    runs stand side by side; a table without columns has its notes only."""
    teachers = len({(line.model, line.pretrained) for line in report.lines}) > 1
    accuracy, ood = _filled(report, ACCURACY_COLUMNS), _filled(report, OOD_COLUMNS)
    notes = _notes(report, accuracy, ood)
    out: list[Table] = []
    for title, columns, extra in ((TITLE, accuracy, notes[0]), (OOD_TITLE, ood, notes[1])):
        if not columns:
            out.append((title, (), [], extra))
            continue
        headers = ("method", *(("teacher",) if teachers else ()), *(c[1] for c in columns))
        body = [[(line.label,), *(((teacher_label(line.model, line.pretrained),),) if teachers else ()),
                 *(_parts(line, c[0], c[3]) for c in columns)] for line in report.lines]
        out.append((title, headers, body, extra))
    if report.stability:
        out.append(stability_table(report))
    return out


def shown_legend(report: TrustReport) -> str:
    return legend(_filled(report, ACCURACY_COLUMNS) + _filled(report, OOD_COLUMNS))


STABILITY_TITLE = "Stability over runs side by side (seeds, %)"
STABILITY_NOTE = ("Each run's mean over tasks, then over the runs: mean, +- the sample standard deviation, and the worst "
                  "run (lowest accuracy and AUROC, highest ECE). The tables above show each run's own line with its "
                  "bootstrap interval over samples; this one shows how much the seed moves it.")


def _spread(value: Spread | None) -> Parts:
    if value is None:
        return ("-",)
    sd = f" +- {value.sd:.1f}" if value.sd is not None else ""
    return (f"{value.mean:.1f}{sd}", f"(worst {value.worst:.1f})")


def stability_table(report: TrustReport) -> tuple[str, tuple[str, ...], list[list[Parts]], tuple[str, ...]]:
    teachers = len({(s.model, s.pretrained) for s in report.stability}) > 1
    headers = ("method", *(("teacher",) if teachers else ()), "runs", "accuracy", "ECE", "AUROC")
    body = [[(s.method,), *(((teacher_label(s.model, s.pretrained),),) if teachers else ()), (str(s.runs),),
             _spread(s.accuracy), _spread(s.ece), _spread(s.auroc)] for s in report.stability]
    return STABILITY_TITLE, headers, body, (STABILITY_NOTE,)
