"""Streams for the online methods' tests (TDA, DMN, OnZeta, ECALP): samples with seeded random
embeddings, and a method run over them from its `begin` or from a given state. The `sharp` teacher
they use is in conftest.py."""

import torch

from harness.methods.online import StreamSample
from tasks.base import SampleRef
from tasks.synthetic import SyntheticTask

TASK = SyntheticTask(per_class=1)  # 12 classes


def sample(i, embedding):
    """Sample `i` of a stream (its place and its seed both i)."""
    return StreamSample(SampleRef(f"s{i}", 0, ""), i, embedding, i)


def stream(n, seed=0, dim=64, scale=3.0):
    """`n` samples with Gaussian embeddings of `dim` times `scale`, from one generator seeded `seed`."""
    g = torch.Generator().manual_seed(seed)
    return [sample(i, torch.randn(dim, generator=g) * scale) for i in range(n)]


def near(text, classes, seed, noise=0.05):
    """Sample i's embedding near the prompt of class `classes[i]` (a column of `text`, (D, C)), so the
    similarities are CLIP-like (0.5 to 0.95)."""
    g = torch.Generator().manual_seed(seed)
    return [sample(i, text[:, c] + noise * torch.randn(text.shape[0], generator=g)) for i, c in enumerate(classes)]


def run(method, teacher, samples, state=None, *, task=TASK, length=None):
    """Step `method` over `samples` from `state`, else from its begin for a stream of `length` (default:
    the samples'); returns the state and the outcomes."""
    state = method.begin(teacher, task, length or len(samples)) if state is None else state
    return state, [method.step(teacher, task, state, s) for s in samples]
