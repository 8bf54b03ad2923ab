"""Pipelined sessions on the Flower transport: round r+1's key advertisement and sharing travel in
round r's consistency-check and unmasking exchanges. Two overlapping sessions, the real ClientApp
handlers at every node, and a server that misbehaves across the sessions; proofs/
pipelined-rounds.md cites these tests."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("flwr")

from gptfl_secure.flower import client_app, server_app, wire  # noqa: E402
from gptfl_secure.protocols import STEPS, SecAggConfig, Step, messages  # noqa: E402

from .fakes import MOD, D, FakeNodes  # noqa: E402

N, T = 5, 3


def _inputs(r: int) -> dict[int, np.ndarray]:
    return {c: (np.arange(D, dtype=np.uint64) + 1) * (10 * r + c + 1) for c in range(N)}


def _give(nodes: FakeNodes, r: int) -> dict[int, np.ndarray]:
    vectors = _inputs(r)
    for c, ctx in nodes.contexts.items():
        client_app._record(ctx, client_app.INPUTS)[f"round-{r}"] = vectors[c].tobytes()
    return vectors


def _session(nodes: FakeNodes, r: int) -> server_app.FlowerSession:
    keys = nodes.keys()
    header = wire.SessionHeader(SecAggConfig(N, T, D, MOD), keys, wire.PURPOSE_ROUND, round=r)
    return server_app.FlowerSession(nodes.log, f"round{r}", header, set(keys))


def _pipelined(nodes: FakeNodes, first, second, slot=None) -> list[list[str]]:
    """The ServerApp's schedule for two rounds: round 1's set-up (2 exchanges), then for each
    round: masked input; its consistency check + the next round's advertisement; its
    unmasking + the next round's sharing. Returns each exchange's steps. ``slot["i"]`` is set
    to the exchange's place in that schedule (an exchange whose sessions have all ended is not
    made, and keeps its place)."""
    plan = [[first], [first], [first], [first, second], [first, second], [second], [second],
            [second]]
    done = []
    for i, sessions in enumerate(plan):
        if slot is not None:
            slot["i"] = i
        active = [s for s in sessions if s.step is not None]
        done.append([f"{s.name}/{s.step}" for s in active])
        server_app.exchange_steps(nodes, active, 1.0)
    return done


def _exact(session, vectors) -> None:
    result = session.result()
    expected = sum(vectors[c] for c in result.included) % MOD
    assert np.array_equal(result.total, expected)


def test_a_steady_round_is_three_exchanges_and_both_sums_are_exact():
    nodes = FakeNodes(N)
    first, second = _session(nodes, 1), _session(nodes, 2)
    v1, v2 = _give(nodes, 1), _give(nodes, 2)
    schedule = _pipelined(nodes, first, second)
    assert schedule[3] == ["round1/consistency_check", "round2/advertise_keys"]
    assert schedule[4] == ["round1/unmasking", "round2/share_keys"]
    assert schedule[5:] == [["round2/masked_input"], ["round2/consistency_check"],
                            ["round2/unmasking"]]
    assert first.result().included == second.result().included == frozenset(range(N))
    _exact(first, v1)
    _exact(second, v2)
    assert first.session_id != second.session_id
    for ctx in nodes.contexts.values():  # each node started each session once, kept no state
        assert set(client_app._record(ctx, client_app.LEDGER)) == {first.session_id.hex(),
                                                                  second.session_id.hex()}
        assert len(client_app._record(ctx, client_app.SESSIONS)) == 0


EXCHANGES = 8


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lost=st.lists(st.sets(st.integers(0, EXCHANGES - 1), max_size=3), min_size=N,
                     max_size=N))
def test_sums_are_exact_for_any_dropout_schedule_across_two_overlapping_sessions(lost):
    """``lost[c]``: the exchanges whose reply from client c never arrives (the node was down, or
    the message was lost). Each session's sum is exact over its included clients or the session
    aborts; a session completes whenever at least t clients answered all of its exchanges; a
    loss in one session's exchange touches the other only where both share that exchange."""
    slot = {"i": -1}

    def tamper(group, cid, rec):
        return None if slot["i"] in lost[cid] else rec

    nodes = FakeNodes(N, tamper)
    first, second = _session(nodes, 1), _session(nodes, 2)
    v1, v2 = _give(nodes, 1), _give(nodes, 2)
    _pipelined(nodes, first, second, slot)
    for session, vectors, mine in ((first, v1, range(0, 5)), (second, v2, range(3, 8))):
        steady = {c for c in range(N) if not lost[c] & set(mine)}
        if session.abort is not None:
            assert len(steady) < T, f"{session.name} aborted with {sorted(steady)} steady"
            continue
        _exact(session, vectors)
        assert steady <= session.result().included


