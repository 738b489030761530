"""ECALP: the first sample's scores in closed form, a tiny graph (3 classes, 3 samples) against a dense
float64 re-statement of the authors' propagation, the kept neighbour lists against a list-based
re-statement of their incremental store, and the online contract (prefix determinism, a checkpoint
that continues exactly, FLOPs on the meta device, the state's size)."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

import harness.methods.ecalp as ecalp_module
from harness.errors import HarnessError
from harness.methods.ecalp import ecalp
from harness.methods.online_configs import EcalpConfig
from harness.methods.registry import METHODS
from harness.methods.row_products import rowwise
from harness.models.teacher import meta_teacher
from tasks.synthetic import SyntheticTask
from tests.online_streams import TASK, near, run, sample, stream

C = len(TASK.classnames)
TINY = SyntheticTask(per_class=1, classnames=("red circle", "green square", "blue triangle"))


def weights(text):
    return F.normalize(text.t().var(dim=0), dim=0)


def test_the_first_sample_in_closed_form(teacher):
    """Memory and query copy of x, linked to each other and themselves (s = cos(v x, x)), each to the 3
    best classes (c_j): round 1 gives T = d w_j d_j on those classes, and each round adds A T with
    A T = a T, a = 4 s^10 d^2, so the scores are T (1 + a + a^2)."""
    method = ecalp(EcalpConfig())
    text = method.text(teacher, TASK).double()
    (first,) = near(text.float(), [5], seed=0)
    state = method.begin(teacher, TASK, 3)
    got = method.step(teacher, TASK, state, first)
    x = F.normalize(first.embedding.double(), dim=0)
    s = float(F.normalize(weights(text) * x, dim=0) @ x)
    cos = x @ text
    top = cos.argsort(descending=True, stable=True)[:3]
    w_text = cos[top] ** 10
    d = 1 / ((4 * s**10 + w_text.sum()).sqrt() + 1e-6)
    a = 4 * s**10 * d**2
    scores = torch.zeros(C, dtype=torch.float64)
    scores[top] = d * w_text / ((2 * w_text).sqrt() + 1e-6) * (1 + a + a**2)
    assert got.prediction == got.prediction_before == 5 == int(scores.argmax())
    assert got.top5[:3] == tuple(top[scores[top].argsort(descending=True, stable=True)].tolist())
    assert got.confidence == pytest.approx(float((1e4 * scores).softmax(-1).max()), rel=1e-4)
    assert int(state["label"][0]) == 5
    assert float(state["label_value"][0]) == pytest.approx(float(scores.max()) / 5, rel=1e-4)
    assert state["image_index"][0, :2].tolist() == [0, 1] and state["text_index"][0].tolist() == top.tolist()


def dense_reference(xs, text, alpha=1.0, iterations=3, gamma=10):
    """The authors' zero-shot propagation for a complete graph (k_image >= N, k_text = C), restated
    densely in float64: per sample i the nodes are the C classes, x_0 .. x_i and x_i again; an image
    pair's similarity is cos(v * x_older, x_newer); S = W + W^T; W~ = D^-1/2 S D^-1/2 with
    1 / (sqrt(deg) + 1e-6); Y_0 = the kept labels (top score / 5 at the top class); three rounds of
    Y <- alpha W~[images] [I; Y] + (1 - alpha) Y_0. Returns per sample (query scores, kept labels, kept
    values)."""
    v = weights(text)
    classes = text.shape[1]
    kept_label, kept_value, out = [], [], []
    for i in range(len(xs)):
        nodes = list(range(i + 1)) + [i]  # the sample each image node holds
        n = len(nodes)
        W = torch.zeros(classes + n, classes + n, dtype=torch.float64)
        for a, sa in enumerate(nodes):
            for b, sb in enumerate(nodes):
                old, new = min(sa, sb), max(sa, sb)
                W[classes + a, classes + b] = float(F.normalize(v * xs[old], dim=0) @ xs[new]) ** gamma
            for c in range(classes):
                W[classes + a, c] = float(xs[sa] @ text[:, c]) ** gamma
        S = W + W.t()
        d = 1 / (S.sum(1).sqrt() + 1e-6)
        Wt = d[:, None] * S * d[None, :]
        Y0 = torch.zeros(n, classes, dtype=torch.float64)
        for j in range(i):
            Y0[j, kept_label[j]] = kept_value[j]
        Y = Y0
        for _ in range(iterations):
            Y = alpha * Wt[classes:] @ torch.cat([torch.eye(classes, dtype=torch.float64), Y]) + (1 - alpha) * Y0
        kept_value = (Y[: i + 1].max(1).values / 5).tolist()
        kept_label = Y[: i + 1].argmax(1).tolist()
        out.append((Y[-1], list(kept_label), list(kept_value)))
    return out


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_a_tiny_graph_matches_the_dense_hand_computation(teacher, alpha):
    method = ecalp(EcalpConfig(alpha=alpha))
    text = method.text(teacher, TINY)
    g = torch.Generator().manual_seed(1)
    common = F.normalize(torch.randn(64, generator=g), dim=0)  # as CLIP's: images nearer each other than the prompts
    toward = [text[:, 0] + m * (text[:, 2] - text[:, 0]) for m in (0.0, 1.0, 0.5)]  # class 0's prompt to 2's
    samples = [sample(i, common + 0.5 * t + 0.1 * torch.randn(64, generator=g)) for i, t in enumerate(toward)]
    state = method.begin(teacher, TINY, 3)
    xs = [F.normalize(s.embedding.double(), dim=0) for s in samples]
    for s, (query, labels, values) in zip(samples, dense_reference(xs, text.double(), alpha)):
        got = method.step(teacher, TINY, state, s)
        seen = int(state["seen"])
        order = query.argsort(descending=True, stable=True)
        assert got.prediction == int(order[0]) and got.top5 == tuple(order.tolist())
        assert got.confidence == pytest.approx(float((1e4 * query).softmax(-1).max()), rel=1e-4)
        assert state["label"][:seen].tolist() == labels
        torch.testing.assert_close(state["label_value"][:seen].double(), torch.tensor(values, dtype=torch.float64),
                                   rtol=1e-4, atol=0)
    assert len(set(labels)) > 1  # the graph carried more than one class


class AuthorsStore:
    """dynamic_graph_expansion's image lists restated with Python lists: one kept list of (sim, index)
    per image node, the query's last. Per sample: drop the query's list, set entries pointing at its
    index (now the new memory node's) to -1, offer both new nodes to every older list, keep the best
    `width` (a stable sort); the two new lists keep their best `width` over all nodes."""

    def __init__(self, k):
        self.k, self.rows = k, []

    def add(self, sims):
        """`sims`: cos(v x_j, x_i) for j = 0 .. i. Returns each node's neighbours (the query's last)."""
        n = len(sims) + 1
        near = min(self.k, n)
        full = sims + [sims[-1]]
        best = sorted(range(n), key=lambda j: -full[j])
        older = self.rows[:-1]
        m = len(older)
        width = near + 1 if m == near + 1 else near + 2 if m > near else near
        rows = []
        for j, row in enumerate(older):
            offered = [(-1.0 if index == n - 2 else s, index) for s, index in row]
            offered += [(full[j], n - 2), (full[j], n - 1)]
            rows.append(sorted(offered, key=lambda e: -e[0])[:width])
        new = [(full[j], j) for j in best[:width]]
        self.rows = rows + [new, list(new)]
        return [[index for _, index in row[:near]] for row in self.rows]


def test_the_kept_neighbours_follow_the_authors_incremental_store(teacher, monkeypatch):
    """k_image = 3 over 40 samples: the lists' widths pass through 2, 3, 4, 5; the neighbours are the
    authors' (never more than k, never the -1 of a reused index), and so are the kept lists."""
    config = EcalpConfig(k_image=3, k_text=2)
    method = ecalp(config)
    graphs = []
    real = ecalp_module.propagate

    def spy(graph, *args):
        graphs.append(graph)
        return real(graph, *args)

    monkeypatch.setattr(ecalp_module, "propagate", spy)
    text = method.text(teacher, TASK)
    samples = near(text, [i % C for i in range(40)], seed=2, noise=0.15)
    state, _ = run(method, teacher, samples)
    v = weights(text.double())
    xs = [F.normalize(s.embedding.double(), dim=0) for s in samples]
    store = AuthorsStore(config.k_image)
    for i, graph in enumerate(graphs):
        sims = [float(F.normalize(v * xs[j], dim=0) @ xs[i]) for j in range(i + 1)]
        expected = store.add(sims)
        assert graph.image_index.tolist() == expected
        assert graph.image_index.shape[1] <= config.k_image and graph.text_index.shape[1] == config.k_text
        assert bool((graph.image_index < i + 2).all()) and bool((graph.image_sim > -1).all())
        assert all(len(set(row)) == len(row) for row in expected)
    width = ecalp_module.store_width(41, config.k_image)
    assert width == config.k_image + 2
    assert state["image_index"][:, :width].tolist() == [[index for _, index in row] for row in store.rows[:-1]]


