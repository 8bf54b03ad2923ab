"""The protocol server's boundary is typed: whatever a client sends, the server never raises
anything but SecAggAbort, and the sum stays exact over the clients it includes.

Each property drives a real session (``run_masked_sum``) whose network replaces some clients'
messages, at random steps, by values of any type: None, numbers, strings, lists, dicts, bytes of
any length (far over a step's size bound included), a message from another step, another client's
message. Then either the session completes and its total is the sum of the included clients'
inputs, each of which sent an honest masked input, or it aborts with SecAggAbort, whose partial
record holds no more than two messages per sender and step, none over the step's bound + 1.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptfl_secure.protocols import STEPS, SecAggAbort, SecAggConfig, SecAggServer, run_masked_sum
from gptfl_secure.protocols.server import MAX_KEPT_PER_SENDER, max_message_bytes

from .seeded import deterministic_randomness

Q = 2**16
D = 8

junk = st.one_of(
    st.none(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=20),
    st.lists(st.integers(0, 255), max_size=8), st.dictionaries(st.text(max_size=3),
                                                               st.integers(), max_size=3),
    st.binary(max_size=300), st.just(b"\x00" * 1_000_000), st.just(bytearray(b"GSA\x02")),
    st.sampled_from(["other-step", "other-client", "twice"]),
)


@st.composite
def sessions(draw):
    n = draw(st.integers(3, 6))
    t = draw(st.integers(n // 2 + 1, n))
    k = draw(st.sampled_from([None, 2])) if n >= 5 else None
    if k is not None:
        t = 2
    cfg = SecAggConfig(n, t, D, Q, neighbors=k)
    hits = draw(st.dictionaries(st.tuples(st.sampled_from(STEPS), st.integers(0, n - 1)), junk,
                                max_size=4))
    return cfg, hits, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(case=sessions())
def test_any_reply_of_any_type_is_a_dropout_never_an_exception(case):
    cfg, hits, seed = case
    rng = np.random.default_rng(seed)
    inputs = {c: rng.integers(0, Q, D, dtype=np.uint64) for c in range(cfg.num_clients)}
    sent: dict[tuple[str, int], bytes] = {}
    tampered: set[int] = set()

    def network(step: str, sender: int, data: bytes):
        sent[(step, sender)] = data
        if (step, sender) not in hits:
            return data
        tampered.add(sender)
        value = hits[(step, sender)]
        if value == "other-step":
            earlier = [v for (s, c), v in sent.items() if c == sender and s != step]
            return earlier[-1] if earlier else b""
        if value == "other-client":
            others = [v for (s, c), v in sent.items() if s == step and c != sender]
            return others[-1] if others else None
        if value == "twice":
            return data  # delivered once here; see test_a_sender_heard_twice_is_dropped
        return value

    with deterministic_randomness(seed):
        try:
            result = run_masked_sum(cfg, inputs, tamper=network, seed=seed)
        except SecAggAbort as abort:
            record = abort.partial
            assert record is not None and record.abort_reason == str(abort)
            transcript = record.transcript
        else:
            expected = sum(inputs[c] for c in result.included) % Q
            assert np.array_equal(result.total, expected)
            assert len(result.included) >= cfg.threshold
            transcript = result.transcript
    kept = Counter((e.step, e.sender) for e in transcript)
    assert max(kept.values(), default=0) <= MAX_KEPT_PER_SENDER
    for e in transcript:
        assert len(e.data) <= max_message_bytes(cfg, e.step) + 1


def test_a_sender_heard_twice_is_dropped_and_junk_pairs_are_rejected():
    """Pairs that are not (client id, bytes), senders outside u32, a sender heard twice: all are
    rejections, recorded at most twice per sender, and the session goes on with the rest."""
    cfg = SecAggConfig(4, 3, D, Q)
    server = SecAggServer(cfg, {c: bytes([c + 1]) * 32 for c in range(4)}, b"s" * 32)
    with pytest.raises(SecAggAbort, match="0 survivors < threshold 3"):
        server.advertise_keys([(0, None), (1, b"x" * 10_000), ("2", b""), (-1, b""),
                               (2**32, b""), 7, (3, b"a"), (3, b"b"), (3, b"c")])
    assert set(server.rejected) == {-1, 0, 1, 3}
    assert "payload is a NoneType" in server.rejected[0]
    assert "exceed the step's bound" in server.rejected[1]
    assert "duplicated" in server.rejected[3]
    assert [len(e.data) for e in server.transcript if e.sender == 1] == [
        max_message_bytes(cfg, "advertise_keys") + 1]
    assert sum(e.sender == 3 for e in server.transcript) == MAX_KEPT_PER_SENDER
    assert server.unrecorded == {3: 1}
