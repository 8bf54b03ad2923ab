"""Dirichlet partitioner and client sampling."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.learning.data import load_digits_split
from gptfl_secure.learning.partition import dirichlet_partition, sample_clients


@given(
    n_labels=st.integers(1, 10),
    n=st.integers(50, 400),
    clients=st.integers(1, 10),
    alpha=st.floats(0.05, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_partition_covers_every_example_once_with_min_size(n_labels, n, clients, alpha, seed):
    labels = np.arange(n) % n_labels
    parts = dirichlet_partition(labels, clients, alpha, min_size=2, seed=seed, max_attempts=5000)
    assert len(parts) == clients
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    assert min(len(p) for p in parts) >= 2


def test_partition_is_deterministic_in_seed_and_varies_with_it():
    labels = np.arange(500) % 10
    a = dirichlet_partition(labels, 20, 0.5, seed=3)
    b = dirichlet_partition(labels, 20, 0.5, seed=3)
    c = dirichlet_partition(labels, 20, 0.5, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_small_alpha_skews_labels_more_than_large_alpha():
    labels = np.arange(2000) % 10

    def mean_distinct(alpha):
        parts = dirichlet_partition(labels, 20, alpha, seed=1)
        return np.mean([len(np.unique(labels[p])) for p in parts])

    assert mean_distinct(0.1) < 5 < mean_distinct(100.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_clients": 0}, "num_clients"),
        ({"alpha": 0.0}, "alpha"),
        ({"min_size": 50}, "min_size=50"),
    ],
)
def test_bad_partition_requests_are_rejected(kwargs, match):
    args = {"num_clients": 10, "alpha": 0.5, "min_size": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        dirichlet_partition(np.arange(100) % 10, **args)


def test_sample_clients_without_replacement():
    rng = np.random.default_rng(0)
    picked = sample_clients(50, 10, rng)
    assert len(set(picked.tolist())) == 10 and picked.max() < 50
    with pytest.raises(ValueError, match="cohort"):
        sample_clients(5, 6, rng)


def test_digits_split_is_stratified_and_disjoint():
    train, test = load_digits_split(test_fraction=0.2, seed=0)
    assert len(train) + len(test) == 1797
    assert train.label_names == tuple(str(d) for d in range(10))
    counts = np.bincount(test.y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # 20% of ~180 per digit
    assert train.x.shape[1:] == (1, 8, 8) and 0.0 <= train.x.min() and train.x.max() <= 1.0
