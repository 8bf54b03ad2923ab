"""Label discovery: the decoded histogram equals the true one."""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.iblt import IbltParams
from gptfl_secure.sim.label_discovery import discover_labels

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
