"""Fuzzing the masked-sum state machines (SecAggClient, SecAggServer) with a hostile network.

Real sessions (4 to 8 clients, complete graph or SecAgg+) are driven round by round while
hypothesis decides, per message, what the network does with it:

* client -> server: deliver it, lose it, truncate it, flip bits, replace it with random bytes,
  append garbage, replay the sender's message from an earlier step, deliver the sender's message
  for another step signed in a twin session (same session id, same identities: a message "from
  the future"), replay it from another session (same identities, another session id), deliver
  another client's message under this sender, duplicate it, precede or follow it with junk, inject
  messages under unexpected sender ids, and shuffle the round's delivery order;
* server -> client: the same damage, plus the server's message for an earlier step, for another
  client, from the twin or the other session (also re-framed as this session's), a duplicate
  delivery, a call of the wrong round, and stray messages to clients the server did not address.

Claims:

* the server raises nothing but :class:`SecAggAbort` (RuntimeError, its documented answer to a
  round driven out of order, is checked separately and leaves its state untouched);
* U1, U2 and U3 are exactly the clients whose message at each round reached the server intact and
  alone, so every tampered sender is excluded or its untampered message was used; when the server
  completes, the total is the exact sum mod q of the included clients' inputs; it aborts at a
  round only when fewer than t clients survived it;
* clients raise only :class:`ProtocolViolation` (or :class:`MessageError`), never answer after
  aborting or out of order, and (complete graph) never refuse the server's untouched message;
* every call returns within seconds: no hang.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from gptfl_secure.protocols import (
    STEPS,
    IdentityKey,
    MessageError,
    ProtocolViolation,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    run_masked_sum,
)
from gptfl_secure.protocols import messages as m
from gptfl_secure.protocols.graph import neighbours, public_seed

from .seeded import deterministic_randomness

CALL_LIMIT_S = 5.0  # per client or server call; real calls take milliseconds
IDENTITIES = {i: IdentityKey(hashlib.sha256(b"fuzz-sm/identity/%d" % i).digest())
              for i in range(8)}
CONFIGS = {
    "full-4": SecAggConfig(4, 3, 3, 2**16),
    "full-5": SecAggConfig(5, 3, 1, 7),
    "full-6": SecAggConfig(6, 4, 5, 2**32),
    "full-7": SecAggConfig(7, 4, 4, 2**62),
    "full-8": SecAggConfig(8, 5, 6, 2**61 - 1),
    "plus-6": SecAggConfig(6, 2, 3, 1_000_003, neighbors=2),
    "plus-7": SecAggConfig(7, 3, 2, 2**20, neighbors=4),
    "plus-8": SecAggConfig(8, 4, 4, 2**32, neighbors=4),
}
FULL = [name for name, cfg in CONFIGS.items() if cfg.neighbors is None]
PLUS = [name for name, cfg in CONFIGS.items() if cfg.neighbors is not None]
SEEDS = st.integers(1000, 2**32)  # per-example randomness; shadow sessions use seeds < 10
STRANGER = 10**6  # a sender id nobody enrolled
RESPONSE = {s: t for s, t in zip(STEPS[1:], [m.MsgType.KEY_LIST, m.MsgType.SHARE_RELAY,
                                             m.MsgType.SURVIVORS, m.MsgType.SIGNATURES],
                                 strict=True)}  # the server message each client round consumes


# ------------------------------------------------------------------- sessions
def sid(name: str, tag: str = "session") -> bytes:
    return hashlib.sha256(f"fuzz-sm/{tag}/{name}".encode()).digest()


def public(cfg: SecAggConfig) -> dict[int, bytes]:
    return {c: IDENTITIES[c].public for c in range(cfg.num_clients)}


def inputs_for(cfg: SecAggConfig, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, cfg.modulus, cfg.vector_length, dtype=np.uint64)
            for c in range(cfg.num_clients)}


def expected_total(cfg: SecAggConfig, inputs, included) -> list[int]:
    return [sum(int(inputs[c][j]) for c in included) % cfg.modulus
            for j in range(cfg.vector_length)]




def timed(fn, *args):
    start = time.perf_counter()
    try:
        return fn(*args)
    finally:
        elapsed = time.perf_counter() - start
        assert elapsed < CALL_LIMIT_S, f"{fn.__name__} took {elapsed:.1f} s"


def call(client: SecAggClient, method: str, msg, x: np.ndarray) -> bytes:
    if method == "advertise_keys":
        return timed(client.advertise_keys)
    if method == "masked_input":
        return timed(client.masked_input, msg, x)
    return timed(getattr(client, method), msg)


def new_session(name: str, session_id: bytes):
    cfg = CONFIGS[name]
    clients = {c: SecAggClient(cfg, c, IDENTITIES[c], public(cfg), session_id)
               for c in range(cfg.num_clients)}
    return clients, SecAggServer(cfg, public(cfg), session_id)


@dataclass
class Recording:
    """Every message of one honest session: ``c2s[(step, c)]`` what client c sent at ``step``,
    ``s2c[(step, c)]`` what the server sent client c for ``step``."""

    c2s: dict[tuple[str, int], bytes] = field(default_factory=dict)
    s2c: dict[tuple[str, int], bytes] = field(default_factory=dict)


@cache
def recording(name: str, tag: str, seed: int) -> Recording:
    """An honest session of config ``name`` with the session id ``sid(name, tag)``."""
    cfg, rec = CONFIGS[name], Recording()
    inputs = inputs_for(cfg, seed)
    with deterministic_randomness(seed):
        clients, server = new_session(name, sid(name, tag))
        outgoing = None
        for step in STEPS:
            replies = {}
            for c in sorted(clients) if outgoing is None else sorted(outgoing):
                msg = None if outgoing is None else outgoing[c]
                if msg is not None:
                    rec.s2c[(step, c)] = msg
                try:
                    replies[c] = rec.c2s[(step, c)] = call(clients[c], step, msg, inputs[c])
                except ProtocolViolation:  # a SecAgg+ neighbourhood below t
                    pass
            outgoing = getattr(server, step)(replies)
    return rec


def twin(name: str) -> Recording:
    """Same session id and identities as the fuzzed session: only its messages for OTHER steps
    may reach the server (the same step would be a genuine message of a reused session id)."""
    return recording(name, "session", 1)


def other_session(name: str) -> Recording:
    """Same identities, another session id."""
    return recording(name, "other-session", 2)


# ------------------------------------------------------------------- the hostile network
C2S_MOVES = ("honest", "drop", "truncate", "flip", "random", "extend", "earlier_step",
             "later_step", "other_session", "impersonate", "duplicate", "junk_first",
             "junk_after")
S2C_MOVES = ("honest", "drop", "truncate", "flip", "random", "extend", "earlier_step",
             "later_step", "other_session", "reframed", "other_client", "twin", "duplicate",
             "wrong_method")


def plan(data, slots, moves, max_size: int = 6) -> dict:
    """Up to ``max_size`` of ``slots`` (round, client), each with the move applied to it."""
    return dict(data.draw(st.lists(st.tuples(st.sampled_from(slots), st.sampled_from(moves)),
                                   max_size=max_size, unique_by=lambda x: x[0]), label="plan"))


def damaged(data, draw, how: str) -> bytes:
    if how == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if how == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, len(out) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if how == "random":
        return draw(st.binary(max_size=300))
    assert how == "extend"
    return data + draw(st.binary(min_size=1, max_size=40))


class HostileSession:
    """One session of config ``name`` through a network that hypothesis controls."""

    def __init__(self, name: str, seed: int, data, *, c2s: bool, s2c: bool) -> None:
        self.name, self.cfg, self.draw = name, CONFIGS[name], data.draw
        self.c2s_on, self.s2c_on = c2s, s2c
        self.sid = sid(name)
        self.inputs = inputs_for(self.cfg, seed)
        self.ids = list(range(self.cfg.num_clients))
        self.clients, self.server = new_session(name, self.sid)
        self.twin, self.other = twin(name), other_session(name)
        self.next = dict.fromkeys(self.ids, 0)  # index of the round each client may run next
        self.gone: set[int] = set()  # raised, or finished: must refuse every later call
        self.sent: dict[tuple[str, int], bytes] = {}  # genuine client messages
        self.received: dict[tuple[str, int], bytes] = {}  # genuine server messages
        self.alive = frozenset(self.ids)  # clients intact at every round so far
        # Clients that answered a tampered server message. With SecAgg+ a client is shown only
        # its group's advertisements, so it cannot check the other listed digests: a flipped
        # one leaves it answering under another session context, which the server then drops.
        self.misled: set[int] = set()
        # The plan, drawn up front: which messages the network touches and how. Untouched
        # messages cost no draws, so long sessions stay within hypothesis's budget, and a plan
        # with few touches (which hypothesis also tries) lets the session complete.
        slots = [(step, c) for step in STEPS for c in self.ids]
        later = [(step, c) for step in STEPS[1:] for c in self.ids]
        self.c2s_plan = plan(data, slots, C2S_MOVES[1:]) if c2s else {}
        self.s2c_plan = plan(data, later, S2C_MOVES[1:]) if s2c else {}
        self.advert_dups = data.draw(st.sets(st.sampled_from(self.ids), max_size=2)) if s2c \
            else set()
        self.strays = data.draw(st.sets(st.sampled_from(later), max_size=3)) if s2c else set()
        self.injected = dict(data.draw(st.lists(st.tuples(st.sampled_from(STEPS), st.sampled_from(
            [*self.ids, STRANGER])), max_size=2, unique_by=lambda x: x[0]))) if c2s else {}
        self.shuffled = data.draw(st.sets(st.sampled_from(STEPS))) if c2s else set()
        self.probed = data.draw(st.sets(st.sampled_from(STEPS), max_size=2))

    # ---------------------------------------------------------------- server -> client
    def server_message(self, step: str, c: int, genuine: bytes, move: str) -> bytes:
        i = STEPS.index(step)
        if move in ("truncate", "flip", "random", "extend"):
            return damaged(genuine, self.draw, move)
        if move == "earlier_step":  # the server's message of an earlier round, or else the
            if i == 1:  # client's own advertisement echoed back
                return self.sent[("advertise_keys", c)]
            return self.received[(STEPS[self.draw(st.integers(1, i - 1))], c)]
        if move == "later_step":
            pool = [raw for (s, _), raw in sorted(self.twin.s2c.items()) if s != step]
            return self.draw(st.sampled_from(pool))
        if move in ("other_session", "reframed"):
            pool = [raw for (s, _), raw in sorted(self.other.s2c.items()) if s == step]
            raw = self.draw(st.sampled_from(pool))
            if move == "reframed":  # its body, framed as this session's message
                return m.seal(RESPONSE[step], self.sid, m.SERVER, raw[m._HEADER.size :])
            return raw
        if move == "other_client":
            others = [raw for (s, o), raw in sorted(self.received.items()) if s == step and o != c]
            return self.draw(st.sampled_from(others)) if others else genuine
        if move == "twin":
            pool = [raw for (s, _), raw in sorted(self.twin.s2c.items()) if s == step]
            return self.draw(st.sampled_from(pool))
        return genuine

    def client_call(self, c: int, step: str, msg, genuine, move: str) -> bytes | None:
        method = step
        if move == "wrong_method":
            method = self.draw(st.sampled_from([s for s in STEPS if s != step]))
        was_gone, in_order = c in self.gone, self.next[c] == STEPS.index(method)
        try:
            reply = call(self.clients[c], method, msg, self.inputs[c])
        except (ProtocolViolation, MessageError) as exc:
            event(f"client raised {type(exc).__name__} at {method}")
            self.gone.add(c)
            if (self.cfg.neighbors is None and not was_gone and in_order and msg == genuine):
                raise AssertionError(f"client {c} refused the server's intact message") from exc
            return None
        assert not was_gone, f"client {c} answered at {method} after aborting"
        if genuine is not None and msg != genuine:
            self.misled.add(c)
        assert in_order, f"client {c} answered {method} out of order"
        self.next[c] += 1
        if method == "unmasking":
            self.gone.add(c)  # session over for it
        if move == "duplicate":  # the same server message delivered twice
            with pytest.raises(ProtocolViolation):
                call(self.clients[c], method, msg, self.inputs[c])
            self.gone.add(c)
        return reply

    def client_round(self, step: str, outgoing) -> dict[int, bytes]:
        replies = {}
        for c in self.ids:
            if step == "advertise_keys":
                msg = genuine = None
                move = "duplicate" if c in self.advert_dups else "honest"
            elif c in outgoing:
                genuine = outgoing[c]
                self.received[(step, c)] = genuine
                move = self.s2c_plan.get((step, c), "honest")
                if move == "drop":
                    continue
                msg = self.server_message(step, c, genuine, move)
            elif (step, c) in self.strays:  # a message to a client the server left out
                pool = sorted(self.received.values()) + sorted(self.twin.s2c.values())
                msg, genuine, move = self.draw(st.sampled_from(pool)), None, "stray"
            else:
                continue
            event(f"server->client: {move}")
            reply = self.client_call(c, step, msg, genuine, move)
            if reply is not None:
                replies[c] = reply
        return replies

    # ---------------------------------------------------------------- client -> server
    def network(self, step: str, replies: dict[int, bytes]) -> list[tuple[int, bytes]]:
        i, pairs = STEPS.index(step), []
        for c, reply in sorted(replies.items()):
            self.sent[(step, c)] = reply
            move = self.c2s_plan.get((step, c), "honest")
            event(f"client->server: {move}")
            if move == "honest":
                pairs.append((c, reply))
                continue
            junk = damaged(reply, self.draw, self.draw(st.sampled_from(
                ["truncate", "flip", "random", "extend"])))
            if move == "drop":
                msgs = []
            elif move in ("truncate", "flip", "random", "extend"):
                msgs = [damaged(reply, self.draw, move)]
            elif move == "earlier_step":
                msgs = [self.sent[(STEPS[self.draw(st.integers(0, i - 1))], c)] if i else junk]
            elif move == "later_step":
                pool = [raw for (s, o), raw in sorted(self.twin.c2s.items())
                        if s != step and o == c]
                msgs = [self.draw(st.sampled_from(pool))]
            elif move == "other_session":
                pool = [raw for (s, o), raw in sorted(self.other.c2s.items()) if o == c]
                msgs = [self.draw(st.sampled_from(pool))]
            elif move == "impersonate":
                others = sorted(raw for o, raw in replies.items() if o != c)
                msgs = [self.draw(st.sampled_from(others)) if others else junk]
            elif move == "duplicate":
                msgs = [reply, reply]
            elif move == "junk_first":
                msgs = [junk, reply]
            else:
                msgs = [reply, junk]
            pairs += [(c, raw) for raw in msgs]
        if step in self.injected:  # a message injected under another sender id
            sender = self.injected[step]
            pool = sorted(self.sent.values()) + sorted(raw for (s, _), raw in
                                                       self.twin.c2s.items() if s != step)
            pairs.append((sender, self.draw(st.sampled_from(pool))))
        if step in self.shuffled and len(pairs) > 1:
            pairs = self.draw(st.permutations(pairs))
        delivered = defaultdict(list)
        for sender, raw in pairs:
            delivered[sender].append(raw)
        intact = {c for c, reply in replies.items() if delivered.get(c) == [reply]}
        self.alive = self.alive & intact
        return pairs

    # ---------------------------------------------------------------- the session
    def probe_server_out_of_order(self, step: str, pairs) -> None:
        """Another round's method: refused, and the server's state is untouched."""
        wrong = self.draw(st.sampled_from([s for s in STEPS if s != step]))
        before = len(self.server.transcript), dict(self.server.rejected)
        with pytest.raises(RuntimeError, match="drive rounds in order"):
            getattr(self.server, wrong)(pairs)
        assert (len(self.server.transcript), self.server.rejected) == before

    def run(self) -> None:
        t, outgoing = self.cfg.threshold, None
        for i, step in enumerate(STEPS):
            replies = self.client_round(step, outgoing)
            pairs = self.network(step, replies)
            if step in self.probed:
                self.probe_server_out_of_order(step, pairs)
            try:
                outgoing = timed(getattr(self.server, step), pairs)
            except SecAggAbort as exc:
                event(f"server aborted at {step}")
                assert exc.step == step and exc.survivors < exc.threshold == t
                if i <= STEPS.index("masked_input") or (not self.s2c_on and i == 3):
                    assert len(self.alive - self.misled) < t, \
                        f"aborted at {step} with {len(self.alive)} alive"
                self.assert_server_finished()
                return
            # U1..U3 are exactly the clients the network left intact; later a client may
            # also have been shown another U3 (server -> client tampering).
            served = getattr(self.server, f"u{i + 1}")
            exact = i <= STEPS.index("masked_input") or not self.s2c_on
            lower = self.alive - self.misled if exact else frozenset()
            assert lower <= served <= self.alive, \
                f"{step}: server kept {sorted(served)}, {sorted(self.alive)} intact"
            if exact:  # a misled client the server dropped is out for good
                self.alive = self.alive & served
            if step == "masked_input":
                included = self.alive
        event("server completed")
        assert outgoing.included == self.server.u3 == included
        assert outgoing.total.tolist() == expected_total(self.cfg, self.inputs, outgoing.included)
        self.assert_server_finished()

    def assert_server_finished(self) -> None:
        for step in STEPS:
            with pytest.raises(RuntimeError, match="drive rounds in order"):
                getattr(self.server, step)({})


def run_hostile(name: str, seed: int, data, *, c2s: bool, s2c: bool) -> None:
    with deterministic_randomness(seed):
        HostileSession(name, seed, data, c2s=c2s, s2c=s2c).run()


@pytest.mark.parametrize("graph", ["full", "plus"])
@given(data=st.data(), seed=SEEDS)
def test_hostile_network_between_clients_and_server(graph, data, seed):
    """Client -> server messages tampered with; the server's messages arrive intact."""
    name = data.draw(st.sampled_from(FULL if graph == "full" else PLUS), label="config")
    run_hostile(name, seed, data, c2s=True, s2c=False)


