"""The masked sum is exact for any dropout schedule with >= t survivors; below t it aborts."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.protocols import STEPS, SecAggAbort, SecAggConfig, run_masked_sum

MODULI = [2, 7, 2**8, 2**16, 2**32, 1_000_003, 2**61 - 1, 2**62]


def expected_sum(inputs, included, q):
    total = 0
    for cid in included:
        total = total + inputs[cid].astype(object)
    return np.asarray(total % q if len(included) else np.zeros(1, object), dtype=object)


def survivors_by_step(clients, dropouts):
    """U1..U5 as the schedule dictates: who is still speaking at each step."""
    return {
        step: frozenset(c for c in clients
                        if c not in dropouts or STEPS.index(dropouts[c]) > i)
        for i, step in enumerate(STEPS)
    }


@st.composite
def sessions(draw, graph):
    n = draw(st.integers(3, 40 if graph == "full" else 24))
    q = draw(st.sampled_from(MODULI))
    d = draw(st.integers(1, 40))
    if graph == "full":
        k = None
        t = draw(st.integers(n // 2 + 1, n))  # more than half the group: see SecAggConfig
    else:
        k = draw(st.sampled_from([2, 4, 6]))
        t = draw(st.integers(k // 2 + 1, k))
    ids = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    inputs = {cid: rng.integers(0, q, d, dtype=np.uint64) for cid in ids}
    drop_rate = draw(st.sampled_from([0.0, 0.1, 0.3, 0.6]))
    dropouts = {
        cid: draw(st.sampled_from(STEPS)) for cid in ids if draw(st.floats(0, 1)) < drop_rate
    }
    return SecAggConfig(num_clients=n, threshold=t, vector_length=d, modulus=q, neighbors=k), \
        inputs, dropouts


@given(sessions("full"))
def test_sum_exact_for_any_dropout_schedule(session):
    cfg, inputs, dropouts = session
    alive = survivors_by_step(inputs, dropouts)
    must_abort = any(len(alive[s]) < cfg.threshold for s in STEPS)
    if must_abort:
        with pytest.raises(SecAggAbort) as exc:
            run_masked_sum(cfg, inputs, dropouts)
        first_short = next(s for s in STEPS if len(alive[s]) < cfg.threshold)
        assert exc.value.step == first_short and exc.value.threshold == cfg.threshold
        return
    result = run_masked_sum(cfg, inputs, dropouts)
    assert result.included == alive["masked_input"]
    assert result.total.tolist() == expected_sum(inputs, result.included, cfg.modulus).tolist()


@given(sessions("plus"))
def test_secagg_plus_sum_exact_or_clean_abort(session):
    cfg, inputs, dropouts = session
    alive = survivors_by_step(inputs, dropouts)
    try:
        result = run_masked_sum(cfg, inputs, dropouts)
    except SecAggAbort as exc:
        assert exc.step in STEPS and exc.survivors < exc.threshold == cfg.threshold
        return
    # Clients whose neighbourhood fell below t abort on their own: included can only shrink.
    assert result.included <= alive["masked_input"]
    assert len(result.included) >= cfg.threshold
    assert result.total.tolist() == expected_sum(inputs, result.included, cfg.modulus).tolist()


def test_secagg_plus_with_no_dropouts_includes_everyone():
    rng = np.random.default_rng(0)
    cfg = SecAggConfig(num_clients=30, threshold=4, vector_length=50, neighbors=6)
    inputs = {i: rng.integers(0, 2**32, 50, dtype=np.uint64) for i in range(30)}
    result = run_masked_sum(cfg, inputs)
    assert result.included == frozenset(range(30))
    assert result.total.tolist() == expected_sum(inputs, range(30), 2**32).tolist()


def test_masked_inputs_on_the_wire_hide_the_inputs():
    """With all inputs zero, what the server receives at masked_input is the masks alone: it
    must look uniform and differ between clients, not be zero."""
    cfg = SecAggConfig(num_clients=5, threshold=3, vector_length=4096, modulus=2**16)
    inputs = {i: np.zeros(4096, np.uint64) for i in range(5)}
    result = run_masked_sum(cfg, inputs)
    assert result.total.tolist() == [0] * 4096
    masked = [e.data for e in result.transcript if e.step == "masked_input"]
    assert len(masked) == 5
    from gptfl_secure.protocols import messages as m
    vectors = [np.frombuffer(raw[m._HEADER.size + 4 : -64], "<u4") for raw in masked]
    for y in vectors:
        assert np.count_nonzero(y) > 4000
        assert 2**16 * 0.45 < y.mean() < 2**16 * 0.55
    assert len({y.tobytes() for y in vectors}) == 5


def test_transcript_and_stats_cover_every_round():
    rng = np.random.default_rng(1)
    cfg = SecAggConfig(num_clients=6, threshold=4, vector_length=10)
    inputs = {i: rng.integers(0, 2**32, 10, dtype=np.uint64) for i in range(6)}
    result = run_masked_sum(cfg, inputs, {5: "masked_input"})
    steps = [e.step for e in result.transcript]
    assert steps.count("advertise_keys") == 6 and steps.count("masked_input") == 5
    assert set(result.stats.server_seconds) == set(STEPS)
    assert result.stats.client_upload_bytes["masked_input"][0] > 10 * 4
    assert 5 not in result.stats.client_seconds["masked_input"]


# ------------------------------------------------------------------- robustness on the wire
def _tamper_one(target, step, how):
    def tamper(s, sender, data):
        if s != step or sender != target:
            return data
        return how(data)
    return tamper


ATTACKS = {
    "truncated": lambda d: d[: len(d) // 2],
    "bit_flipped": lambda d: d[:60] + bytes([d[60] ^ 0x01]) + d[61:],
    "signature_flipped": lambda d: d[:-1] + bytes([d[-1] ^ 0x80]),
    "oversized": lambda d: d + b"\x00" * 100,
    "empty": lambda d: b"",
    "lost": lambda d: None,
}


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_corrupted_client_message_drops_that_client_only(step, attack):
    rng = np.random.default_rng(2)
    cfg = SecAggConfig(num_clients=6, threshold=4, vector_length=20, modulus=2**20)
    inputs = {i: rng.integers(0, 2**20, 20, dtype=np.uint64) for i in range(6)}
    result = run_masked_sum(cfg, inputs, tamper=_tamper_one(2, step, ATTACKS[attack]))
    expected_in = step in ("consistency_check", "unmasking")  # its input already arrived
    assert (2 in result.included) == expected_in
    assert result.included >= frozenset(range(6)) - {2}
    assert result.total.tolist() == expected_sum(inputs, result.included, 2**20).tolist()
    if attack != "lost":
        assert 2 in result.stats.server_rejected


def test_message_replayed_from_another_client_is_rejected():
    """Client 1's message delivered as client 2's: signed by 1, so 2 is dropped."""
    rng = np.random.default_rng(3)
    cfg = SecAggConfig(num_clients=5, threshold=3, vector_length=8)
    inputs = {i: rng.integers(0, 2**32, 8, dtype=np.uint64) for i in range(5)}
    seen = {}

    def tamper(step, sender, data):
        seen[(step, sender)] = data
        if step == "masked_input" and sender == 2:
            return seen[(step, 1)]
        return data

    result = run_masked_sum(cfg, inputs, tamper=tamper)
    assert 2 not in result.included and "delivered by 2" in result.stats.server_rejected[2]
    assert result.total.tolist() == expected_sum(inputs, result.included, 2**32).tolist()


@pytest.mark.parametrize("d, reason", [
    (16, "expected a MASKED_INPUT"),  # the advertisement fits the step's size bound: parsed
    (8, "exceed the step's bound"),  # it does not: rejected unparsed (and not recorded)
])
def test_message_from_an_earlier_round_is_rejected(d, reason):
    rng = np.random.default_rng(4)
    cfg = SecAggConfig(num_clients=5, threshold=3, vector_length=d)
    inputs = {i: rng.integers(0, 2**32, d, dtype=np.uint64) for i in range(5)}
    first = {}

    def tamper(step, sender, data):
        first.setdefault(sender, data)  # the advertisement
        return first[sender] if (step, sender) == ("masked_input", 4) else data

    result = run_masked_sum(cfg, inputs, tamper=tamper)
    assert 4 not in result.included and reason in result.stats.server_rejected[4]


def test_message_from_another_session_is_rejected():
    rng = np.random.default_rng(5)
    cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=8)
    inputs = {i: rng.integers(0, 2**32, 8, dtype=np.uint64) for i in range(4)}
    old = {}
    run_masked_sum(cfg, inputs, seed=1, tamper=lambda s, c, d: old.setdefault((s, c), d))
    result = run_masked_sum(
        cfg, inputs, seed=2,
        tamper=lambda s, c, d: old[(s, c)] if (s, c) == ("masked_input", 0) else d,
    )
    assert 0 not in result.included and "another session" in result.stats.server_rejected[0]


# ------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"threshold": 0}, ValueError, "threshold=0"),
        ({"threshold": 6}, ValueError, "threshold=6"),
        ({"modulus": 1}, ValueError, "modulus=1"),
        ({"modulus": 2**62 + 1}, ValueError, "modulus"),
        ({"vector_length": 0}, ValueError, "vector_length=0"),
        ({"neighbors": 3}, ValueError, "even"),
        ({"neighbors": 2, "threshold": 3}, ValueError, "threshold=3"),
        ({"threshold": 2}, ValueError, r"threshold=2: must be in \[3, 5\], more than half"),
        ({"num_clients": 6, "threshold": 3}, ValueError, "more than half of the group of 6"),
        ({"neighbors": 4, "threshold": 2}, ValueError, "more than half of the group of 5"),
        ({"num_clients": 2.0}, TypeError, "num_clients"),
    ],
)
def test_bad_config_is_rejected(kwargs, error, match):
    args = {"num_clients": 5, "threshold": 3, "vector_length": 4} | kwargs
    with pytest.raises(error, match=match):
        SecAggConfig(**args)


def _inputs(n=4, d=4, q=2**32):
    return {i: np.zeros(d, np.uint64) for i in range(n)}


@pytest.mark.parametrize(
    "inputs, dropouts, error, match",
    [
        (_inputs(3), {}, ValueError, "3 inputs for num_clients=4"),
        ({**_inputs(3), 3: np.zeros(5, np.uint64)}, {}, ValueError, "shape"),
        ({**_inputs(3), 3: np.full(4, 2**32, np.uint64)}, {}, ValueError, "outside"),
        ({**_inputs(3), 3: np.zeros(4)}, {}, TypeError, "integer"),
        (_inputs(), {9: "share_keys"}, ValueError, "unknown client 9"),
        (_inputs(), {1: "round_seven"}, ValueError, "dropout step"),
    ],
)
def test_bad_inputs_are_rejected_before_any_work(inputs, dropouts, error, match):
    cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=4)
    with pytest.raises(error, match=match):
        run_masked_sum(cfg, inputs, dropouts)


def test_duplicated_message_drops_its_sender():
    """Two messages from one sender in one round: neither is trusted, the sender is dropped."""
    from gptfl_secure.protocols import IdentityKey, SecAggClient, SecAggServer

    cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=4)
    sid = b"d" * 32
    ids = {i: IdentityKey() for i in range(4)}
    public = {i: k.public for i, k in ids.items()}
    clients = {i: SecAggClient(cfg, i, ids[i], public, sid) for i in range(4)}
    server = SecAggServer(cfg, public, sid)
    adverts = [(i, c.advertise_keys()) for i, c in clients.items()]
    out = server.advertise_keys(adverts + [adverts[0]])
    assert 0 not in out and server.rejected[0] == "advertise_keys: duplicated message"
    assert sorted(out) == [1, 2, 3]


def _malicious_unmasking(monkeypatch, liar, corrupt_share):
    """Client ``liar`` signs a well-formed but wrong share at unmasking."""
    from gptfl_secure.protocols import SecAggClient
    from gptfl_secure.protocols import messages as m

    honest = SecAggClient.unmasking

    def unmasking(self, signatures):
        out = honest(self, signatures)
        if self.id != liar:
            return out
        env = m.open_envelope(out, m.MsgType.UNMASK, self.session_id)
        shares = sorted(m.read_unmask(env.body).items())
        entries = [(p, k, corrupt_share(s)) for p, (k, s) in shares]
        return m.seal(m.MsgType.UNMASK, self.session_id, self.id, m.unmask_body(entries),
                      self._identity, self._context)  # signed in the session's context

    monkeypatch.setattr(SecAggClient, "unmasking", unmasking)


@pytest.mark.parametrize("dropped", [False, True])
def test_wrong_share_is_caught_by_its_commitment_and_the_sum_stays_exact(monkeypatch, dropped):
    """Client 0 lies about every share it reveals; client 3 may have dropped (so its mask key
    is rebuilt). The server finds the lies, drops those shares and still sums exactly."""
    flip = lambda s: s[:-1] + bytes([s[-1] ^ 1])  # noqa: E731
    _malicious_unmasking(monkeypatch, liar=0, corrupt_share=flip)
    rng = np.random.default_rng(6)
    cfg = SecAggConfig(num_clients=6, threshold=4, vector_length=16)
    inputs = {i: rng.integers(0, 2**32, 16, dtype=np.uint64) for i in range(6)}
    result = run_masked_sum(cfg, inputs, {3: "masked_input"} if dropped else None)
    assert result.total.tolist() == expected_sum(inputs, result.included, 2**32).tolist()
    assert "breaks its commitment" in result.stats.server_rejected[0]


def test_out_of_field_share_drops_the_sender_without_crashing(monkeypatch):
    _malicious_unmasking(monkeypatch, liar=1, corrupt_share=lambda s: b"\xff" * len(s))
    rng = np.random.default_rng(7)
    cfg = SecAggConfig(num_clients=5, threshold=3, vector_length=8)
    inputs = {i: rng.integers(0, 2**32, 8, dtype=np.uint64) for i in range(5)}
    result = run_masked_sum(cfg, inputs)
    assert "not a field element" in result.stats.server_rejected[1]
    assert result.total.tolist() == expected_sum(inputs, result.included, 2**32).tolist()


def test_an_abort_after_a_failed_reconstruction_says_so(monkeypatch):
    """Two liars among four clients at t = 3: every secret has 4 holders, two of whose shares
    break their commitments, so only 2 < t shares are usable. The abort names the failed
    reconstruction and the client, not "survivors < threshold" (every client survived), and its
    partial record says the same. The liars flip different bits (errors of +-1 and +-8): with
    equal errors, the first interpolation (Lagrange weights 3, -3, 1 at x = 1, 2, 3) would cancel
    them and rebuild the right secret, which is no abort at all."""

    def flip(s: bytes, bit: int) -> bytes:
        return s[:-1] + bytes([s[-1] ^ (1 << bit)])

    from gptfl_secure.protocols import SecAggClient
    from gptfl_secure.protocols import messages as m

    honest = SecAggClient.unmasking

    def unmasking(self, signatures):
        out = honest(self, signatures)
        if self.id not in (0, 1):
            return out
        env = m.open_envelope(out, m.MsgType.UNMASK, self.session_id)
        bit = 0 if self.id == 0 else 3
        entries = [(p, k, flip(s, bit)) for p, (k, s) in sorted(m.read_unmask(env.body).items())]
        return m.seal(m.MsgType.UNMASK, self.session_id, self.id, m.unmask_body(entries),
                      self._identity, self._context)

    monkeypatch.setattr(SecAggClient, "unmasking", unmasking)
    cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=8)
    inputs = {i: np.full(8, i, dtype=np.uint64) for i in range(4)}
    with pytest.raises(SecAggAbort) as caught:
        run_masked_sum(cfg, inputs)
    abort = caught.value
    assert abort.cause == SecAggAbort.RECONSTRUCTION_FAILED and abort.step == "unmasking"
    assert "could not be rebuilt" in str(abort) and "survivors <" not in str(abort)
    assert "2 usable shares, threshold 3" in str(abort)
    assert abort.partial.abort_reason == str(abort) and abort.partial.included == frozenset()