def test_the_state_after_k_samples_depends_on_those_k_only(teacher):
    method = ecalp(EcalpConfig())
    first, second = stream(12, seed=3, scale=1.0), stream(12, seed=4, scale=1.0)
    mixed = first[:6] + second[6:]
    a, _ = run(method, teacher, first[:6], length=12)
    b, _ = run(method, teacher, mixed[:6], length=12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    run(method, teacher, first[6:], state=a)
    run(method, teacher, mixed[6:], state=b)
    assert not torch.equal(a["features"], b["features"])


def test_a_checkpointed_state_continues_exactly(teacher):
    method = ecalp(EcalpConfig(k_image=4))
    samples = stream(16, seed=5, scale=1.0)
    whole, expected = run(method, teacher, samples)
    half, got = run(method, teacher, samples[:9], length=16)
    resumed = load(save({k: v.cpu() for k, v in half.items()}))
    _, rest = run(method, teacher, samples[9:], state=resumed)
    assert [(o.prediction, o.top5, o.confidence) for o in got + rest] == \
        [(o.prediction, o.top5, o.confidence) for o in expected]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_stream_longer_than_begun_is_refused(teacher):
    method = ecalp(EcalpConfig())
    state, _ = run(method, teacher, stream(2, scale=1.0))
    with pytest.raises(HarnessError, match="past its end"):
        method.step(teacher, TASK, state, stream(3, scale=1.0)[2])


def test_flops_on_the_meta_device_and_the_state_size(teacher):
    method = METHODS.get("ecalp")(EcalpConfig())
    meta = meta_teacher(teacher.config)
    dim = teacher.embed_dim
    assert method.flops(meta, TASK, 500) == method.flops(teacher, TASK, 500)
    # one sample: the similarities (1 kept sample, C classes) and 3 rounds over 2 x 2 x 2 edge entries,
    # the first with one class per node
    assert method.flops(meta, TASK, 1) == teacher.image_flops + 2 * dim + 2 * dim * C + 2 * 8 + 2 * 2 * C * 8
    assert method.flops(meta, TASK, 500) > method.flops(meta, TASK, 50)  # the graph grows
    state = method.begin(teacher, TASK, 10)
    assert method.state_bytes(dim, C, 10) == sum(v.numel() * v.element_size() for v in state.values())
    assert method.state_bytes(512, 1000, 50_000) == 110_800_008
    for bad in ({"gamma": 3.0}, {"gamma": 10.5}, {"alpha": 1.5}, {"k_image": 0}, {"k_image": 1000},
                {"templates": "cupl"}):
        with pytest.raises(HarnessError):
            EcalpConfig(**bad)


@pytest.mark.parametrize("rows", [100, 3001])
def test_the_row_products_give_the_same_bits_on_one_and_two_threads(rows):
    """At these sizes MKL's matrix-vector product does not (its last bits differ between 1 and 2 threads)."""
    g = torch.Generator().manual_seed(rows)
    matrix, x = torch.randn(rows, 512, generator=g), torch.randn(512, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rowwise(matrix, x)
        torch.set_num_threads(2)
        two = rowwise(matrix, x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    torch.testing.assert_close(one.double(), matrix.double() @ x.double(), rtol=1e-5, atol=1e-4)