@pytest.mark.parametrize("graph", ["full", "plus"])
@given(data=st.data(), seed=SEEDS)
def test_hostile_network_between_server_and_clients(graph, data, seed):
    """Server -> client messages tampered with (clients driven directly); clients' messages
    arrive intact."""
    name = data.draw(st.sampled_from(FULL if graph == "full" else PLUS), label="config")
    run_hostile(name, seed, data, c2s=False, s2c=True)


@pytest.mark.parametrize("graph", ["full", "plus"])
@given(data=st.data(), seed=SEEDS)
def test_hostile_network_both_ways(graph, data, seed):
    name = data.draw(st.sampled_from(FULL if graph == "full" else PLUS), label="config")
    run_hostile(name, seed, data, c2s=True, s2c=True)


# ------------------------------------------------------------------- through run_masked_sum
RUNNER_MOVES = ("honest", "lost", "truncate", "flip", "random", "extend", "earlier_step",
                "later_step", "other_session", "impersonate")


@cache
def runner_recording(name: str) -> dict[tuple[str, int], bytes]:
    """Every client message of an earlier run_masked_sum session (its own identities)."""
    cfg, seen = CONFIGS[name], {}
    run_masked_sum(cfg, inputs_for(cfg, 3), seed=3,
                   tamper=lambda step, c, raw: seen.setdefault((step, c), raw))
    return seen