def _malicious(nodes: FakeNodes, rewrite):
    """Wrap ``nodes.exchange`` so that ``rewrite(contents, seen)`` may alter the server's messages
    before they leave; ``seen`` maps (session id, step) to what was sent for it, by client."""
    inner, seen = nodes.exchange, {}

    def exchange(message_type, contents, timeout, group, **kw):
        rewrite(contents, seen)
        for key, content in contents.items():
            for i in range(wire.MAX_PARTS):
                if wire.part(i) in content:
                    rec = content[wire.part(i)]
                    seen.setdefault((rec["session"], rec["step"]), {})[key] = dict(rec)
        return inner(message_type, contents, timeout, group, **kw)

    nodes.exchange = exchange
    return seen


def _part(content, session_id: bytes):
    for i in range(wire.MAX_PARTS):
        if wire.part(i) in content and content[wire.part(i)]["session"] == session_id:
            return content[wire.part(i)]
    return None


def _replay_into_round_2(victim: int, step: Step):
    """Run the two pipelined rounds with a server that sends ``victim``, as round 2's ``step``,
    the payload it sent it for round 1's ``step``. Returns (nodes, sessions, inputs)."""
    nodes = FakeNodes(N)
    first, second = _session(nodes, 1), _session(nodes, 2)

    def rewrite(contents, seen):
        part = _part(contents.get(victim, {}), second.session_id)
        if part is not None and part["step"] == step.value:
            part["payload"] = seen[(first.session_id, step.value)][victim]["payload"]

    _malicious(nodes, rewrite)
    v1, v2 = _give(nodes, 1), _give(nodes, 2)
    _pipelined(nodes, first, second)
    return first, second, v1, v2


def test_a_round_r_message_moved_into_round_r_plus_1_is_refused_and_round_r_is_untouched():
    """The server sends client 0, as round 2's share_keys step, the key list it sent for round
    1's: signed for round 1's session, it is refused; client 0 aborts round 2 only."""
    first, second, v1, v2 = _replay_into_round_2(0, Step.SHARE_KEYS)
    assert first.result().included == frozenset(range(N))
    _exact(first, v1)
    assert second.result().included == frozenset(range(1, N))
    _exact(second, v2)
    assert 0 in second.stats.client_aborts


def test_a_masked_input_step_of_round_r_replayed_into_round_r_plus_1_is_refused():
    """Round 1's routed shares (encrypted under round 1's session keys) sent to client 2 as round
    2's masked-input step do not decrypt: client 2 aborts round 2 and never uploads for it."""
    first, second, v1, v2 = _replay_into_round_2(2, Step.MASKED_INPUT)
    assert first.result().included == frozenset(range(N))
    _exact(first, v1)
    assert second.result().included == frozenset({0, 1, 3, 4})
    _exact(second, v2)
    assert 2 in second.stats.client_aborts
    assert 2 not in second.stats.client_upload_bytes[Step.MASKED_INPUT]


def test_share_keys_before_advertise_keys_is_refused_and_the_other_session_goes_on():
    """Round 2's share_keys step sent to client 1 in place of its advertisement (the exchange that
    also carries round 1's consistency check): the node has no such session and refuses it;
    round 1's step in the same message is answered, and round 1 includes client 1."""
    nodes = FakeNodes(N)
    first, second = _session(nodes, 1), _session(nodes, 2)

    def rewrite(contents, seen):
        part = _part(contents.get(1, {}), second.session_id)
        if part is not None and part["step"] == Step.ADVERTISE_KEYS.value:
            part["step"] = Step.SHARE_KEYS.value
            part["payload"] = seen[(first.session_id, Step.SHARE_KEYS.value)][1]["payload"]

    _malicious(nodes, rewrite)
    v1, v2 = _give(nodes, 1), _give(nodes, 2)
    _pipelined(nodes, first, second)
    assert first.result().included == frozenset(range(N))
    _exact(first, v1)
    assert "no such session" in second.stats.client_aborts[1]
    assert second.result().included == frozenset({0, 2, 3, 4})
    _exact(second, v2)


