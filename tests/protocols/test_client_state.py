"""The saved client state (``SecAggClient.export_state`` / ``restore_state``,
``protocols/client_state.py``): a client saved and restored between any two steps answers exactly
as the one that was never saved, and bytes that are not a valid saved state of this version are
refused with ``ClientStateError``, whatever is wrong with them."""

from __future__ import annotations

import base64
import functools
import hashlib
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.protocols import STEPS, IdentityKey, SecAggClient, SecAggConfig, SecAggServer
from gptfl_secure.protocols import client_state as cs
from gptfl_secure.protocols.config import SessionEnd, Step
from gptfl_secure.protocols.errors import ClientStateError

CONFIGS = {"full": SecAggConfig(5, 4, 8, 2**32), "plus": SecAggConfig(7, 3, 8, 2**20, neighbors=4)}


@functools.cache
def session(name: str):
    return _session(CONFIGS[name])


def _session(cfg: SecAggConfig):
    """Run with every client restored from its saved state before every step, and collect every
    saved state: (position, bytes, client id)."""
    n = cfg.num_clients
    sid = hashlib.sha256(b"client-state-test").digest()
    ids = {c: IdentityKey(bytes([c + 1]) * 32) for c in range(n)}
    public = {c: k.public for c, k in ids.items()}
    saved = {c: SecAggClient(cfg, c, ids[c], public, sid).export_state() for c in range(n)}
    states: list[tuple[object, bytes, int]] = [(Step.ADVERTISE_KEYS, saved[0], 0)]
    server = SecAggServer(cfg, public, sid)
    inputs = {c: np.full(cfg.vector_length, c + 1, dtype=np.uint64) for c in range(n)}
    outgoing = None
    for step in STEPS:
        replies = {}
        for c in sorted(saved) if outgoing is None else sorted(outgoing):
            if c == 1 and step is Step.MASKED_INPUT:
                continue  # shared its keys, never uploads: its masks are rebuilt from shares
            message = None if outgoing is None else outgoing[c]
            x = inputs[c] if step is Step.MASKED_INPUT else None
            client = SecAggClient.restore_state(saved[c], ids[c])
            twin = SecAggClient.restore_state(saved[c], ids[c])
            assert client.position == step
            replies[c] = client.respond(step, message, x)
            # A second restore of the same state answers the same bytes at every step that
            # draws no fresh randomness (share_keys draws b_u and Shamir coefficients).
            if step is not Step.SHARE_KEYS:
                assert twin.respond(step, message, x) == replies[c]
            saved[c] = client.export_state()
            assert SecAggClient.restore_state(saved[c], ids[c]).export_state() == saved[c]
            states.append((client.position, saved[c], c))
        outgoing = server.receive(step, replies)
    return outgoing, states, ids, inputs


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_client_restored_before_every_step_completes_the_session(name):
    out, states, _, inputs = session(name)
    n = CONFIGS[name].num_clients
    assert out.included == frozenset(range(n)) - {1}
    want = sum(int(inputs[c][0]) for c in out.included) % CONFIGS[name].modulus
    assert out.total.tolist() == [want] * CONFIGS[name].vector_length
    positions = {p for p, _, _ in states}
    assert positions == {*STEPS, SessionEnd.ABORTED}  # after unmasking every secret is gone


def test_the_identity_key_is_not_saved_and_must_be_the_enrolled_one():
    _, states, ids, _ = session("full")
    position, data, c = states[3]
    assert base64.b64encode(ids[c]._key.encode()).decode() not in data.decode()
    with pytest.raises(ClientStateError, match="identity key"):
        SecAggClient.restore_state(data, ids[c + 1])


def _loads(data: bytes) -> dict:
    return json.loads(data.decode())


def _dumps(saved: dict) -> bytes:
    """A saved state with its checksum recomputed, so that only the state's own checks stand."""
    saved["sha256"] = cs._digest(saved["state"])
    return json.dumps(saved).encode()


def test_the_saved_state_lists_exactly_the_declared_fields():
    _, states, _, _ = session("full")
    for _, data, _ in states:
        saved = _loads(data)
        assert set(saved) == {"version", "sha256", "state"} and saved["version"] == cs.VERSION
        assert set(saved["state"]) == {f.name for f in cs.fields(cs.ClientState)}