@given(data=st.data(), seed=SEEDS)
def test_run_masked_sum_tamper_hook(data, seed):
    """The runner's own hook as the hostile network (complete graph: honest clients never
    abort, so U1..U5 and the aborting round are predicted exactly)."""
    name = data.draw(st.sampled_from(FULL), label="config")
    cfg, inputs, earlier = CONFIGS[name], inputs_for(CONFIGS[name], seed), runner_recording(name)
    seen: dict[tuple[str, int], bytes] = {}
    intact: dict[str, set[int]] = {s: set() for s in STEPS}
    moves = plan(data, [(s, c) for s in STEPS for c in range(cfg.num_clients)],
                 RUNNER_MOVES[1:])

    def tamper(step: str, sender: int, raw: bytes) -> bytes | None:
        i = STEPS.index(step)
        seen[(step, sender)] = raw
        move = moves.get((step, sender), "honest")
        event(f"tamper: {move}")
        out = raw
        if move == "lost":
            out = None
        elif move in ("truncate", "flip", "random", "extend"):
            out = damaged(raw, data.draw, move)
        elif move == "earlier_step" and i:
            out = seen[(STEPS[data.draw(st.integers(0, i - 1))], sender)]
        elif move in ("later_step", "other_session"):
            pool = sorted(v for (s, c), v in earlier.items() if c == sender and
                          (s == step) == (move == "other_session"))
            out = data.draw(st.sampled_from(pool))
        elif move == "impersonate":
            others = sorted(v for (s, c), v in seen.items() if s == step and c != sender)
            out = data.draw(st.sampled_from(others)) if others else damaged(raw, data.draw,
                                                                            "flip")
        if out == raw:
            intact[step].add(sender)
        return out

    alive, abort_at = set(range(cfg.num_clients)), None
    try:
        result = run_masked_sum(cfg, inputs, seed=seed, tamper=tamper)
    except SecAggAbort as exc:
        abort_at = exc
    for step in STEPS:
        alive &= intact[step]
        if len(alive) < cfg.threshold:
            assert abort_at is not None and abort_at.step == step, f"should abort at {step}"
            event(f"server aborted at {step}")
            return
        if step == "masked_input":
            included = frozenset(alive)
    assert abort_at is None, f"aborted at {abort_at.step} with enough survivors"
    event("server completed")
    assert result.included == included
    assert result.total.tolist() == expected_total(cfg, inputs, included)
    assert not result.stats.client_aborts


