"""Stream orders (harness.streams): each protocol's defining property, and that an order depends on
the samples, the protocol and the seed alone."""

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.streams import STATA_BATCH, check_protocol, order, stream_seed

LABELS = [i % 10 for i in range(1000)]


@pytest.mark.parametrize("protocol", ["iid", "class-sequential", "dirichlet:0.1", "dirichlet:0.001", "continual"])
def test_every_protocol_is_a_seeded_permutation(protocol):
    picked = order(LABELS, protocol, 7)
    assert sorted(picked) == list(range(len(LABELS)))
    assert picked == order(LABELS, protocol, 7)
    assert picked != order(LABELS, protocol, 8)


def _runs(labels):
    """How many times the label changes along the stream, plus one."""
    return 1 + int(np.sum(np.diff(labels) != 0))


def test_class_sequential_shows_each_class_once_in_one_block():
    stream = [LABELS[i] for i in order(LABELS, "class-sequential", 3)]
    assert _runs(stream) == 10
    assert stream[:100] == [stream[0]] * 100


def test_smaller_gamma_correlates_the_stream_more():
    """StatA's low, medium and high correlation: fewer distinct classes per window as gamma falls, and
    an i.i.d. stream has the most."""
    labels = [i % 47 for i in range(47 * 40)]

    def distinct(protocol: str) -> float:
        values = []
        for seed in range(5):
            stream = np.array([labels[i] for i in order(labels, protocol, seed)])
            values += [len(set(stream[k:k + STATA_BATCH])) for k in range(0, len(stream) - STATA_BATCH + 1, STATA_BATCH)]
        return float(np.mean(values))

    iid, low, high = distinct("iid"), distinct("dirichlet:0.1"), distinct("dirichlet:0.001")
    assert iid > low > high
    assert iid > 44 and high < 12  # StatA's own sampler: about 44.5 and 7.7 on 47 classes x 40 (its batch of 128)


def test_protocols_are_checked_in_one_line():
    assert check_protocol("dirichlet:0.01") == "dirichlet:0.01"
    for bad in ("dirichlet", "dirichlet:0", "dirichlet:-1", "sorted", "iid "):
        with pytest.raises(HarnessError, match="--stream must be one of"):
            check_protocol(bad)


def test_stream_seeds_derive_from_the_run_seed_and_the_stream_index():
    seeds = [stream_seed(0, "iid", k) for k in range(20)]
    assert len(set(seeds)) == 20
    assert seeds[:10] == [stream_seed(0, "iid", k) for k in range(10)]  # --streams 20 holds --streams 10
    assert stream_seed(1, "iid", 0) != seeds[0]
