"""Label discovery: the decoded histogram equals the true one."""

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.iblt import IbltParams, IbltSketch
from gptfl_secure.pipeline.aggregation import SecureAggregator
from gptfl_secure.pipeline.discovery import (
    LabelDiscoveryFailed,
    decode_retries,
    discover_labels,
    discover_with,
)

label_sets = st.dictionaries(
    st.integers(0, 200), st.sets(st.text(min_size=1, max_size=12), max_size=6), min_size=1,
    max_size=30,
)


@given(label_sets)
def test_label_discovery_equals_true_histogram(client_labels):
    truth = Counter(label for labels in client_labels.values() for label in labels)
    found = discover_labels(client_labels, IbltParams(capacity=200))
    assert found.complete
    assert found.counts == dict(truth)
    assert found.participants == len(client_labels)


def test_over_capacity_decode_is_retried_with_a_fresh_seed_at_the_estimated_load():
    client_labels = {i: {f"label-{i}-{j}" for j in range(10)} for i in range(30)}  # 300 labels
    truth = {label: 1 for labels in client_labels.values() for label in labels}
    lines = []
    found = discover_labels(client_labels, IbltParams(capacity=14), log=lines.append)
    assert (found.attempts, found.complete) == (2, True) and found.capacity >= 300
    assert found.counts == truth and len(found.stalls) == 1
    assert found.to_json()["stalled_decodes"] == list(found.stalls)
    assert "retrying with a fresh session and hash seed" in lines[0]


def test_a_stall_within_capacity_is_retried_with_a_fresh_seed_at_the_same_capacity():
    """Seed 47: 'cat' and 'dog' share all three cells of the capacity-2 table (a stall that
    happens with probability 1/125); the retry's fresh seed separates them."""
    seeds = []

    def aggregate(vectors, modulus):
        return SecureAggregator("full")(vectors, modulus)

    def spy(p, attempt):
        seeds.append(p.seed)
        return aggregate({c: IbltSketch.from_keys(p, sorted(ls)).to_vector()
                          for c, ls in {0: {"cat"}, 1: {"dog", "cat"}}.items()}, p.modulus)

    params = IbltParams(capacity=2, seed=47)
    found = discover_with(spy, params)
    assert (found.attempts, found.capacity, found.counts) == (2, 2, {"cat": 2, "dog": 1})
    assert seeds == [47, params.retry_seed(2)] and len(found.stalls) == 1
    with pytest.raises(LabelDiscoveryFailed, match="all 1 decodes stalled") as info:
        discover_with(spy, params, retries=0)
    assert len(info.value.stalls) == 1 and not info.value.aborts


def test_default_retries_bound_the_stall_probability_by_1e_6():
    assert decode_retries(IbltParams()) == 2  # 0.01^3 = 1e-6
    assert decode_retries(IbltParams(max_failure=1e-3)) == 1
    assert decode_retries(IbltParams(max_failure=1e-6)) == 0
    assert decode_retries(IbltParams(max_failure=0.1)) == 5


def _aborting(times: int):
    """An aggregator whose first ``times`` sessions abort (too few clients answered)."""
    from gptfl_secure.pipeline.aggregation import SecureAggregator
    from gptfl_secure.protocols import SecAggAbort

    calls = []

    def aggregate(vectors, modulus):
        calls.append(len(vectors))
        if len(calls) <= times:
            raise SecAggAbort("masked_input", 1, 2)
        return SecureAggregator("full")(vectors, modulus)

    return aggregate, calls


def test_an_aborted_session_is_retried_with_a_fresh_one():
    client_labels = {0: {"cat"}, 1: {"dog", "cat"}, 2: {"owl"}}
    aggregate, calls = _aborting(2)
    lines = []
    found = discover_labels(client_labels, IbltParams(capacity=20), aggregate, log=lines.append)
    assert (found.attempts, found.complete, len(calls)) == (3, True, 3)
    assert found.counts == {"cat": 2, "dog": 1, "owl": 1}
    assert len(found.aborts) == 2 and found.to_json()["aborted_sessions"] == list(found.aborts)
    assert sum("retrying with a fresh session" in line for line in lines) == 2


def test_label_discovery_stops_with_an_explained_error_when_every_session_aborts():
    aggregate, calls = _aborting(10)
    with pytest.raises(LabelDiscoveryFailed, match="all 3 sessions aborted.*1 survivors") as info:
        discover_labels({0: {"cat"}, 1: {"dog"}}, IbltParams(capacity=20), aggregate)
    assert len(info.value.aborts) == 3 and len(calls) == 3
    aggregate, calls = _aborting(10)
    with pytest.raises(LabelDiscoveryFailed, match="all 1 sessions"):
        discover_labels({0: {"cat"}}, IbltParams(capacity=20), aggregate, abort_retries=0)