# ------------------------------------------------------------------- rounds out of order
def honest_progress(name: str, rounds: int):
    """A session after ``rounds`` honest rounds: (clients, server, messages for the next
    round keyed by client, every server message so far keyed by (step, client))."""
    cfg = CONFIGS[name]
    clients, server = new_session(name, sid(name))
    inputs = inputs_for(cfg, 7)
    outgoing, received = None, {}
    for step in STEPS[:rounds]:
        replies = {c: call(clients[c], step, None if outgoing is None else outgoing[c],
                           inputs[c]) for c in (clients if outgoing is None else outgoing)}
        outgoing = getattr(server, step)(replies)
        if step != "unmasking":
            received.update({(STEPS[STEPS.index(step) + 1], c): v for c, v in outgoing.items()})
    return clients, server, outgoing, received, inputs


@pytest.mark.parametrize("rounds", range(len(STEPS) + 1))
@pytest.mark.parametrize("method", STEPS)
def test_client_round_out_of_order_is_a_protocol_violation(rounds, method):
    """After ``rounds`` honest rounds, client 0 is asked for ``method``: in order it answers,
    otherwise it raises ProtocolViolation, and from then on refuses every call."""
    with deterministic_randomness(rounds):
        clients, _, _, received, inputs = honest_progress("full-4", rounds)
        client = clients[0]
        msg = received.get((method, 0), received.get((STEPS[min(rounds, 4)], 0)))
        if rounds < len(STEPS) and method == STEPS[rounds]:
            assert isinstance(call(client, method, msg, inputs[0]), bytes)
            if method != "unmasking":
                return
        else:
            with pytest.raises(ProtocolViolation):
                call(client, method, msg, inputs[0])
        for step in STEPS:  # aborted, or done: nothing more comes out of it
            with pytest.raises(ProtocolViolation):
                call(client, step, received.get((step, 0)), inputs[0])


