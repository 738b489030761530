"""DMN-ZS, the dual memory networks' zero-shot form (Zhang et al., CVPR 2024), on one view per image:
TTA-VLM's `dmn_weak`, the authors' YBZh/DMN (dmn_main.py, DualMem) with one view instead of 32.

Per sample, in the authors' order:
1. text probabilities p_t = softmax(s * f.T) (f the unit embedding, T the text classifier, s the
   teacher's logit scale); pseudo-label y = argmax p_t (ties: the lowest class); entropy
   H = -sum p_t log(p_t + 1e-8) (the authors' eps; TTA-VLM's is 1e-5);
2. WRITE: below `memory` entries, f goes to class y's next slot; when full, to the slot with the
   highest stored entropy (the lowest slot on ties) if H is strictly lower (`replace = if-lower`, the
   authors) or whatever H (`always`, TTA-VLM);
3. READ: for every class c, its filled slots k_j and its text feature T_c, weighted by
   a_j = exp(-beta (1 - f.k_j)); v_c = normalise(sum_j a_j k_j); p_m = softmax(s * f.v_c). A class
   with no entries reads its text feature alone; the sample just written reads itself with weight 1;
4. OUTPUT: p_t + alpha * p_m, a sum of probabilities, as the authors. The outcome's confidence is the
   winner's share of that sum, p[pred] / (1 + alpha).
The single view means the multi-view parts (3 of 32 views chosen by entropy, their averaged
probabilities for y and H) reduce to the view itself; the authors' code with one view would keep
int(1 * 0.1) = 0 views and give NaN pseudo-labels.

State (flat tensors): memory (C, L, D) fp32, entropy (C, L) fp32, count (C,) int64; slot j of a class is
filled iff j < its count (the authors test "the slot's sum is 0", the same for real features).
At ImageNet scale (D=512, C=1000, L=50, any length) the state is 102,608,000 bytes (103 MB; RN50's
D=1024 doubles the memory part); the authors allocate six times that (unused prediction and
local-feature buffers).

Differences from the authors: one view; the prompt "a photo of a {}." by default (`templates = task`
for the task's set; theirs are TIP's 7 templates plus CuPL's sentences); alpha fixed at 1.0 by default
(theirs searched on the test labels after the stream, DmnConfig.alpha); the zero-initialised
projection biases of DualMem, which add nothing in zero-shot, are left out; fp32 as theirs (TTA-VLM's
text logits are fp16 under autocast)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.methods.base import Outcome
from harness.methods.online import OnlineBase, State, StreamSample
from harness.methods.online_configs import DmnConfig
from harness.methods.online_ranking import FlopCache, first_argmax, not_logits, prompts, ranked
from harness.models.teacher import Teacher
from tasks.base import Task
from tasks.templates import TemplateSet

ENTROPY_EPS = 1e-8
"""Inside the log of the pseudo-label's entropy (dmn_main.py's; TTA-VLM's dmn_weak uses 1e-5)."""


def read_memory(memory: torch.Tensor, count: torch.Tensor, text: torch.Tensor, f: torch.Tensor, beta: float,
                scale: float) -> torch.Tensor:
    """(C,) the memory's class probabilities p_m: each class's filled slots and its text feature
    (the columns of `text`, (D, C)) averaged with weights exp(-beta (1 - f.k)), renormalised, scored
    against f at `scale`. Matrix products in 2-D and batched, which torch's FLOP counter counts."""
    classes, slots, dim = memory.shape
    sims = (memory.reshape(classes * slots, dim) @ f[:, None]).reshape(classes, slots)
    filled = torch.arange(slots, device=memory.device)[None, :] < count[:, None]
    weights = torch.exp(-beta * (1 - sims)) * filled
    text_weight = torch.exp(-beta * (1 - (f[None, :] @ text)[0]))
    summed = torch.bmm(weights[:, None, :], memory)[:, 0] + text_weight[:, None] * text.T
    values = F.normalize(summed, dim=-1)
    return (scale * (values @ f[:, None])[:, 0]).softmax(-1)


def write(state: State, label: int, f: torch.Tensor, entropy: torch.Tensor, replace: str) -> bool:
    """Store (f, entropy) in class `label`'s memory by the authors' rule (or TTA-VLM's `always`);
    returns whether it was stored."""
    memory, stored, count = state["memory"], state["entropy"], state["count"]
    n = int(count[label])
    if n < memory.shape[1]:
        slot = n
        count[label] = n + 1
    else:
        slot = first_argmax(stored[label])
        if replace == "if-lower" and not bool(entropy < stored[label, slot]):
            return False
    memory[label, slot] = f
    stored[label, slot] = entropy
    return True


@dataclass
class DmnMethod(OnlineBase):
    config: DmnConfig = field(default_factory=DmnConfig)
    name: str = "dmn-weak"
    _flops: FlopCache = field(default_factory=FlopCache, repr=False)

    def templates(self, task: Task) -> TemplateSet:
        return prompts(self.config.templates, task)

    def _empty(self, classes: int, dim: int, device: torch.device | str) -> State:
        slots = self.config.memory
        return {
            "memory": torch.zeros(classes, slots, dim, device=device),
            "entropy": torch.zeros(classes, slots, device=device),
            "count": torch.zeros(classes, dtype=torch.int64, device=device),
        }

    def begin(self, teacher: Teacher, task: Task, length: int) -> State:
        """An empty memory (the authors reset it per data set)."""
        return self._empty(len(task.classnames), teacher.embed_dim, teacher.device)

    def text_probs(self, f: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
        """(C,) p_t = softmax(s * f.T)."""
        return self.zero_shot(f, text, scale).softmax(-1)

    def combined(self, state: State, f: torch.Tensor, text: torch.Tensor, scale: float,
                 probs: torch.Tensor) -> torch.Tensor:
        """(C,) p_t + alpha * p_m from the memory as it stands."""
        cfg = self.config
        return probs + cfg.alpha * read_memory(state["memory"], state["count"], text, f, cfg.beta, scale)

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Write the sample under its zero-shot pseudo-label, then read the memory (the authors' order)."""
        f = self.unit(sample)
        text = self.text(teacher, task)
        with torch.autocast(f.device.type, enabled=False):  # fp32 even inside a caller's autocast
            probs = self.text_probs(f, text, teacher.logit_scale)
            label = first_argmax(probs)
            entropy = -(probs * (probs + ENTROPY_EPS).log()).sum()
            write(state, label, f, entropy, self.config.replace)
            scores = self.combined(state, f, text, teacher.logit_scale, probs)
        return ranked(scores, not_logits(float(scores.max() / scores.sum())), label, self.templates(task))

    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """The image forward, the text scores and the read-out of a full memory (counted on the meta
        device; writing copies one row, no counted arithmetic)."""
        classes, dim = len(task.classnames), teacher.embed_dim

        def one_step() -> None:
            state = self._empty(classes, dim, "meta")
            f, text = torch.empty(dim, device="meta"), torch.empty(dim, classes, device="meta")
            self.combined(state, f, text, 100.0, self.text_probs(f, text, 100.0))

        return self._flops.get(teacher, task, length, one_step)

    def state_bytes(self, dim: int, classes: int, length: int) -> int:
        """A full memory: fp32 features and entropies, int64 counts."""
        return classes * (self.config.memory * (dim + 1) * 4 + 8)


def dmn_weak(config: DmnConfig | None) -> DmnMethod:
    return DmnMethod(config=config or DmnConfig())
