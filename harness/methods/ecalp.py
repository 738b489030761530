"""ECALP, efficient and context-aware label propagation (Li et al., ICLR 2025), as Yushu-Li/ECALP's
zero-shot mode runs it (main.py and utils/iterative_label_propagation.py, unchanged since 81657ca), on
one embedding per image (TTA-VLM's protocol; the authors' features come from DMN's pipeline).

The graph has the C class nodes (the text classifier's columns t_c) and, at sample i (0 first), N = i+2
image nodes: the memory nodes x_0 .. x_i and a query node, x_i again (the authors feed the current
sample twice; the query's row is dropped at the next sample). Per sample, in the authors' order:
1. v = the per-dimension variance of the t_c over the classes, normalised (context-aware re-weighting);
   the similarity of an image node pair is cos(v * x_old, x_new), the weight on the older sample's
   side whichever node the row belongs to (the authors weight the row node for existing rows and the
   neighbour for the new rows, which comes to this);
2. insert x_i: the new rows keep their best store_width(N) image nodes (self and query copy included),
   sorted; every older row adds the two new nodes (memory, then query) to its kept list, after its entry
   for the old query index, now the new memory node, is set to -1, and keeps its best store_width(N).
   Each row's first min(k, N) entries are its image neighbours: the authors' incremental store. Once
   the lists hold k + 2 (past k + 3 samples), a row that holds its k + 1 best keeps holding them (the
   spares cover the query copy each sample removes); in the first k + 3 samples a row can drop a
   neighbour an exhaustive search would keep, as theirs does. Class neighbours: the top k_text of x.t_c;
3. edge weights sim ** gamma; W = those edges (rows: image nodes), symmetrised S = W + W^T (a self-loop
   counts twice); degrees over all nodes, class nodes included; W~ = D^-1/2 S D^-1/2 with
   D^-1/2 = 1 / (sqrt(degree) + 1e-6);
4. labels: class nodes clamped to the identity; image rows start from Y_0 = each older memory node's
   kept label (its top class at the previous sample, with the top score / 5), zero for the two new
   nodes; `iterations` rounds of Y <- alpha W~ [I; Y] + (1 - alpha) Y_0;
5. the prediction is the query row's argmax (ties: the lowest class); confidence the authors' returned
   probability, softmax(10^4 y) of that row (1.0 unless the top scores are within about 10^-3);
   `prediction_before` the argmax of x.t_c. Then every memory node keeps its top class and top score / 5
   (ties: the lowest class) as its next Y_0. Past predictions are never revised.
Ties in every sort go to the earlier candidate (stable sorts): lower node index, an older row's kept
entries before the two new nodes, the memory copy before the query copy.

State (flat, preallocated in begin from the stream's `length`; row j is sample j; rows past `seen` are
unused): features (length, D) fp32, the re-weighted unit features normalise(v * x) (all a later sample
needs of an older one); image_index (length, k+2) int64 and image_sim (length, k+2) fp32, the kept
lists; text_index, text_sim (length, k_text); label (length,) int64 and label_value (length,) fp32, the
sparse Y_0 (the authors keep it dense, N x C); seen, 0-d int64. At ImageNet scale (D=512, C=1000,
50,000 samples, the defaults) 110,800,008 bytes (111 MB); a 15-corruption ImageNet-C continual stream of
750,000 samples, 1.66 GB. A step also holds two transient N x C label matrices (200 MB each at
N = 50,000) and the graph's edges.

Cost: the graph grows with the stream, as the authors'; each sample rebuilds and propagates over all
of it, O(N (D + k C)), so a stream costs O(n^2 (D + k C)). One step on one CPU thread at C = 1000,
D = 512 (random embeddings, a state filled as after n samples): 0.09 s after 5,000 samples, 0.39 s
after 20,000, 1.1 s after 50,000 (linear in N): a 50,000-sample ImageNet stream is about 8 hours of
steps on one thread (a 750,000-sample ImageNet-C continual stream, months).

Differences from the authors: the single prompt "a photo of a {}." by default (`templates`; theirs are
DMN's 7 templates plus CuPL's sentences on ImageNet); fp32 throughout (TTA-VLM's similarities fp16);
the stream's order is the harness's; ties broken by the stable rule above (theirs by CUDA's topk)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.flops import count_flops
from harness.methods.base import Outcome
from harness.methods.online import OnlineBase, State, StreamSample
from harness.methods.online_configs import EcalpConfig
from harness.methods.online_ranking import first_argmax, not_logits, ranked
from harness.methods.row_products import rowwise
from harness.methods.tip_templates import prompt_choice
from harness.models.teacher import Teacher
from tasks.base import Task
from tasks.templates import TemplateSet

KEPT_SCALE = 5.0
"""A node's kept label is its top score divided by 5 (the authors' warm start)."""
OUTPUT_SCALE = 1e4
"""The authors return softmax(10^4 * the query's scores)."""


def store_width(nodes: int, k: int) -> int:
    """How many image neighbours every row keeps when the graph has `nodes` image nodes (the query copy
    included): min(k, nodes) while that covers the older rows, then k + 1 once, then k + 2."""
    near = min(k, nodes)
    older = nodes - 2
    if older == near + 1:
        return near + 1
    return near + 2 if older > near else near


def variance_weights(text: torch.Tensor) -> torch.Tensor:
    """(D,) v: the variance of each dimension over the class embeddings (unbiased), normalised."""
    return F.normalize(text.t().var(dim=0), dim=0)


def similarities(features: torch.Tensor, x: torch.Tensor, text_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((i+1,) cos(v * x_j, x) over the kept re-weighted features, (C,) x.t_c from the classes as rows
    (C, D)): products torch's FLOP counter counts, the same bits on any number of CPU threads."""
    return rowwise(features, x), rowwise(text_rows, x)


@dataclass(frozen=True)
class Graph:
    """One sample's graph: each of the N image nodes' neighbours (the query last)."""

    image_index: torch.Tensor
    """(N, min(k, N)) image node indices, best first."""
    image_sim: torch.Tensor
    """(N, min(k, N)) their similarities."""
    text_index: torch.Tensor
    """(N, k_text) class indices, best first."""
    text_sim: torch.Tensor
    """(N, k_text) their cosines."""


def expand(state: State, i: int, sims: torch.Tensor, k: int) -> Graph:
    """Insert sample i (its similarities `sims` to samples 0..i) into the kept lists and return the graph."""
    nodes, near, width = i + 2, min(k, i + 2), store_width(i + 2, k)
    device = sims.device
    row = torch.cat([sims, sims[i:]])  # the query node is x_i again
    new_index = row.argsort(descending=True, stable=True)[:width]
    index, sim = state["image_index"], state["image_sim"]
    if i > 0:
        kept = store_width(nodes - 1, k)
        old_index = index[:i, :kept]
        old_sim = sim[:i, :kept].masked_fill(old_index == i, -1.0)  # the old query's index is reused
        both = torch.tensor([i, i + 1], dtype=index.dtype, device=device)
        cand_index = torch.cat([old_index, both.expand(i, 2)], dim=1)
        cand_sim = torch.cat([old_sim, sims[:i, None].expand(i, 2)], dim=1)
        pick = cand_sim.argsort(dim=1, descending=True, stable=True)[:, :width]
        sim[:i, :width] = cand_sim.gather(1, pick)
        index[:i, :width] = cand_index.gather(1, pick)
    index[i, :width] = new_index
    sim[i, :width] = row[new_index]
    return Graph(
        image_index=torch.cat([index[: i + 1, :near], index[i : i + 1, :near]]),
        image_sim=torch.cat([sim[: i + 1, :near], sim[i : i + 1, :near]]),
        text_index=torch.cat([state["text_index"][: i + 1], state["text_index"][i : i + 1]]),
        text_sim=torch.cat([state["text_sim"][: i + 1], state["text_sim"][i : i + 1]]),
    )


def propagate(graph: Graph, start_label: torch.Tensor, start_value: torch.Tensor, classes: int,
              config: EcalpConfig) -> torch.Tensor:
    """(N, C) the image nodes' scores after the rounds, from the starting labels Y_0, one (class, value)
    per node (value 0 for the new nodes). The first round reads Y_0 sparse, which gives the product
    of the authors' first round with N C fewer multiply-adds; the later rounds are dense."""
    nodes, near = graph.image_index.shape
    device = start_value.device
    w_image = graph.image_sim.pow(config.gamma).flatten()
    w_text = graph.text_sim.pow(config.gamma)
    rows = torch.arange(nodes, device=device).repeat_interleave(near)
    cols = graph.image_index.flatten()
    sym = torch.sparse_coo_tensor(torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])]),
                                  torch.cat([w_image, w_image]), (nodes, nodes), check_invariants=False).coalesce()
    at, values = sym.indices(), sym.values()  # S = W + W^T on the image nodes, duplicates summed
    degree = torch.zeros(nodes, device=device).index_add_(0, at[0], values) + w_text.sum(1)
    class_degree = torch.zeros(classes, device=device).index_add_(0, graph.text_index.flatten(), w_text.flatten())
    scale = 1 / (degree.sqrt() + 1e-6)
    class_scale = 1 / (class_degree.sqrt() + 1e-6)
    image_part = scale[at[0]] * (values * scale[at[1]])
    text_rows = torch.arange(nodes, device=device).repeat_interleave(graph.text_index.shape[1])
    text_cols = graph.text_index.flatten()
    text_part = scale[text_rows] * (w_text.flatten() * class_scale[text_cols])
    start_rows = torch.arange(nodes, device=device)

    def finish(spread: torch.Tensor) -> torch.Tensor:
        """Add the clamped class nodes' part (and alpha's Y_0 part). A flat index_add_ sums in index
        order on any number of CPU threads (index_put_(accumulate=True) does not)."""
        flat = spread.view(-1)
        flat.index_add_(0, text_rows * classes + text_cols, text_part)
        if config.alpha != 1:
            flat.mul_(config.alpha).index_add_(0, start_rows * classes + start_label, (1 - config.alpha) * start_value)
        return spread

    labels = torch.zeros(nodes, classes, device=device)
    labels.view(-1).index_add_(0, at[0] * classes + start_label[at[1]], image_part * start_value[at[1]])
    labels = finish(labels)
    if config.iterations > 1:
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            matrix = torch.sparse_coo_tensor(at, image_part, (nodes, nodes), check_invariants=False).to_sparse_csr()
        spare = torch.empty_like(labels)
        for _ in range(config.iterations - 1):
            spare, labels = labels, finish(torch.mm(matrix, labels, out=spare))
    return labels