@pytest.mark.parametrize("rounds", range(len(STEPS) + 1))
@pytest.mark.parametrize("method", STEPS)
def test_server_round_out_of_order_is_refused_without_state_change(rounds, method):
    with deterministic_randomness(rounds):
        clients, server, outgoing, _, inputs = honest_progress("full-4", rounds)
        if rounds < len(STEPS) and method == STEPS[rounds]:
            return
        before = (len(server.transcript), dict(server.rejected), server.u1, server.u3)
        with pytest.raises(RuntimeError, match="drive rounds in order"):
            getattr(server, method)({c: b"" for c in clients})
        assert (len(server.transcript), server.rejected, server.u1, server.u3) == before
        if rounds < len(STEPS):  # the right round still works
            step = STEPS[rounds]
            replies = {c: call(clients[c], step, None if outgoing is None else outgoing[c],
                               inputs[c]) for c in (clients if outgoing is None else outgoing)}
            out = getattr(server, step)(replies)
            if step == "unmasking":
                assert out.total.tolist() == expected_total(CONFIGS["full-4"], inputs, range(4))


def test_server_refuses_every_round_after_an_abort():
    with deterministic_randomness(5):
        clients, server = new_session("full-4", sid("full-4"))
        adverts = {c: clients[c].advertise_keys() for c in (0, 1)}  # 2 < t = 3
        with pytest.raises(SecAggAbort):
            server.advertise_keys(adverts)
        for step in STEPS:
            with pytest.raises(RuntimeError, match="drive rounds in order"):
                getattr(server, step)(adverts)