def test_other_versions_unknown_and_missing_fields_are_refused():
    _, states, ids, _ = session("full")
    _, data, c = states[8]
    for version in (0, 2, "1", True, None):
        saved = _loads(data)
        saved["version"] = version
        with pytest.raises(ClientStateError, match="version"):
            SecAggClient.restore_state(_dumps(saved), ids[c])
    saved = _loads(data)
    saved["state"]["extra"] = 1
    with pytest.raises(ClientStateError, match="unknown fields"):
        SecAggClient.restore_state(_dumps(saved), ids[c])
    for name in list(_loads(data)["state"]):
        saved = _loads(data)
        del saved["state"][name]
        with pytest.raises(ClientStateError, match="missing fields"):
            SecAggClient.restore_state(_dumps(saved), ids[c])


def _all_states():
    return [s for name in sorted(CONFIGS) for s in session(name)[1]]


states_st = st.integers(0, 10**6).map(lambda i: _all_states()[i % len(_all_states())])


@given(state=states_st, data=st.data())
def test_corrupted_or_truncated_states_are_refused(state, data):
    _, raw, c = state
    ids = session("full")[2] | session("plus")[2]
    if data.draw(st.booleans(), label="truncate"):
        bad = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        out = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 3))):
            out[data.draw(st.integers(0, len(out) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        bad = bytes(out)
    if bad == raw:
        return
    with pytest.raises(ClientStateError):
        SecAggClient.restore_state(bad, ids[c])


JSON_JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                         | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                         max_leaves=6)


def _b64_of(n: int) -> str:
    return base64.b64encode(bytes(n)).decode()


def _bad_values(name: str, value, state: dict):
    """Values for field ``name`` that contradict the schema or the client's position."""
    sizes = {"session_id": (32,), "enc_key": (32,), "mask_key": (32,), "context": (0, 32)}
    out = st.sampled_from([1.5, True, "not base64!", [], {}, {"x": 1}, [1, "a"]])
    if name in sizes:
        out |= st.integers(0, 80).filter(lambda k: k not in sizes[name]).map(_b64_of)
    mid_session = state["position"] in STEPS  # once done or aborted, fewer fields are fixed
    if name == "context" and mid_session:
        out |= st.just(_b64_of(32) if not state["context"] else "")
    if name == "position":  # done/aborted fit a client that aborted early: not a contradiction
        out |= st.sampled_from(["nothing", *STEPS]).filter(lambda p: p != value)
    if name in ("group", "shared", "survivors"):
        out |= st.just([*value, 10**6]) | st.just(list(reversed(value)) + value[:1]) \
            | st.just([-1])
    if name == "client_id":
        out |= st.sampled_from([-1, 10**6, 2**40])
    if name == "held" and value:
        peer = next(iter(value))
        sm, mk, fate = value[peer]
        others = [f for f in cs.FATES if f != fate]
        out |= st.sampled_from([
            {**value, peer: [sm, mk, others[0]]}, {**value, peer: [sm, mk, others[1]]},
            {**value, peer: [sm if sm is None else sm + 2**300, mk, fate]},
            {**value, peer: [-1 if sm is not None else None, mk, fate]},
            {**value, peer: [mk, sm, fate]} if (sm is None) != (mk is None) else {"x": 1},
            {**value, "01": value[peer]},
        ])
    if name in ("identity_keys", "advertised", "enc_secrets") and value:
        peer = next(iter(value))
        out |= st.just({**value, peer: _b64_of(31)}) | st.just({"abc": value[peer]})
    if name == "b":
        out |= st.just(_b64_of(32) if value is None else None) | st.just(_b64_of(16))
    if name == "own_advert" and mid_session:
        out |= st.just("" if value else _b64_of(100))
    if name == "config":
        out |= st.sampled_from([{**value, "threshold": 1}, {**value, "modulus": 1},
                                {**value, "neighbors": 3}, {**value, "extra": 0}])
    return out


@given(state=states_st, data=st.data())
def test_states_with_an_altered_field_are_refused(state, data):
    """Each field replaced by a value of the wrong type or size, or one that contradicts the
    client's position, with the checksum recomputed: the schema's own checks refuse it."""
    _, raw, c = state
    ids = session("full")[2] | session("plus")[2]
    saved = _loads(raw)
    name = data.draw(st.sampled_from(sorted(saved["state"])), label="field")
    value = saved["state"][name]
    # A done or aborted client may have stopped before it filled a collection: an empty one is
    # no contradiction there.
    mid_session = saved["state"]["position"] in STEPS
    bad = data.draw((_bad_values(name, value, saved["state"])
                     | JSON_JUNK.filter(lambda v: not isinstance(v, str))).filter(
        lambda v: mid_session or v not in ([], {})), label="value")
    if bad == value:
        return
    saved["state"][name] = bad
    with pytest.raises(ClientStateError):
        SecAggClient.restore_state(_dumps(saved), ids[c])