@dataclass
class EcalpMethod(OnlineBase):
    config: EcalpConfig = field(default_factory=EcalpConfig)
    name: str = "ecalp"
    _flops: dict[tuple, int] = field(default_factory=dict, repr=False)

    def templates(self, task: Task) -> TemplateSet:
        return prompt_choice(self.config.templates, task)

    def begin(self, teacher: Teacher, task: Task, length: int) -> State:
        """An empty graph with room for `length` samples (the authors start every data set empty)."""
        if length < 1:
            raise HarnessError(f"ecalp needs the stream's length to size its graph, not {length}")
        dev, kept, near_text = teacher.device, self.config.k_image + 2, min(self.config.k_text, len(task.classnames))
        return {
            "features": torch.zeros(length, teacher.embed_dim, device=dev),
            "image_index": torch.full((length, kept), -1, dtype=torch.int64, device=dev),
            "image_sim": torch.zeros(length, kept, device=dev),
            "text_index": torch.zeros(length, near_text, dtype=torch.int64, device=dev),
            "text_sim": torch.zeros(length, near_text, device=dev),
            "label": torch.zeros(length, dtype=torch.int64, device=dev),
            "label_value": torch.zeros(length, device=dev),
            "seen": torch.zeros((), dtype=torch.int64, device=dev),
        }

    def step(self, teacher: Teacher, task: Task, state: State, sample: StreamSample) -> Outcome:
        """Insert the sample, propagate, predict the query node, keep every node's top label."""
        i = int(state["seen"])
        if i >= state["features"].shape[0]:
            raise HarnessError(f"ecalp's graph was begun for {state['features'].shape[0]} samples; "
                               f"sample {i + 1} is past its end")
        text = self.text(teacher, task)
        classes, near_text = text.shape[1], state["text_index"].shape[1]
        with torch.no_grad():
            x = self.unit(sample)
            state["features"][i] = F.normalize(variance_weights(text) * x, dim=0)
            sims, cosines = similarities(state["features"][: i + 1], x, text.t().contiguous())
            top = cosines.argsort(descending=True, stable=True)[:near_text]
            state["text_index"][i], state["text_sim"][i] = top, cosines[top]
            graph = expand(state, i, sims, self.config.k_image)
            zero = torch.zeros(2, device=x.device)
            scores = propagate(graph, torch.cat([state["label"][:i], zero.long()]),
                               torch.cat([state["label_value"][:i], zero]), classes, self.config)
            best, label = scores[: i + 1].max(dim=1)  # first maximal class on ties (torch.max's rule)
            state["label"][: i + 1], state["label_value"][: i + 1] = label, best / KEPT_SCALE
        state["seen"] = torch.tensor(i + 1, dtype=torch.int64, device=state["seen"].device)
        query = scores[-1]
        confidence = float((OUTPUT_SCALE * query).softmax(-1).max())
        return ranked(query, not_logits(confidence), first_argmax(cosines), self.templates(task))

    def flops(self, teacher: Teacher, task: Task, length: int) -> int:
        """Per sample, averaged over a stream of `length`: the image forward; the new sample's
        similarities to every kept sample and class (counted on the meta device; affine in the
        samples kept, so the mean of the first and the last step is the stream's mean); and the
        rounds' sparse products, which torch's counter does not see, over 2 N min(k, N) image edges
        (both ways; an upper bound, as mutual edges merge): one multiply-add per edge in the first
        round (its Y_0 has one class per node), C per edge in each later one."""
        key = (id(teacher), tuple(task.classnames), length)
        if key not in self._flops:
            classes, dim, steps = len(task.classnames), teacher.embed_dim, max(length, 1)

            def counted(kept: int) -> int:
                meta = torch.empty(dim, device="meta")
                return count_flops(lambda: similarities(torch.empty(kept, dim, device="meta"), meta,
                                                        torch.empty(classes, dim, device="meta")))

            edges = 2 * sum_of_edges(steps + 1, self.config.k_image)
            spread = 2 * edges + (self.config.iterations - 1) * 2 * classes * edges
            self._flops[key] = teacher.image_flops + round((counted(1) + counted(steps)) / 2 + spread / steps)
        return self._flops[key]

    def state_bytes(self, dim: int, classes: int, length: int) -> int:
        """The preallocated graph: fp32 features, kept lists (int64 index, fp32 similarity), class
        neighbours, sparse kept labels, one counter."""
        kept, near_text = self.config.k_image + 2, min(self.config.k_text, classes)
        return length * (4 * dim + 12 * kept + 12 * near_text + 12) + 8


def sum_of_edges(last: int, k: int) -> int:
    """The sum over N = 2 .. last of N min(k, N): the image edges of every step of a stream."""
    low = min(k, last)
    total = low * (low + 1) * (2 * low + 1) // 6 - 1
    if last > k:
        total += k * (last * (last + 1) // 2 - k * (k + 1) // 2)
    return total


def ecalp(config: EcalpConfig | None) -> EcalpMethod:
    return EcalpMethod(config=config or EcalpConfig())