OPS = st.tuples(st.sampled_from(["client", "server"]), st.integers(0, 7),
                st.sampled_from(STEPS), st.sampled_from(["current", "current", "junk", "twin",
                                                         "earlier"]))


@given(data=st.data(), seed=SEEDS)
def test_random_schedules_of_rounds(data, seed):
    """The honest schedule (every client's round, then the server's, five times) with random
    calls inserted, ops swapped and ops deleted: every call either succeeds in order or is
    refused with a typed error, as a model of both state machines predicts."""
    name = data.draw(st.sampled_from(FULL), label="config")
    cfg = CONFIGS[name]
    n = cfg.num_clients
    schedule = [op for step in STEPS for op in
                [("client", c, step, "current") for c in range(n)] + [("server", 0, step, "")]]
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        how = data.draw(st.sampled_from(["insert", "swap", "delete"]))
        pos = data.draw(st.integers(0, len(schedule) - 1))
        if how == "insert":
            schedule.insert(pos, data.draw(OPS))
        elif how == "swap" and pos + 1 < len(schedule):
            schedule[pos], schedule[pos + 1] = schedule[pos + 1], schedule[pos]
        elif how == "delete":
            del schedule[pos]
    with deterministic_randomness(seed):
        _run_schedule(name, seed, schedule, data)


