"""Label discovery: the decoded histogram equals the true one."""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.iblt import IbltParams
from gptfl_secure.pipeline.discovery import discover_labels

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


def test_incomplete_decode_retries_once_with_double_capacity():
    client_labels = {i: {f"label-{i}-{j}" for j in range(10)} for i in range(30)}  # 300 labels
    truth = {label: 1 for labels in client_labels.values() for label in labels}
    # 291 cells cannot hold 300 keys; the retry's 468 cells can.
    found = discover_labels(client_labels, IbltParams(capacity=14), retries=1)
    assert (found.attempts, found.capacity, found.complete) == (2, 28, True)
    assert found.counts == truth
    # Still over capacity after one retry: incomplete, but exact where listed.
    found = discover_labels(client_labels, IbltParams(capacity=5), retries=1)
    assert (found.attempts, found.capacity, found.complete) == (2, 10, False)
    assert found.counts and all(truth[k] == v for k, v in found.counts.items())


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
    import pytest

    from gptfl_secure.pipeline.discovery import LabelDiscoveryFailed

    aggregate, calls = _aborting(10)
    with pytest.raises(LabelDiscoveryFailed, match="all 3 sessions aborted.*1 survivors") as info:
        discover_labels({0: {"cat"}, 1: {"dog"}}, IbltParams(capacity=20), aggregate)
    assert len(info.value.aborts) == 3 and len(calls) == 3
    aggregate, calls = _aborting(10)
    with pytest.raises(LabelDiscoveryFailed, match="all 1 sessions"):
        discover_labels({0: {"cat"}}, IbltParams(capacity=20), aggregate, abort_retries=0)