def test_reusing_round_r_session_id_for_round_r_plus_1_is_refused_without_harming_round_r():
    """Round 2's advertisement carrying round 1's session id (while round 1 is in flight, in the
    same message as its consistency check): every node's ledger refuses it, and round 1 still
    completes with every client, its sum exact."""
    nodes = FakeNodes(N)
    first, second = _session(nodes, 1), _session(nodes, 2)

    def rewrite(contents, seen):
        for content in contents.values():
            part = _part(content, second.session_id)
            if part is not None and part["step"] == Step.ADVERTISE_KEYS.value:
                part["session"] = first.session_id

    _malicious(nodes, rewrite)
    v1 = _give(nodes, 1)
    _give(nodes, 2)
    _pipelined(nodes, first, second)
    assert first.result().included == frozenset(range(N))
    _exact(first, v1)
    assert second.abort is not None and second.abort.step is STEPS[0]
    assert all("was used before" in reason for reason in second.stats.client_aborts.values())
    assert len(second.stats.client_aborts) == N


def test_a_node_that_drops_in_round_r_after_sharing_is_recovered_and_round_r_plus_1_completes():
    """Client 4 misses round 1's masked input (its node was down for that exchange); round 1
    recovers its masks from the shares; it is back for round 2's set-up and round 2 includes
    it."""
    slot = {"i": -1}

    def tamper(group, cid, rec):
        return None if (cid == 4 and slot["i"] == 2) else rec

    nodes = FakeNodes(N, tamper)
    first, second = _session(nodes, 1), _session(nodes, 2)
    v1, v2 = _give(nodes, 1), _give(nodes, 2)
    _pipelined(nodes, first, second, slot)
    assert first.result().included == frozenset(range(4))
    _exact(first, v1)
    assert second.result().included == frozenset(range(N))
    _exact(second, v2)


def test_an_abort_of_round_r_leaves_round_r_plus_1_intact():
    """Three of five clients refuse round 1's consistency check (below t = 3 survivors):
    round 1 aborts in the exchange that carries round 2's advertisement, and round 2 completes
    with every client."""
    def tamper(group, cid, rec):
        return {"payload": 7} if group == "round1/consistency_check" and cid < 3 else rec

    nodes = FakeNodes(N, tamper)
    first, second = _session(nodes, 1), _session(nodes, 2)
    _give(nodes, 1)
    v2 = _give(nodes, 2)
    _pipelined(nodes, first, second)
    assert first.abort is not None and first.abort.step is Step.CONSISTENCY_CHECK
    assert second.result().included == frozenset(range(N))
    _exact(second, v2)


def test_overlapping_sessions_use_fresh_keys_and_distinct_contexts():
    """Round 2's key set-up overlaps round 1's end, yet every node advertises new keys for it,
    and the two session contexts (which every later signature and share ciphertext binds)
    differ: a key revealed for a dropout of one session opens nothing of the other."""
    nodes = FakeNodes(N)
    first, second = _session(nodes, 1), _session(nodes, 2)
    _give(nodes, 1), _give(nodes, 2)
    _pipelined(nodes, first, second)

    def advertised_keys(session):  # {client: (encryption public key, mask public key)}
        result = session.result().session
        return {e.sender: messages.read_advertise(messages.open_envelope(
            e.data, messages.MsgType.ADVERTISE, result.session_id).body)
            for e in result.transcript if e.step is Step.ADVERTISE_KEYS}

    one, two = advertised_keys(first), advertised_keys(second)
    assert set(one) == set(two) == set(range(N))
    every_key = [k for keys in (one, two) for pair in keys.values() for k in pair]
    assert len(set(every_key)) == 4 * N  # no key is used twice, across clients or sessions
    assert first.steps.server.context != second.steps.server.context