def _run_schedule(name: str, seed: int, schedule, data) -> None:
    cfg = CONFIGS[name]
    n, inputs, shadow = cfg.num_clients, inputs_for(cfg, seed), twin(name)
    clients, server = new_session(name, sid(name))
    nxt, gone = dict.fromkeys(range(n), 0), set()
    inbox: dict[tuple[str, int], bytes] = {}  # the server's genuine messages
    pending: dict[str, dict[int, bytes]] = defaultdict(dict)  # client answers per round
    srv_next, srv_state = 0, "running"
    for kind, c, step, source in schedule:
        c %= n
        if kind == "server":
            if srv_state != "running" or step != STEPS[srv_next]:
                with pytest.raises(RuntimeError, match="drive rounds in order"):
                    getattr(server, step)(pending[step])
                continue
            try:
                out = timed(getattr(server, step), dict(pending[step]))
            except SecAggAbort as exc:
                assert exc.survivors < exc.threshold
                srv_state = "aborted"
                event(f"schedule: server aborted at {step}")
                continue
            srv_next += 1
            if step == "unmasking":
                srv_state = "done"
                event("schedule: server completed")
                assert out.included <= set(pending["masked_input"])
                assert out.total.tolist() == expected_total(cfg, inputs, out.included)
            else:
                inbox.update({(STEPS[srv_next], v): raw for v, raw in out.items()})
            continue
        genuine = inbox.get((step, c))
        msg = {"current": genuine, "junk": b"junk",
               "twin": shadow.s2c.get((step, c)),
               "earlier": next(iter(sorted(inbox.values())), None)}[source]
        if msg is None and step != "advertise_keys":
            msg = b""
        was_gone, in_order = c in gone, nxt[c] == STEPS.index(step)
        try:
            reply = call(clients[c], step, msg, inputs[c])
        except (ProtocolViolation, MessageError) as exc:
            gone.add(c)
            if not was_gone and in_order and (step == "advertise_keys" or msg == genuine):
                raise AssertionError(f"client {c} refused an intact {step} message") from exc
            continue
        assert not was_gone and in_order, f"client {c} answered {step} out of turn"
        nxt[c] += 1
        pending[step][c] = reply
        if step == "unmasking":
            gone.add(c)


# ------------------------------------------------------------------- a colluding client
SMALL_ORDER_POINTS = [bytes.fromhex(h) for h in (
    "00" * 32, "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f", "ed" + "ff" * 30 + "7f", "ee" + "ff" * 30 + "7f",
)]


