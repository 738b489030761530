"""DMN-ZS, the dual memory networks' zero-shot form (Zhang et al., CVPR 2024), with TPT's views, as
the authors run it (YBZh/DMN, dmn_main.py: `-b 32`, `--selection_p 0.1`): `dmn-weak`'s memory
(harness/methods/dmn.py: the write rule, the read-out, p_t + alpha * p_m) with the pseudo-label and
its entropy taken from the confident views instead of the centre view alone.

Per sample, in the authors' order, with V = `views` normalised view embeddings (the stream engine
makes them from the run's per-sample seed; view 0 is the teacher's own centre crop, the others
random resized crops of area 0.5 to 1 with a flip, AugMix-mixed on the fine-grained sets):
1. every view's text probabilities P[v] = softmax(s * F[v].T) (s the teacher's logit scale);
2. the int(V * top) (at least one) views of lowest entropy -sum P[v] log(P[v] + 1e-6), view 0 among
   the candidates (a stable sort: equal entropies keep view order), 3 of 32 by default; their
   probabilities averaged into q; pseudo-label y = argmax q (ties: the lowest class), entropy
   H = -sum q log(q + 1e-8);
3. WRITE view 0's feature (never an augmented view's) under (y, H) by dmn.py's rule;
4. READ with view 0 as the query, and OUTPUT P[0] + alpha * p_m: the views reach the output only
   through y and H. The confidence is the winner's share of that sum, p[pred] / (1 + alpha); the
   outcome's `prediction_before` is view 0's zero-shot argmax (the same classifier), not y.
The authors' extra "vote" accuracy (argmax q) is logged by them and is not their output; not kept.

TTA-VLM's `dmn` (TomSheng21/tta-vlm, online_method/dmn.py) as settings: views 64, min_scale 0.08,
average = logits (the selected views ranked by their exact entropy, their logits averaged, then one
softmax: a sharper q, so a lower H), replace = always; top 0.1 then keeps 6 views. Not offered: its
eps 1e-5 in H (1e-8 here), its fp16 autocast logits.

State: dmn.py's, unchanged (memory (C, L, D) fp32, entropy (C, L) fp32, count (C,) int64): at ImageNet
scale (D=512, C=1000, L=50, any length) 102,608,000 bytes. The views are not state: each sample's
(V, D) embeddings (32 x 512 fp32 = 64 KiB) are used and let go. FLOPs per sample: V image forwards
(the teacher's own and V - 1 views), the V x C text scores and the memory's read-out.

Differences from the authors, besides dmn.py's (the single prompt by default, alpha fixed at 1.0
rather than searched on the test labels, no zero projection biases): the views are TPT's recipe made
from the sample's own seeded generators (theirs come from the DataLoader workers' global RNGs), so the
numbers depend on the draw as theirs do, but reproducibly; ties are broken by the rules above (their
CUDA argsort and max give no order)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.errors import HarnessError
from harness.methods.base import Outcome
from harness.methods.dmn import ENTROPY_EPS, DmnMethod, write
from harness.methods.episodic import FINE_GRAINED_FAMILIES, confident_views, task_family
from harness.methods.online import State, StreamSample, tpt_views
from harness.methods.online_configs import DmnViewsConfig
from harness.methods.online_ranking import first_argmax, not_logits, ranked
from harness.methods.view_feed import ViewSpec
from harness.models.teacher import Teacher
from tasks.base import Task

VIEW_EPS = 1e-6
"""Inside the log of a view's entropy when the views are ranked (dmn_main.py's select_confident_samples)."""


def pseudo_label(logits: torch.Tensor, top: float, average: str) -> tuple[int, torch.Tensor, torch.Tensor]:
    """From the views' text logits (V, C): the pseudo-label, its entropy H (0-d) and the selected views
    (lowest entropy first). `probs`: the authors' mean of the selected views' probabilities;
    `logits`: TTA-VLM's softmax of the mean of their logits."""
    if average == "probs":
        probs = logits.softmax(-1)
        spread = -(probs * (probs + VIEW_EPS).log()).sum(-1)
        chosen = spread.argsort(stable=True)[: max(1, int(logits.shape[0] * top))]
        q = probs[chosen].mean(0)
    else:
        chosen = confident_views(logits, top)
        q = logits[chosen].mean(0).softmax(-1)
    return first_argmax(q), -(q * (q + ENTROPY_EPS).log()).sum(), chosen


@dataclass
class DmnViewsMethod(DmnMethod):
    config: DmnViewsConfig = field(default_factory=DmnViewsConfig)
    name: str = "dmn"

    def uses_augmix(self, task: Task) -> bool:
        """`auto`: the authors' rule, AugMix on the fine-grained sets and not on the ImageNet family."""
        if self.config.augmix == "auto":
            return task_family(task) in FINE_GRAINED_FAMILIES
        return self.config.augmix == "on"

    def view_spec(self, teacher: Teacher, task: Task) -> ViewSpec:
        """The views - 1 augmented views the engine makes of every image (view 0 is the teacher's own)."""
        return tpt_views(teacher, self.config.views, self.uses_augmix(task), self.config.min_scale)

    def views(self, sample: StreamSample) -> torch.Tensor:
        """(V, D) the sample's normalised view embeddings, fp32; refused if the engine gave other views."""
        views = sample.views
        if views is None or views.ndim != 2 or views.shape[0] != self.config.views:
            got = "none" if views is None else f"shape {tuple(views.shape)}"
            raise HarnessError(f"{self.name} needs {self.config.views} views of each sample (its view_spec), got {got}")
        return views.float()

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Write view 0 under the confident views' pseudo-label, then read the memory with view 0."""
        views = self.views(sample)
        text = self.text(teacher, task)
        cfg = self.config
        with torch.autocast(views.device.type, enabled=False):  # fp32 even inside a caller's autocast
            logits = teacher.logit_scale * (views @ text)
            label, entropy, _ = pseudo_label(logits, cfg.top, cfg.average)
            f, probs = views[0], logits[0].softmax(-1)
            write(state, label, f, entropy, cfg.replace)
            scores = self.combined(state, f, text, teacher.logit_scale, probs)
        return ranked(scores, not_logits(float(scores.max() / scores.sum())), first_argmax(probs), self.templates(task))

    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """Every view through the image tower (view 0 is the teacher's own forward), every view's text
        scores and the read-out of a full memory (counted on the meta device; the selection sorts V
        numbers and writing copies one row, no counted arithmetic)."""
        classes, dim, count = len(task.classnames), teacher.embed_dim, self.config.views

        def one_step() -> None:
            state = self._empty(classes, dim, "meta")
            views, text = torch.empty(count, dim, device="meta"), torch.empty(dim, classes, device="meta")
            logits = 100.0 * (views @ text)
            self.combined(state, views[0], text, 100.0, logits[0].softmax(-1))

        return self._flops.get(teacher, task, length, one_step) + (count - 1) * teacher.image_flops


def dmn(config: DmnViewsConfig | None) -> DmnViewsMethod:
    return DmnViewsMethod(config=config or DmnViewsConfig())
