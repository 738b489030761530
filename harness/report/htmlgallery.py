"""The sample gallery (gallery.Gallery) as HTML: per method, how many predictions it changed against
zero-shot, then the thumbnails of those it fixed and those it broke, each with the true class in bold
and the wrong answer below it, the task and sample id on hover. Thumbnails are JPEG data: URIs."""

from __future__ import annotations

import base64
import html

from harness.report.gallery import Gallery, MethodChanges, Thumb
from harness.report.tables import BASELINE, method_label, teacher_label


def _thumb(thumb: Thumb, method: str) -> str:
    data = base64.b64encode(thumb.jpeg).decode("ascii")
    wrong = (method_label(BASELINE), thumb.before) if thumb.kind == "fixed" else (method_label(method), thumb.after)
    tip = (f"{thumb.task} {thumb.sample_id}: true class {thumb.truth}; {method_label(BASELINE)} said {thumb.before}, "
           f"{method_label(method)} says {thumb.after}")
    return (f'<figure title="{html.escape(tip)}"><img alt="{html.escape(thumb.sample_id)}" '
            f'src="data:image/jpeg;base64,{data}"><b>{html.escape(thumb.truth)}</b>'
            f'<span class="muted">{html.escape(wrong[0])}: {html.escape(wrong[1])}</span></figure>')


def _method_block(changes: MethodChanges, several_teachers: bool) -> str:
    label = method_label(changes.method) + (f" [{changes.run}]" if changes.run else "")
    if several_teachers:
        label += f" ({teacher_label(changes.model, changes.pretrained)})"
    if not changes.compared:
        summary = f"no {BASELINE} prediction to compare with (no {BASELINE} rows, no prediction_before)"
    else:
        summary = (f"changed {changes.changed} of {changes.compared} predictions: fixed {changes.fixed}, "
                   f"broke {changes.broke}")
    parts = [f'<h3>{html.escape(label)} <span class="muted">{html.escape(summary)}</span></h3>']
    for kind in ("fixed", "broke"):
        thumbs = [t for t in changes.thumbs if t.kind == kind]
        if thumbs:
            parts.append(f'<div class="thumbs {kind}"><span class="kind">{kind}</span>'
                         + "".join(_thumb(t, changes.method) for t in thumbs) + "</div>")
    return "\n".join(parts)


def gallery_section(gallery: Gallery) -> str:
    base = method_label(BASELINE)
    parts = ['<h2 id="gallery">Samples each method changed</h2>',
             f'<p class="muted">Samples on which a method changed {base}\'s prediction: green frame, fixed '
             f"({base} wrong, the method right); red frame, broke. In bold the true class, below it the wrong "
             "answer; hover for the task and sample id. A few of each, spread over the tasks.</p>"]
    several = len({(m.model, m.pretrained) for m in gallery.methods}) > 1
    parts += [_method_block(m, several) for m in gallery.methods]
    if not gallery.methods:
        parts.append(f"<p>No method besides {base} in the rows read.</p>")
    if gallery.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in gallery.notes) + "</ul>")
    return "\n".join(parts)