@given(data=st.data(), seed=SEEDS)
def test_small_order_key_advertised_by_a_colluding_client(data, seed):
    """A malicious server relays a (validly signed) advertisement of a colluding client whose
    encryption or mask-agreement key is a small-order X25519 point, which an honest server
    refuses. Every honest client in the colluder's group must abort with ProtocolViolation (at
    share_keys for an encryption key, at masked_input for a mask key), never crash."""
    name = data.draw(st.sampled_from(list(CONFIGS)), label="config")
    cfg = CONFIGS[name]
    colluder = data.draw(st.integers(0, cfg.num_clients - 1), label="colluder")
    which = data.draw(st.sampled_from(["encryption", "mask"]), label="key")
    point = data.draw(st.sampled_from(SMALL_ORDER_POINTS)
                      | st.sampled_from(SMALL_ORDER_POINTS).map(lambda p: p[:31] + bytes(
                          [p[31] | 0x80])), label="point")
    session_id, inputs = sid(name), inputs_for(cfg, seed)
    with deterministic_randomness(seed):
        clients, _ = new_session(name, session_id)
        adverts = {c: clients[c].advertise_keys() for c in clients}
        enc, mask = m.read_advertise(m.open_envelope(adverts[colluder], m.MsgType.ADVERTISE,
                                                     session_id).body)
        body = m.advertise_body(point, mask) if which == "encryption" else \
            m.advertise_body(enc, point)
        adverts[colluder] = m.seal(m.MsgType.ADVERTISE, session_id, colluder, body,
                                   IDENTITIES[colluder])
        clients[colluder]._own_advert = adverts[colluder]  # the colluder plays along
        enrolled = frozenset(clients)
        graph = neighbours(enrolled, cfg.neighbors, public_seed(session_id, enrolled))
        groups = {c: graph[c] | {c} for c in enrolled}
        shares, refused = {}, set()
        digests = {v: m.advert_digest(adverts[v]) for v in enrolled}  # one world: every member
        context = m.session_context(session_id, digests)
        for c in sorted(clients):
            key_list = m.seal(m.MsgType.KEY_LIST, session_id, m.SERVER, m.key_list_body(
                enrolled, [adverts[v] for v in sorted(groups[c])], digests))
            try:
                shares[c] = m.read_shares(m.open_signed(
                    clients[c].share_keys(key_list), m.MsgType.SHARES, session_id,
                    public(cfg), context).body)[1]
            except ProtocolViolation as exc:
                assert which == "encryption" and colluder in groups[c] and c != colluder
                assert exc.peer == colluder
                refused.add(c)
        victims = {c for c in groups[colluder] if c != colluder}
        if which == "encryption":
            assert refused == victims
            return
        for c in sorted(shares):
            relay = {u: shares[u][c].ciphertext for u in sorted(groups[c] & set(shares))
                     if u != c}
            msg = m.seal(m.MsgType.SHARE_RELAY, session_id, m.SERVER, m.relay_body(relay))
            if c in victims:
                with pytest.raises(ProtocolViolation) as exc:
                    clients[c].masked_input(msg, inputs[c])
                assert exc.value.peer == colluder
            else:
                assert isinstance(clients[c].masked_input(msg, inputs[c]), bytes)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("order", ["junk_first", "junk_after", "twice"])
def test_a_second_message_drops_its_sender_whatever_the_first_was(step, order):
    """Regression (found by test_hostile_network_between_clients_and_server): junk followed by
    the genuine message used to let the genuine one in while ``rejected`` named the sender.
    Now, as the auditor assumes (gptfl_secure/audit/transcript.py), a sender heard twice in a
    round is dropped whatever its messages were, in either order."""
    name = "full-4"
    with deterministic_randomness(11):
        clients, server, outgoing, _, inputs = honest_progress(name, STEPS.index(step))
        replies = {c: call(clients[c], step, None if outgoing is None else outgoing[c],
                           inputs[c]) for c in (clients if outgoing is None else outgoing)}
        victim = 1
        extra = {"junk_first": [b"junk", replies[victim]], "junk_after": [replies[victim],
                                                                          b"junk"],
                 "twice": [replies[victim]] * 2}[order]
        pairs = [(c, raw) for c, raw in replies.items() if c != victim]
        pairs += [(victim, raw) for raw in extra]
        getattr(server, step)(pairs)
        assert server.rejected[victim] == f"{step}: duplicated message"
        survivors = getattr(server, f"u{STEPS.index(step) + 1}")
        assert survivors == frozenset(clients) - {victim}
