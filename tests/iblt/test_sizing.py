"""The sizing rule against its failure bound, the bytes it saves, and the decode contract at the
default sizing: exact histogram or a typed failure, never a wrong count (proofs/iblt-sizing.md)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.iblt import DecodeFailed, IbltParams, IbltSketch
from gptfl_secure.iblt.failure import (
    EXACT_SIZES,
    _log_no_singleton_exact,
    _log_no_singleton_saddle,
    failure_bound,
    log_stopping_set_terms,
)
from gptfl_secure.iblt.params import cells_per_subtable

# seed 47, capacity 2 (5 cells per sub-table): "cat" and "dog" share all three cells.
COLLIDING_SEED = 47


def previous_cells(capacity: int) -> int:
    """The sizing this rule replaced (1e-4 pair budget, no retry): the baseline for the bytes."""
    linear = math.ceil(1.1 * 1.222 * capacity / 3) + 4
    pair = math.ceil((max(capacity * (capacity - 1) / 2, 1.0) / 1e-4) ** (1 / 3))
    return 3 * max(linear, pair)


@pytest.mark.parametrize("max_failure", [0.01, 1e-4])
def test_rule_meets_the_failure_bound_at_every_capacity_up_to_1000(max_failure):
    for n in range(1, 1001):
        w = cells_per_subtable(n, 3, max_failure)
        assert failure_bound(n, w, 3) <= max_failure, (n, w)


@pytest.mark.parametrize("repetitions", [3, 4, 5, 6])
@pytest.mark.parametrize("max_failure", [0.1, 0.01, 1e-4, 1e-6, 1e-9, 1e-12])
def test_rule_meets_the_failure_bound_across_capacities_and_repetitions(repetitions, max_failure):
    for n in [*range(1, 40), 50, 77, 100, 150, 300, 500, 800, 1500, 2500, 4000, 10_000, 30_000]:
        w = cells_per_subtable(n, repetitions, max_failure)
        assert failure_bound(n, w, repetitions) <= max_failure, (n, w)


def test_rule_meets_the_failure_bound_at_large_capacities():
    for n in (10**5, 3 * 10**5, 10**6):
        assert failure_bound(n, cells_per_subtable(n, 3), 3) <= 0.01


def test_expected_upload_drops_3x_at_every_capacity_up_to_1000():
    """Expected cells with retries, 1 + p + p^2 at the bound p, against the previous sizing; at
    capacity 50 with 64-byte keys the previous table was 9,702 field elements."""
    assert previous_cells(50) * IbltParams(capacity=50).cell_width == 9702
    for n in range(1, 1001):
        p = IbltParams(capacity=n)
        expected = p.num_cells * (1 + p.max_failure + p.max_failure**2)
        assert 3 * expected <= previous_cells(n), n


def test_the_bound_is_exact_for_two_keys_and_the_saddle_bounds_the_exact_terms():
    for w in (1, 2, 5, 17, 1000):
        assert failure_bound(2, w, 3) == pytest.approx(w**-3, rel=1e-12)
    import numpy as np

    log_factorial = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, EXACT_SIZES + 1)))))
    s = np.arange(2, EXACT_SIZES + 1)
    for w in (3, 10, 51, 400):
        exact = np.array([_log_no_singleton_exact(int(v), w) for v in s])
        assert np.all(_log_no_singleton_saddle(s, w, log_factorial) >= exact - 1e-9)
    # q_4(w) = (1 + 3(w - 1)) / w^3: four keys in one cell, or two pairs in two cells.
    assert math.exp(_log_no_singleton_exact(4, 7)) == pytest.approx((1 + 3 * 6) / 7**3)
    assert log_stopping_set_terms(1, 5, 3).size == 0 and failure_bound(1, 1, 3) == 0.0


def test_measured_stall_rate_at_small_capacities_is_within_the_bound():
    """Deterministic: 1,500 seeds at capacity 2, 5 and 10 (load = capacity). The pair term is
    exact at capacity 2 (1/125); at most 3x the bound plus 10 stalls (far beyond chance)."""
    total = 0
    for capacity in (2, 5, 10):
        params = IbltParams(capacity=capacity)
        bound = failure_bound(capacity, params.subtable_cells, 3)
        stalls = 0
        for seed in range(1500):
            names = [f"{seed}-{i}" for i in range(capacity)]
            result = IbltSketch.from_keys(params.with_seed(seed), names).decode()
            stalls += not result.complete
            assert all(result.counts[k] == 1 for k in result.counts)
        assert stalls <= 3 * bound * 1500 + 10, (capacity, stalls, bound)
        total += stalls
    assert total > 0  # the default sizing does stall, rarely: the retry loop is needed


def test_two_keys_sharing_all_cells_raise_the_typed_failure():
    params = IbltParams(capacity=2, seed=COLLIDING_SEED)
    sketch = IbltSketch.from_keys(params, ["cat", "dog"])
    with pytest.raises(DecodeFailed, match="decode incomplete") as info:
        sketch.decode_exact()
    result = info.value.result
    assert result.counts == {} and not result.complete
    assert result.undecoded_cells == 3 and result.min_keys == 2 <= params.capacity
    fresh = params.with_seed(params.retry_seed(2))
    assert IbltSketch.from_keys(fresh, ["cat", "dog"]).decode_exact() == {"cat": 1, "dog": 1}


def test_retry_seeds_are_public_distinct_and_start_with_the_seed():
    params = IbltParams(seed=5)
    seeds = [params.retry_seed(a) for a in range(1, 6)]
    assert seeds[0] == 5 and len(set(seeds)) == 5
    assert seeds == [IbltParams(seed=5).retry_seed(a) for a in range(1, 6)]
    with pytest.raises(ValueError):
        params.retry_seed(0)


def test_an_over_capacity_stall_reports_more_keys_than_capacity():
    params = IbltParams(capacity=5, seed=1)
    names = [f"k{i}" for i in range(60)]
    with pytest.raises(DecodeFailed) as info:
        IbltSketch.from_keys(params, names).decode_exact()
    result = info.value.result
    assert params.capacity < result.min_keys <= 60 <= result.estimated_keys


keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)


@st.composite
def sums_within_capacity(draw):
    """Default-sized params (small capacities stall most often), and client key sets whose union
    has at most ``capacity`` keys."""
    capacity = draw(st.integers(1, 12))
    universe = draw(st.lists(keys, unique=True, max_size=capacity))
    clients = draw(st.lists(st.sets(st.sampled_from(universe)) if universe else st.just(set()),
                            min_size=1, max_size=6))
    return IbltParams(capacity=capacity, seed=draw(st.integers(0, 2**64 - 1))), clients


@given(sums_within_capacity())
def test_decode_within_capacity_is_exact_or_raises_the_typed_failure(case):
    params, clients = case
    truth = dict(Counter(k for ks in clients for k in ks))
    total = sum(IbltSketch.from_keys(params, sorted(ks)) for ks in clients)
    try:
        counts = total.decode_exact()
    except DecodeFailed as stall:
        assert all(truth[k] == c for k, c in stall.result.counts.items())
        assert stall.result.min_keys <= params.capacity
        return
    assert counts == truth


def test_stalls_at_capacity_are_retried_and_never_wrong_for_random_labels():
    """Capacity 3 (stalls ~0.6%): 2,000 fresh random sums; each decode is exact or a typed
    failure whose partial counts are exact, and the fresh-seed retry decodes it."""
    rng = random.Random(0)
    params, stalls = IbltParams(capacity=3), 0
    for _ in range(2000):
        names = [f"{rng.getrandbits(40):x}" for _ in range(3)]
        attempt = params.with_seed(rng.getrandbits(64))
        try:
            counts = IbltSketch.from_keys(attempt, names).decode_exact()
        except DecodeFailed as stall:
            stalls += 1
            assert set(stall.result.counts) <= set(names)
            retry = attempt.with_seed(attempt.retry_seed(2))
            counts = IbltSketch.from_keys(retry, names).decode_exact()
        assert counts == dict.fromkeys(names, 1)
    assert stalls < 40
