"""A malicious server against honest clients (Bonawitz et al. 2017, active-adversary variant).

The tests play the server. They drive honest :class:`SecAggClient` objects directly, take the honest
messages from an honest :class:`SecAggServer` (or build them the way it does), and then tamper with
them, replay them, reorder or repeat rounds, or show different clients different views.

Claims backed here:

* any server deviation makes a client raise ``ProtocolViolation``, and from then on it never
  returns bytes again;
* over everything the server ever collects, no client reveals both of its shares of one peer, and
  the server never holds ``t`` self-mask shares *and* ``t`` mask-key shares of one peer, so it
  cannot unmask an individual input. That holds when 2t > n (complete graph) or 2t > k + 1
  (SecAgg+ with k neighbours), which SecAggConfig enforces: each client reveals one share per
  peer, once. Below that bound a split view (one U3 to t clients, another to t others) does unmask
  an input; the harness shows it, which also shows that its invariant checker can fail.

The model in ``MaliciousServer.accepts`` predicts every answer of an honest client from what the
server sent it, so the state machine also catches a client that accepts what it should refuse.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from unittest import mock

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gptfl_secure.protocols import (
    STEPS,
    ClientPolicy,
    IdentityKey,
    PolicyViolation,
    ProtocolViolation,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    choose_secagg_plus_params,
    crypto,
    derivation,
    shamir,
)
from gptfl_secure.protocols import messages as m
from gptfl_secure.protocols.derivation import (
    pairwise_seed,
    self_mask_seed,
    share_associated_data,
    share_encryption_key,
)
from gptfl_secure.protocols.graph import neighbours, neighbours_of, public_seed
from gptfl_secure.protocols.ring import Ring

Q = 2**16
D = 16
SELF, MASK = m.ShareKind.SELF_MASK, m.ShareKind.MASK_KEY
HEADER = m._HEADER.size
SENDER_FIELD = range(37, 41)  # header bytes of the sender id (meaningless in a server message)
STEP_TYPE = {
    "share_keys": m.MsgType.KEY_LIST,
    "masked_input": m.MsgType.SHARE_RELAY,
    "consistency_check": m.MsgType.SURVIVORS,
    "unmasking": m.MsgType.SIGNATURES,
}


def config(n: int, t: int, k: int | None = None) -> SecAggConfig:
    return SecAggConfig(num_clients=n, threshold=t, vector_length=D, modulus=Q, neighbors=k)


def unchecked_config(n: int, t: int, k: int | None = None) -> SecAggConfig:
    """A config SecAggConfig would refuse (2t <= group size), built without its validation: to
    show what its threshold check prevents."""
    cfg = object.__new__(SecAggConfig)
    for name, value in (("num_clients", n), ("threshold", t), ("vector_length", D),
                        ("modulus", Q), ("neighbors", k)):
        object.__setattr__(cfg, name, value)
    return cfg


@dataclass(frozen=True)
class RegistryOnlyPolicy(ClientPolicy):
    """A client that checks the proposed group against its registry and nothing else: no
    threshold rule (what a client without its own policy accepts). Only to show what the
    threshold rule prevents."""

    def check(self, cfg, client_id, session_keys) -> None:
        for cid, key in session_keys.items():
            if self.trusted_keys.get(cid) != key:
                raise PolicyViolation(f"client {cid} is not enrolled with that key")


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    pos %= len(data)
    return data[:pos] + bytes([data[pos] ^ (1 << bit)]) + data[pos + 1 :]


def share_entries(shares_msg_body: bytes) -> dict[int, m.ShareEntry]:
    """The per-recipient entries of a SHARES body (after the owner's commitment to b_u)."""
    _, entries = m.read_shares(shares_msg_body)
    return entries


def signed_u3(u3) -> bytes:
    """The body of the CONSISTENCY message a client signs for ``u3``."""
    return m.survivors_digest(m.ids_body(u3))


def from_server(step: str, session_id: bytes, body: bytes) -> bytes:
    return m.seal(STEP_TYPE[step], session_id, m.SERVER, body)


# ------------------------------------------------------------------- honest sessions
@dataclass
class Run:
    """One session: enrolled clients, their inputs, an honest server, and every message so far.

    ``received[step][cid]`` is what the server sent client ``cid`` for ``step``;
    ``replies[step][cid]`` what ``cid`` answered at ``step``.
    """

    cfg: SecAggConfig
    session_id: bytes
    identities: dict[int, IdentityKey]
    clients: dict[int, SecAggClient]
    inputs: dict[int, np.ndarray]
    server: SecAggServer
    received: dict[str, dict[int, bytes]] = field(default_factory=dict)
    replies: dict[str, dict[int, bytes]] = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        return sorted(self.clients)

    @property
    def public(self) -> dict[int, bytes]:
        return {c: key.public for c, key in self.identities.items()}


@contextmanager
def seeded_agreement_keys(rng: random.Random, expected: int):
    """Clients draw their X25519 keys from ``rng`` (the test's only patch of the library).

    Hypothesis replays an example by its choices, so what a client accepts must not depend on
    fresh OS randomness: with SecAgg+ the neighbour graph hangs on the advertised keys. Checks
    that exactly ``expected`` keys were drawn, so a change in how clients make keys fails loudly
    instead of making the machine flaky."""
    drawn = []

    class Seeded(crypto.AgreementKey):
        def __init__(self, private=None):
            if private is None:
                drawn.append(1)
                private = X25519PrivateKey.from_private_bytes(rng.randbytes(32))
            super().__init__(private)

    with mock.patch.object(crypto, "AgreementKey", Seeded):
        yield
    assert len(drawn) == expected, f"clients drew {len(drawn)} X25519 keys, not {expected}"


def enroll(cfg: SecAggConfig, seed: int = 0, *, ids=None, identities=None,
           session_id: bytes | None = None, rng: random.Random | None = None,
           policy: type[ClientPolicy] | None = None) -> Run:
    """A fresh session; pass ``identities`` (and ``session_id``) to re-enroll the same clients.
    With ``rng`` every key and the session id are drawn from it (reproducible sessions).
    ``policy``: a ClientPolicy class each client builds over the enrolled keys (default: the
    client's own default policy)."""
    if identities is None:
        identities = {c: IdentityKey(rng.randbytes(32) if rng else None)
                      for c in (ids or range(cfg.num_clients))}
    public = {c: key.public for c, key in identities.items()}
    session_id = session_id or (rng.randbytes(32) if rng else os.urandom(m.SESSION_ID_BYTES))
    data = np.random.default_rng(seed)
    inputs = {c: data.integers(0, Q, D, dtype=np.uint64) for c in sorted(identities)}
    kw = {} if policy is None else {"policy": policy(public)}
    if rng is None:
        clients = {c: SecAggClient(cfg, c, identities[c], public, session_id, **kw)
                   for c in identities}
    else:
        with seeded_agreement_keys(rng, 2 * len(identities)):
            clients = {c: SecAggClient(cfg, c, identities[c], public, session_id, **kw)
                       for c in sorted(identities)}
    return Run(cfg, session_id, dict(identities), clients, inputs,
               SecAggServer(cfg, public, session_id))


def call(run: Run, cid: int, step: str, message: bytes | None = None) -> bytes:
    client = run.clients[cid]
    if step == "advertise_keys":
        return client.advertise_keys()
    if step == "masked_input":
        return client.masked_input(message, run.inputs[cid])
    return getattr(client, step)(message)


def drive(run: Run, until: str | None = None, silent: Mapping[int, str] | None = None):
    """Honest rounds before ``until`` (all rounds when None). Returns what the honest server sends
    for ``until`` (its ServerOutput after the last round). ``silent[cid] = step``: ``cid`` says
    nothing from ``step`` on."""
    silent = silent or {}
    outgoing = None
    for i, step in enumerate(STEPS[: STEPS.index(until)] if until else STEPS):
        replies = {}
        for cid in run.ids if outgoing is None else sorted(outgoing):
            if cid in silent and i >= STEPS.index(silent[cid]):
                continue
            replies[cid] = call(run, cid, step, None if outgoing is None else outgoing[cid])
        run.replies[step] = replies
        outgoing = getattr(run.server, step)(replies)
        if i + 1 < len(STEPS):
            run.received[STEPS[i + 1]] = outgoing
    return outgoing


def groups_of(run: Run) -> dict[int, frozenset[int]]:
    """Each client's group: itself and its neighbours in the graph over the enrolled clients,
    which every party derives from the session id alone (U1 does not enter it)."""
    enrolled = frozenset(run.identities)
    seed = public_seed(run.session_id, enrolled)
    return {c: p | {c} for c, p in neighbours(enrolled, run.cfg.neighbors, seed).items()}


def key_list_of(run: Run, cid: int) -> tuple[frozenset[int], dict[int, bytes], list[bytes]]:
    """(U1, its listed advertisement digests, the ADVERTISE messages of its group) from the key
    list the server sent ``cid``."""
    return m.read_key_list(m.open_envelope(run.received["share_keys"][cid], m.MsgType.KEY_LIST,
                                           run.session_id).body)


def opened(run: Run, raw: bytes, type_: m.MsgType) -> m.Envelope:
    """A client message of ``run``, its signature checked as the honest server checks it: under
    the session context of the honest key list (none for ADVERTISE)."""
    context = b"" if type_ is m.MsgType.ADVERTISE else run.server.context
    return m.open_signed(raw, type_, run.session_id, run.public, context)


def signatures_of(run: Run, cid: int) -> list[bytes]:
    """The signed CONSISTENCY messages in the list the server sent ``cid``."""
    return m.read_list(m.open_envelope(run.received["unmasking"][cid], m.MsgType.SIGNATURES,
                                       run.session_id).body)


# ------------------------------------------------------------------- what the adversary holds
class Loot:
    """Everything a server collected in one session, checked and put to use as an attacker would.

    ``add_unmask`` checks each revealed share against its owner's signed commitment, so a share's
    kind is known from the cryptography, not from the label the client put on it.

    Every client message after ADVERTISE is signed under its sender's session context: ``context``
    for all (one world: the honest key list), or ``contexts[sender]`` where the server showed
    clients different key lists (what the adversary knows: it sent them).
    """

    def __init__(self, cfg: SecAggConfig, session_id: bytes, identity_keys: Mapping[int, bytes],
                 context: bytes = b""):
        self.cfg, self.session_id, self.identity_keys = cfg, session_id, dict(identity_keys)
        self.context, self.contexts = context, {}
        self.adverts: dict[int, tuple[bytes, bytes]] = {}
        self.commits: dict[tuple[int, int], tuple[bytes, bytes]] = {}  # (owner, holder)
        self.masked: dict[int, np.ndarray] = {}
        self.relayed: dict[int, frozenset[int]] = {}  # recipient -> senders it got shares from
        self.shares: dict[tuple[int, int], dict[m.ShareKind, int]] = {}  # (owner, holder)

    @classmethod
    def from_run(cls, run: Run) -> Loot:
        loot = cls(run.cfg, run.session_id, run.public, run.server.context)
        for raw in run.replies.get("advertise_keys", {}).values():
            loot.add_advert(raw)
        for raw in run.replies.get("share_keys", {}).values():
            loot.add_shares(raw)
        for cid, raw in run.received.get("masked_input", {}).items():
            loot.add_relay(cid, raw)
        for raw in run.replies.get("masked_input", {}).values():
            loot.add_masked(raw)
        for raw in run.replies.get("unmasking", {}).values():
            loot.add_unmask(raw)
        return loot

    def _open(self, raw: bytes, type_: m.MsgType) -> m.Envelope:
        context = b""
        if type_ is not m.MsgType.ADVERTISE:
            sender = m.open_envelope(raw, type_, self.session_id).sender
            context = self.contexts.get(sender, self.context)
        return m.open_signed(raw, type_, self.session_id, self.identity_keys, context)

    def add_advert(self, raw: bytes) -> None:
        env = self._open(raw, m.MsgType.ADVERTISE)
        self.adverts[env.sender] = m.read_advertise(env.body)

    def add_shares(self, raw: bytes) -> dict[int, m.ShareEntry]:
        env = self._open(raw, m.MsgType.SHARES)
        entries = share_entries(env.body)
        for holder, e in entries.items():
            self.commits[(env.sender, holder)] = (e.commit_self_mask, e.commit_mask_key)
        return entries

    def add_relay(self, recipient: int, raw: bytes) -> None:
        env = m.open_envelope(raw, m.MsgType.SHARE_RELAY, self.session_id)
        self.relayed[recipient] = frozenset(m.read_relay(env.body))

    def add_masked(self, raw: bytes) -> None:
        env = self._open(raw, m.MsgType.MASKED_INPUT)
        self.masked[env.sender] = m.read_vector(env.body, self.cfg.vector_length,
                                                self.cfg.modulus, self.cfg.element_bytes)

    def add_unmask(self, raw: bytes) -> dict[int, m.ShareKind]:
        env = self._open(raw, m.MsgType.UNMASK)
        holder, kinds = env.sender, {}
        for owner, (label, share) in m.read_unmask(env.body).items():
            commit_b, commit_k = self.commits[(owner, holder)]
            if derivation.share_commitment(SELF, self.session_id, owner, holder, share) == commit_b:
                kind = SELF
            elif derivation.share_commitment(MASK, self.session_id, owner, holder,
                                             share) == commit_k:
                kind = MASK
            else:
                raise AssertionError(f"{holder} revealed a share of {owner} it was never sent")
            assert label is kind, f"{holder} labelled its {kind.name} share of {owner} {label.name}"
            self.shares.setdefault((owner, holder), {})[kind] = shamir.from_bytes(share)
            kinds[owner] = kind
        return kinds

    # ---------------------------------------------------------------- the invariant
    def holders(self, owner: int, kind: m.ShareKind) -> list[int]:
        return sorted(h for (o, h), got in self.shares.items() if o == owner and kind in got)

    def both_shares_from_one_holder(self) -> list[tuple[int, int]]:
        """(owner, holder) pairs for which a holder revealed both its shares of the owner."""
        return sorted(pair for pair, got in self.shares.items() if len(got) == 2)

    def unmaskable(self) -> set[int]:
        """Owners with >= t self-mask shares and >= t mask-key shares: b_v and v's mask key."""
        t = self.cfg.threshold
        owners = {o for o, _ in self.shares}
        return {o for o in owners if len(self.holders(o, SELF)) >= t
                and len(self.holders(o, MASK)) >= t}

    # ---------------------------------------------------------------- attacks and sanity
    def secret(self, owner: int, kind: m.ShareKind) -> bytes:
        points = [(h + 1, self.shares[(owner, h)][kind]) for h in self.holders(owner, kind)]
        value = shamir.reconstruct(points, self.cfg.threshold)
        assert value < 2**256, f"the {kind.name} shares of {owner} are inconsistent"
        return value.to_bytes(32, "big")

    def mask_key(self, owner: int) -> crypto.AgreementKey:
        key = crypto.AgreementKey.from_private_bytes(self.secret(owner, MASK))
        assert key.public == self.adverts[owner][1], f"rebuilt a wrong mask key for {owner}"
        return key

    def recover_input(self, v: int) -> np.ndarray:
        """x_v from y_v, b_v and v's mask key: what holding both kinds of shares gives away."""
        ring = Ring(self.cfg.modulus, self.cfg.vector_length)
        y = ring.lift(self.masked[v])
        ring.add_mask_(y, self_mask_seed(self.secret(v, SELF), self.session_id, v), -1)
        key = self.mask_key(v)
        for u in sorted(self.relayed[v]):  # v masked with exactly the peers it got shares from
            seed = pairwise_seed(key, self.adverts[u][1], self.session_id, v, u)
            ring.add_mask_(y, seed, -1 if u > v else +1)
        return ring.reduce(y)

    def unmask_sum(self, included: frozenset[int]) -> np.ndarray:
        """The sum over ``included``, rebuilt from the collected messages alone."""
        ring = Ring(self.cfg.modulus, self.cfg.vector_length)
        total = ring.zeros()
        for u in sorted(included):
            ring.add_(total, ring.lift(self.masked[u]))
            ring.add_mask_(total, self_mask_seed(self.secret(u, SELF), self.session_id, u), -1)
        dropped = set().union(*(self.relayed[u] for u in included)) - included
        for v in sorted(dropped):
            key = self.mask_key(v)
            for u in sorted(u for u in included if v in self.relayed[u]):
                seed = pairwise_seed(key, self.adverts[u][1], self.session_id, u, v)
                ring.add_mask_(total, seed, -1 if v > u else +1)
        return ring.reduce(total)


def true_sum(run: Run, included) -> list[int]:
    return [int(s) % Q for s in sum(run.inputs[c].astype(object) for c in included)]


def split_view(run: Run, views: Mapping[int, frozenset[int]]) -> Loot:
    """Honest rounds up to U3; then client c gets U3 = ``views[c]`` and the signatures of the
    group members that got the same view. Returns what the server collected."""
    if "consistency_check" not in run.received:
        drive(run, "consistency_check")
    group = groups_of(run)
    signed = {c: call(run, c, "consistency_check",
                      from_server("consistency_check", run.session_id, m.ids_body(views[c])))
              for c in sorted(views)}
    for c in sorted(views):
        same = [signed[w] for w in sorted(views) if views[w] == views[c] and w in group[c]]
        reply = call(run, c, "unmasking",
                     from_server("unmasking", run.session_id, m.list_body(same)))
        run.replies.setdefault("unmasking", {})[c] = reply
    return Loot.from_run(run)


# ------------------------------------------------------------------- the harness is sound
@pytest.mark.parametrize("graph", ["complete", "secagg_plus"])
def test_harness_rebuilds_the_honest_servers_sum_over_included(graph):
    cfg = config(6, 4) if graph == "complete" else config(8, 3, k=4)
    run = enroll(cfg, seed=7, ids=[3, 9, 14, 20, 27, 31, 40, 41][: cfg.num_clients])
    dropped, unresponsive = run.ids[-1], run.ids[-2]  # no masked input / silent at unmasking
    out = drive(run, silent={dropped: "masked_input", unresponsive: "unmasking"})
    assert out.included == frozenset(run.ids) - {dropped}
    truth = true_sum(run, out.included)
    assert out.total.tolist() == truth
    loot = Loot.from_run(run)
    assert loot.unmask_sum(out.included).tolist() == truth
    assert loot.holders(dropped, MASK) and not loot.holders(dropped, SELF)
    assert not loot.both_shares_from_one_holder() and not loot.unmaskable()


# ------------------------------------------------------------------- targeted deviations
def test_clients_shown_one_u3_accept_its_signatures_and_unmask():
    """Control for the test below: the same split, but everyone who signs sees the same U3."""
    run = enroll(config(7, 4), seed=2)
    everyone = frozenset(run.ids)
    loot = split_view(run, {c: everyone - {6} for c in range(6)})
    assert set(run.replies["unmasking"]) == set(range(6)) and not loot.unmaskable()


@pytest.mark.parametrize(
    "group, bundle",
    [("B", "other_view"), ("B", "both_views"), ("B", "own_padded_with_other"),
     ("A", "both_views"), ("A", "other_view")],
)
def test_inconsistent_u3_makes_honest_clients_abort(group, bundle):
    """U3a (with victim 6) goes to A = {0..3}, U3b (without it) to B = {4, 5}; 6 hears nothing.
    A client whose signature list holds any signature on the other view aborts at unmasking,
    even when the list has >= t signers that all lie in its own U3."""
    run = enroll(config(7, 4), seed=3)
    drive(run, "consistency_check")
    sid, everyone, victim = run.session_id, frozenset(run.ids), 6
    members = {"A": [0, 1, 2, 3], "B": [4, 5]}
    view = {"A": everyone, "B": everyone - {victim}}
    signed = {g: [call(run, c, "consistency_check",
                       from_server("consistency_check", sid, m.ids_body(view[g])))
                  for c in cs] for g, cs in members.items()}
    other = "B" if group == "A" else "A"
    bundles = {
        "other_view": signed[other],
        "both_views": signed["A"] + signed["B"],
        "own_padded_with_other": signed[group] + signed[other][: 4 - len(signed[group])],
    }
    sigs = from_server("unmasking", sid, m.list_body(bundles[bundle]))
    if group == "B":  # A's signers all lie in U3b: only the different U3 gives it away
        assert set(members["A"]) <= view["B"]
    for c in members[group]:
        with pytest.raises(ProtocolViolation) as exc:
            call(run, c, "unmasking", sigs)
        assert exc.value.step == "unmasking"
    if group == "B":  # control: A's own, consistent list is accepted
        for c in members["A"]:
            run.replies.setdefault("unmasking", {})[c] = call(
                run, c, "unmasking", from_server("unmasking", sid, m.list_body(signed["A"])))
    loot = Loot.from_run(run)
    assert not loot.holders(victim, MASK)  # nobody revealed the victim's mask key
    assert not loot.unmaskable()


@pytest.mark.parametrize("graph", ["complete", "secagg_plus"])
def test_u3_smaller_than_threshold_aborts_client(graph):
    """|U3 ∩ my group| < t: abort (with SecAgg+ even when U3 itself has >= t members)."""
    cfg = config(6, 4) if graph == "complete" else config(8, 3, k=4)
    run = enroll(cfg, seed=4)
    drive(run, "consistency_check")
    t, sid, group = cfg.threshold, run.session_id, groups_of(run)
    target, bystander = 0, 1
    outsiders = sorted(frozenset(run.ids) - group[target])
    mates = sorted(group[target] - {target})
    small = {target, *mates[: t - 2], *outsiders}
    assert len(small & group[target]) == t - 1
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, "consistency_check",
             from_server("consistency_check", sid, m.ids_body(small)))
    assert exc.value.step == "consistency_check"
    enough = {bystander, *sorted(group[bystander] - {bystander})[: t - 1]}
    reply = call(run, bystander, "consistency_check",
                 from_server("consistency_check", sid, m.ids_body(enough)))
    assert opened(run, reply, m.MsgType.CONSISTENCY).body == signed_u3(enough)
    with pytest.raises(ProtocolViolation):  # aborted for good
        call(run, target, "unmasking", from_server("unmasking", sid, m.list_body([reply])))


@pytest.mark.parametrize("how", ["leaves_me_out", "names_a_member_that_never_shared",
                                 "unsorted", "trailing_byte"])
def test_u3_that_leaves_me_out_or_is_malformed_aborts_client(how):
    """U3 must hold me, hold only group members that shared keys with me, and be well formed."""
    cfg = config(6, 4)
    run = enroll(cfg, seed=14)
    relays = drive(run, "masked_input")
    sid, target, dropped = run.session_id, 0, 5
    cts = m.read_relay(m.open_envelope(relays[target], m.MsgType.SHARE_RELAY, sid).body)
    del cts[dropped]  # 5's shares never reach 0: for 0, 5 did not share keys
    call(run, target, "masked_input", from_server("masked_input", sid, m.relay_body(cts)))
    for c in run.ids[1:]:
        call(run, c, "masked_input", relays[c])
    everyone = frozenset(run.ids)
    body = {
        "leaves_me_out": m.ids_body(everyone - {target, dropped}),
        "names_a_member_that_never_shared": m.ids_body(everyone),
        "unsorted": m.u32(5) + b"".join(m.u32(i) for i in (0, 2, 1, 3, 4)),
        "trailing_byte": m.ids_body(everyone - {dropped}) + b"\x00",
    }[how]
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, "consistency_check", from_server("consistency_check", sid, body))
    assert exc.value.step == "consistency_check"
    # control: 1 got 5's shares, so the full U3 is fine for it
    reply = call(run, 1, "consistency_check",
                 from_server("consistency_check", sid, m.ids_body(everyone)))
    assert opened(run, reply, m.MsgType.CONSISTENCY).body == signed_u3(everyone)


@pytest.mark.parametrize("where", ["signature", "body", "sender_field", "session_id"])
def test_forged_consistency_signature_aborts_client(where):
    """One altered CONSISTENCY message in the list aborts the client, though the list still
    holds more than t valid signatures on the right U3."""
    cfg = config(6, 4)
    run = enroll(cfg, seed=5)
    sigs = drive(run, "unmasking")
    sid, target, forged_signer = run.session_id, 0, 1
    signed = signatures_of(run, target)
    i = next(i for i, raw in enumerate(signed)
             if m.open_envelope(raw, m.MsgType.CONSISTENCY, sid).sender == forged_signer)
    pos = {"signature": -1, "body": HEADER + 3, "sender_field": SENDER_FIELD[-1],
           "session_id": 5}[where]
    signed[i] = flip(signed[i], pos)
    assert len(signed) - 1 > cfg.threshold
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, "unmasking", from_server("unmasking", sid, m.list_body(signed)))
    assert exc.value.step == "unmasking"
    assert call(run, 2, "unmasking", sigs[2])  # control: the untouched list is accepted


@pytest.mark.parametrize("graph", ["complete", "secagg_plus"])
def test_dropped_signatures_below_threshold_abort_client(graph):
    """The server passes on only t - 1 of my group's signatures: abort."""
    cfg = config(6, 4) if graph == "complete" else config(8, 3, k=4)
    run = enroll(cfg, seed=6)
    drive(run, "unmasking")
    t, sid = cfg.threshold, run.session_id

    def first(cid: int, count: int) -> bytes:
        return from_server("unmasking", sid, m.list_body(signatures_of(run, cid)[:count]))

    assert all(len(signatures_of(run, c)) > t for c in (0, 1))
    with pytest.raises(ProtocolViolation) as exc:
        call(run, 0, "unmasking", first(0, t - 1))
    assert exc.value.step == "unmasking"
    assert call(run, 1, "unmasking", first(1, t))  # control: exactly t


def test_signature_from_outside_my_group_aborts_client():
    """SecAgg+: the server relays my group's signatures only; one from outside is a deviation,
    even a valid signature on the same U3."""
    cfg = config(8, 3, k=4)
    run = enroll(cfg, seed=16)
    drive(run, "unmasking")
    sid, target, group = run.session_id, 0, groups_of(run)
    outsider = min(frozenset(run.ids) - group[target])
    outsider_sig = next(raw for raw in signatures_of(run, outsider)
                        if m.open_envelope(raw, m.MsgType.CONSISTENCY, sid).sender == outsider)
    signed = [*signatures_of(run, target), outsider_sig]
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, "unmasking", from_server("unmasking", sid, m.list_body(signed)))
    assert exc.value.step == "unmasking"


OUT_OF_ORDER = [(done, step) for done in range(len(STEPS) + 1) for step in STEPS
                if done == len(STEPS) or step != STEPS[done]]


@pytest.mark.parametrize("done, step", OUT_OF_ORDER)
def test_out_of_order_round_is_a_violation(done, step):
    """After ``done`` honest rounds, any other round (a repeat, a skip ahead, a second unmasking)
    is refused with a well-formed message for that round, and the client is then gone for good."""
    cfg = config(4, 3)
    run = enroll(cfg, seed=8)
    # A twin session (same identities and session id): well-formed messages for later rounds.
    twin = enroll(cfg, seed=8, identities=run.identities, session_id=run.session_id)
    drive(twin)
    drive(run, STEPS[done] if done < len(STEPS) else None)
    target = 0
    source = run if STEPS.index(step) < done else twin
    message = source.received.get(step, {}).get(target)
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, step, message)
    assert exc.value.step == step
    if done == len(STEPS):
        return
    assert "out of order" in exc.value.reason
    honest = run.received.get(STEPS[done], {})
    with pytest.raises(ProtocolViolation):  # the round it was due is refused now
        call(run, target, STEPS[done], honest.get(target))
    assert call(run, 1, STEPS[done], honest.get(1))  # control: that message was fine


@pytest.mark.parametrize("how", ["whole_message", "rewrapped_body", "one_advert_swapped"])
def test_replayed_key_list_from_other_session_is_rejected(how):
    cfg = config(5, 3)
    run = enroll(cfg, seed=9)
    old = enroll(cfg, seed=9, identities=run.identities)  # same clients, another session
    assert old.session_id != run.session_id
    old_lists, key_lists = drive(old, "share_keys"), drive(run, "share_keys")
    target, sid = 0, run.session_id
    old_u1, old_digests, old_adverts = m.read_key_list(m.open_envelope(
        old_lists[target], m.MsgType.KEY_LIST, old.session_id).body)
    if how == "whole_message":
        message = old_lists[target]
    elif how == "rewrapped_body":  # server messages are unsigned: it can re-frame old content
        message = from_server("share_keys", sid, m.key_list_body(old_u1, old_adverts,
                                                                 old_digests))
    else:
        u1, _, adverts = key_list_of(run, target)
        adverts[2] = old_adverts[2]  # client 2's (validly signed) advert from the old session
        message = from_server("share_keys", sid, m.key_list_body(u1, adverts))  # its digest
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, "share_keys", message)
    assert exc.value.step == "share_keys"
    assert call(run, 1, "share_keys", key_lists[1])  # control


@pytest.mark.parametrize("relayed", ["left_out_only", "everyone"])
def test_relay_from_a_group_member_outside_my_u1_aborts_client(relayed):
    """0 is shown a U1 without 4, then relayed 4's genuine shares. Alone, they are refused by
    the U1 check; among the others' they are refused too (the others' shares were sealed in
    the session context of the full U1, which 0 does not share)."""
    cfg = config(5, 3)
    run = enroll(cfg, seed=17)
    drive(run, "share_keys")
    sid, target, left_out = run.session_id, 0, 4
    everyone = frozenset(run.ids)
    u1, _, adverts = key_list_of(run, target)
    adverts = [raw for raw in adverts
               if m.open_envelope(raw, m.MsgType.ADVERTISE, sid).sender != left_out]
    call(run, target, "share_keys",  # 4 advertised, but 0 is shown a U1 without it
         from_server("share_keys", sid, m.key_list_body(u1 - {left_out}, adverts)))
    shares = {c: call(run, c, "share_keys", run.received["share_keys"][c]) for c in run.ids[1:]}
    senders = [left_out] if relayed == "left_out_only" else sorted(everyone - {target})
    relay = {c: share_entries(m.open_envelope(shares[c], m.MsgType.SHARES, sid).body)[target]
             .ciphertext for c in senders}  # 4's genuine shares for 0, too
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, "masked_input", from_server("masked_input", sid, m.relay_body(relay)))
    assert exc.value.step == "masked_input"
    if relayed == "left_out_only":
        assert "not in my group in U1" in exc.value.reason
    with pytest.raises(ProtocolViolation):  # aborted for good
        call(run, target, "consistency_check",
             from_server("consistency_check", sid, m.ids_body(everyone)))


@given(how=st.sampled_from(["bit_flip", "swapped_senders", "meant_for_another_recipient"]),
       which=st.integers(0, 2**16), bit=st.integers(0, 7))
def test_tampered_share_ciphertext_aborts_recipient(how, which, bit):
    cfg = config(4, 3)
    run = enroll(cfg, seed=10)
    relays = drive(run, "masked_input")
    sid, target, bystander = run.session_id, 0, 1
    cts = m.read_relay(m.open_envelope(relays[target], m.MsgType.SHARE_RELAY, sid).body)
    senders = sorted(cts)
    v = senders[which % len(senders)]
    if how == "bit_flip":
        cts[v] = flip(cts[v], which // len(senders), bit)
    elif how == "swapped_senders":
        w = senders[(which + 1) % len(senders)]
        cts[v], cts[w] = cts[w], cts[v]
    else:
        other = next(r for r in run.ids if r not in (target, v))
        entries = share_entries(opened(run, run.replies["share_keys"][v], m.MsgType.SHARES).body)
        cts[v] = entries[other].ciphertext
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, "masked_input", from_server("masked_input", sid, m.relay_body(cts)))
    assert exc.value.step == "masked_input"
    with pytest.raises(ProtocolViolation):  # aborted: even the honest relay is refused now
        call(run, target, "masked_input", relays[target])
    assert call(run, bystander, "masked_input", relays[bystander])  # control


@pytest.mark.parametrize("how", ["validly_signed_second_advert", "flipped_key_byte",
                                 "listed_digest_of_a_second_advert"])
def test_altered_own_advertisement_is_detected(how):
    cfg = config(5, 3)
    run = enroll(cfg, seed=12)
    key_lists = drive(run, "share_keys")
    sid, target = run.session_id, 0
    u1, digests, adverts = key_list_of(run, target)
    i = next(i for i, raw in enumerate(adverts)
             if m.open_envelope(raw, m.MsgType.ADVERTISE, sid).sender == target)
    # The same client made to advertise twice in this session (e.g. after a restart): the
    # second advert carries a valid signature, so only the own-advert checks can catch it.
    again = SecAggClient(cfg, target, run.identities[target], run.public, sid).advertise_keys()
    m.open_signed(again, m.MsgType.ADVERTISE, sid, run.public)
    if how == "validly_signed_second_advert":  # listed with its own digest
        adverts[i] = again
        digests = None
    elif how == "flipped_key_byte":
        adverts[i] = flip(adverts[i], HEADER + 5)
        digests = None
    else:  # my true advertisement, but the list names the second one's digest for me
        digests = {**digests, target: m.advert_digest(again)}
    with pytest.raises(ProtocolViolation) as exc:
        call(run, target, "share_keys",
             from_server("share_keys", sid, m.key_list_body(u1, adverts, digests)))
    assert exc.value.step == "share_keys"
    if how == "validly_signed_second_advert":
        assert "own advertisement" in exc.value.reason
    elif how == "listed_digest_of_a_second_advert":
        assert "does not match its listed digest" in exc.value.reason
    assert call(run, 1, "share_keys", key_lists[1])  # control


# ------------------------------------------------------------------- parameters
@pytest.mark.parametrize("n, k", [(4, None), (5, None), (6, None), (8, 2), (8, 4), (9, 6)])
def test_config_refuses_thresholds_that_let_a_split_view_unmask_an_input(n, k):
    """2t <= n (2t <= k + 1 with SecAgg+): two disjoint sets of t clients each pass their own
    consistency check (test_split_view_unmasks_an_input_below_the_refused_thresholds)."""
    group = n if k is None else k + 1
    lowest = group // 2 + 1
    for t in range(1, lowest):
        with pytest.raises(ValueError, match="threshold"):
            config(n, t, k)
    assert config(n, lowest, k).threshold == lowest


@pytest.mark.parametrize("n, dropout, corruption", [(8, 0.0, 0.0), (50, 0.0, 0.0),
                                                    (100, 0.05, 0.0), (20, 0.2, 0.1)])
def test_chosen_secagg_plus_params_keep_split_views_out(n, dropout, corruption):
    k, t = choose_secagg_plus_params(n, dropout, corruption)
    group = min(k, n - 1) + 1
    assert 2 * t > group
    config(n, t, k)  # accepted


@pytest.mark.parametrize("params", ["complete_n6_t3", "secagg_plus_n8_k2_t1"])
def test_split_view_unmasks_an_input_below_the_refused_thresholds(params):
    """What the threshold check prevents: t of the victim's group are told it dropped, the rest
    that it survived; every client passes its consistency check and unmasks. It also validates
    the harness: the invariant checker flags the victim, and the collected material does unmask
    the victim's input exactly."""
    cfg = unchecked_config(6, 3) if params == "complete_n6_t3" else unchecked_config(8, 1, 2)
    with pytest.raises(ValueError, match="threshold"):
        config(cfg.num_clients, cfg.threshold, cfg.neighbors)
    with pytest.raises(PolicyViolation, match="threshold"):  # and every client refuses it
        enroll(cfg, seed=13)
    run = enroll(cfg, seed=13, policy=RegistryOnlyPolicy)  # clients without the threshold rule
    drive(run, "consistency_check")
    group, victim = groups_of(run), 0
    told_dropped = sorted(group[victim] - {victim})[: cfg.threshold]
    everyone = frozenset(run.ids)
    loot = split_view(run, {c: everyone - {victim} if c in told_dropped else everyone
                            for c in run.ids})
    assert loot.unmaskable() == {victim}
    assert loot.recover_input(victim).tolist() == run.inputs[victim].tolist()


@pytest.mark.parametrize("key_list", ["colluders_adverts", "adverts_of_my_group_in_u1"])
def test_server_cannot_surround_a_client_with_colluders_by_tailoring_u1(key_list):
    """SecAgg+: U1 reaches each client from the server, unauthenticated. Were a client's group
    derived from it (as it was before the graph was fixed over the enrolled clients), a U1 of
    {victim} + t colluders would make the colluders its whole group, and they would unmask it:
    the code below does exactly that when the victim goes along. The victim must refuse first."""
    cfg = config(9, 3, k=4)  # 2t > k + 1: a threshold SecAggConfig accepts
    run = enroll(cfg, seed=15)
    sid, victim = run.session_id, 0
    outside = sorted(frozenset(run.ids) - groups_of(run)[victim])
    colluders = outside[: cfg.threshold]  # t clients that work for the server, no neighbours
    enc = {c: crypto.AgreementKey() for c in colluders}  # the colluders' keys, held by the server
    mask = {c: crypto.AgreementKey() for c in colluders}
    adverts = {c: m.seal(m.MsgType.ADVERTISE, sid, c, m.advertise_body(enc[c].public,
                                                                       mask[c].public),
                         run.identities[c]) for c in colluders}
    u1 = frozenset([victim, *colluders])  # every other honest client is left out, for the victim
    try:
        adverts[victim] = call(run, victim, "advertise_keys")
        shown = sorted(u1) if key_list == "colluders_adverts" else [victim]
        digests = {c: m.advert_digest(adverts[c]) for c in u1}
        context = m.session_context(sid, digests)  # the world the server made for the victim
        shares = call(run, victim, "share_keys", from_server(
            "share_keys", sid, m.key_list_body(u1, [adverts[c] for c in shown], digests)))
        enc_pk, mask_pk = m.read_advertise(m.open_envelope(adverts[victim], m.MsgType.ADVERTISE,
                                                           sid).body)
        relay = {}
        for c in colluders:  # each colluder sends the victim a well-formed (worthless) share pair
            key = share_encryption_key(enc[c].agree(enc_pk), sid, c, victim)
            relay[c] = crypto.aead_encrypt(key, shamir.to_bytes(1) * 2,
                                          share_associated_data(sid, c, victim, context))
        y = call(run, victim, "masked_input",
                 from_server("masked_input", sid, m.relay_body(relay)))
    except ProtocolViolation as exc:
        assert exc.step == "share_keys"  # refused before sharing or masking anything
        return
    # The colluders decrypt the victim's shares of b_u: t of them rebuild it.
    points = []
    for c, entry in share_entries(m.open_envelope(shares, m.MsgType.SHARES, sid).body).items():
        if c != victim:
            key = share_encryption_key(enc[c].agree(enc_pk), sid, victim, c)
            plain = crypto.aead_decrypt(key, entry.ciphertext,
                                          share_associated_data(sid, victim, c, context))
            points.append((c + 1, shamir.from_bytes(plain[: shamir.SHARE_BYTES])))
    b = shamir.reconstruct(points, cfg.threshold).to_bytes(32, "big")
    ring = Ring(cfg.modulus, cfg.vector_length)
    x = ring.lift(m.read_vector(m.open_envelope(y, m.MsgType.MASKED_INPUT, sid).body, D, Q,
                                cfg.element_bytes))
    ring.add_mask_(x, self_mask_seed(b, sid, victim), -1)
    for c in colluders:  # the pairwise masks: the colluders hold their own mask keys
        ring.add_mask_(x, pairwise_seed(mask[c], mask_pk, sid, c, victim),
                       -1 if c > victim else +1)
    assert ring.reduce(x).tolist() != run.inputs[victim].tolist(), \
        "the server and t colluders unmasked the victim's input"


# ------------------------------------------------------------------- the adversarial server
@dataclass(frozen=True)
class Sent:
    """A message the adversary can deliver: its bytes, and what it carries.

    ``kind`` is the round whose message type the bytes have (or "client" / "foreign" for
    messages no round accepts as such); ``content`` the inner items (adverts, relayed
    ciphertexts, U3, signed CONSISTENCY messages); ``intact`` is False when the frame itself was
    damaged, so that any client must refuse it whatever the content.
    """

    kind: str
    data: bytes
    content: object = None
    intact: bool = True


@dataclass
class Tracked:
    """What the adversary knows of one client: enough to predict every answer it gives."""

    next: int = 0  # index into STEPS of the round it may run next
    gone: bool = False  # raised ProtocolViolation, or finished: never speaks again
    starved: bool = False  # the server stopped serving it: it looks dropped to the others
    u1: frozenset[int] = frozenset()  # the U1 it was shown
    world: frozenset | None = None  # its key list: (id, listed advert digest) for each of U1
    shared: frozenset[int] = frozenset()
    u3: frozenset[int] | None = None


@st.composite
def active_sessions(draw):
    """Configs for which the protocol claims security against a malicious server: 2t > n on
    the complete graph, 2t > k + 1 with SecAgg+."""
    if draw(st.booleans()):
        n, k = draw(st.integers(4, 7)), None
        t = draw(st.integers(n // 2 + 1, n))
    else:
        n, k = draw(st.integers(5, 8)), draw(st.sampled_from([2, 4]))
        t = draw(st.integers(k // 2 + 1, k))
    ids = draw(st.lists(st.integers(0, 3 * n), min_size=n, max_size=n, unique=True))
    return config(n, t, k), ids, draw(st.integers(0, 2**32 - 1))


# What one client per round may get instead of the honest message (the others get the honest
# one, so that sessions get far): each list is specific to the round's message.
DEVIATIONS = {
    "advertise_keys": [],
    "share_keys": ["other_u1", "u1_without_me", "u1_unenrolled", "missing_advert",
                   "extra_advert", "duplicate", "forge", "foreign", "damage_frame",
                   "wrong_digest", "stale_advert", "own_stale_advert"],
    "masked_input": ["subset", "forge", "relabel", "misaddressed", "damage_frame"],
    "consistency_check": ["random", "replayed_u3", "malformed", "damage_frame"],
    "unmasking": ["all", "subset", "below_t", "forge", "foreign", "duplicate", "damage_frame"],
}
ANY_ROUND = ["replayed", "out_of_order", "starve"]
DAMAGEABLE = [*range(0, SENDER_FIELD.start), *range(SENDER_FIELD.stop, HEADER)]


class MaliciousServer(RuleBasedStateMachine):
    """The test is the server. Each round rule sends the clients due for that round its message:
    honest for most, and for one of them, sometimes, a forged, replayed (from this session or an
    earlier one, under another session id or the same), dropped, damaged or out-of-order one; U3
    is dealt out as a split view; a key list may list a wrong digest or an earlier session's
    advertisement (same session id), which puts its recipient in another world (session
    context). The model in ``accepts`` predicts from what was sent whether an honest client must
    answer or raise; ``deliver`` checks that it does exactly that, and the invariant checks what
    the server has collected after every step."""

    @initialize(session=active_sessions())
    def enroll_clients(self, session):
        cfg, ids, seed = session
        rng = random.Random(seed)
        self.run = enroll(cfg, seed, ids=ids, rng=rng)
        self.cfg, self.t, self.sid, self.ids = cfg, cfg.threshold, self.run.session_id, sorted(ids)
        self.clients = {c: Tracked() for c in ids}
        enrolled = frozenset(ids)  # the graph is fixed over the enrolled clients, whatever U1
        self.groups = {c: neighbours_of(c, enrolled, cfg.neighbors, public_seed(self.sid, enrolled))
                       | {c} for c in ids}
        self.loot = Loot(cfg, self.sid, self.run.public)  # contexts: per client, as dealt
        self.adverts: dict[bytes, int] = {}  # this session's ADVERTISE messages -> sender
        self.ciphertexts: dict[tuple[int, int], bytes] = {}  # (sender, recipient) -> ciphertext
        self.signed: dict[bytes, tuple[int, frozenset[int], frozenset]] = {}  # -> signer, U3,
        # and the world it was signed in
        self.sent_u3: list[frozenset[int]] = []
        self.history: list[Sent] = []
        old = enroll(cfg, seed, identities=self.run.identities, rng=rng)  # the same, earlier
        drive(old)
        self.foreign = [Sent("foreign", raw, intact=False)
                        for by_step in (*old.received.values(), *old.replies.values())
                        for raw in by_step.values()]
        self.foreign_adverts = list(old.replies["advertise_keys"].values())
        self.foreign_signed = list(old.replies["consistency_check"].values())
        # An earlier session under this very session id: its client messages verify as far as
        # the session id goes, and its advertisements are validly signed for this session.
        twin = enroll(cfg, seed, identities=self.run.identities, session_id=self.sid, rng=rng)
        drive(twin)
        self.foreign += [Sent("foreign", raw, intact=False)
                         for step in STEPS for raw in twin.replies[step].values()]
        self.foreign += [Sent("foreign", raw, intact=False)  # its own adverts are not in them
                         for step in ("share_keys", "masked_input", "unmasking")
                         for raw in twin.received[step].values()]
        self.stale_adverts = {c: twin.replies["advertise_keys"][c] for c in ids}
        self.foreign_adverts += list(self.stale_adverts.values())
        self.foreign_signed += list(twin.replies["consistency_check"].values())

    # ---------------------------------------------------------------- the model
    def accepts(self, c: int, step: str, sent: Sent | None) -> bool:
        """Whether an honest client must answer (True) or raise ProtocolViolation (False)."""
        me = self.clients[c]
        if me.gone or me.next != STEPS.index(step):
            return False
        if step == "advertise_keys":
            return True
        if sent.kind != step or not sent.intact:
            return False
        if step == "share_keys":
            u1, adverts, listed = sent.content
            senders = [self.advert_sender(raw) for raw in adverts]
            if None in senders or len(set(senders)) != len(senders):
                return False
            if c not in u1 or not u1 <= set(self.ids):
                return False
            if any(listed.get(v) != m.advert_digest(raw)
                   for v, raw in zip(senders, adverts, strict=True)):
                return False  # an advertisement that is not the one listed for its sender
            if self.stale_adverts[c] in adverts:  # my advertisement, but from the other session
                return False
            group = self.groups[c]
            return set(senders) == group & u1 and len(group & u1) >= self.t
        group = self.groups[c]
        if step == "masked_input":  # shares sealed in another world never decrypt in mine
            return (all(v in group & me.u1 and v != c and ct == self.ciphertexts.get((v, c))
                        and self.clients[v].world == me.world
                        for v, ct in sent.content.items())
                    and len(set(sent.content) | {c}) >= self.t)
        if step == "consistency_check":
            u3 = sent.content
            return c in u3 and u3 & group <= me.shared and len(u3 & group) >= self.t
        signers = [self.signed.get(raw, (None, None, None)) for raw in sent.content]
        who = [s for s, _, _ in signers]
        return (all(s in me.u3 & group and u3 == me.u3 and world == me.world
                    for s, u3, world in signers)
                and len(set(who)) == len(who) and len(who) >= self.t)

    def advert_sender(self, raw: bytes) -> int | None:
        """The sender of a validly signed advertisement for this session id: one of this
        session's, or of the earlier session under the same id; None for anything else."""
        if raw in self.adverts:
            return self.adverts[raw]
        return next((c for c, old in self.stale_adverts.items() if old == raw), None)

    # ---------------------------------------------------------------- delivery
    def deliver(self, c: int, step: str, sent: Sent | None) -> None:
        expected = self.accepts(c, step, sent)
        me = self.clients[c]
        try:
            reply = call(self.run, c, step, None if sent is None else sent.data)
        except ProtocolViolation as exc:
            assert not expected, f"client {c} refused an acceptable {step}: {exc}"
            assert exc.step == step
            me.gone = True
            event(f"refused {step}")
            return
        assert expected, f"client {c} answered a deviating {step} ({sent})"
        assert isinstance(reply, bytes)
        event(f"answered {step}")
        me.next += 1
        if sent is not None:
            self.history.append(sent)
        self.history.append(Sent("client", reply, intact=False))
        if step == "share_keys":  # from now on, c signs in the world of the key list it got
            u1, _, listed = sent.content
            me.u1 = u1
            me.world = frozenset((v, listed.get(v, bytes(m.DIGEST_BYTES))) for v in u1)
            self.loot.contexts[c] = m.session_context(self.sid, dict(me.world))
            if len({cl.world for cl in self.clients.values() if cl.world is not None}) > 1:
                event("split worlds: clients got different key lists")
        context = b"" if step == "advertise_keys" else self.loot.contexts[c]
        env = m.open_signed(reply, m.MsgType(reply[4]), self.sid, self.run.public, context)
        assert env.sender == c
        if step == "advertise_keys":
            self.adverts[reply] = c
            self.loot.add_advert(reply)
        elif step == "share_keys":
            entries = self.loot.add_shares(reply)
            assert set(entries) == self.groups[c] & me.u1, "shares go to exactly my group in U1"
            for w, e in entries.items():
                assert (w == c) == (e.ciphertext == b"")
                if w != c:
                    self.ciphertexts[(c, w)] = e.ciphertext
        elif step == "masked_input":
            me.shared = frozenset(sent.content) | {c}
            self.loot.relayed[c] = frozenset(sent.content)
            self.loot.add_masked(reply)
        elif step == "consistency_check":
            me.u3 = sent.content
            assert env.body == signed_u3(me.u3), "a client signs the U3 it was sent"
            self.signed[reply] = (c, me.u3, me.world)
            if len({u3 for _, u3, _ in self.signed.values()}) > 1:
                event("split view: clients signed different U3s")
        else:
            kinds = self.loot.add_unmask(reply)
            assert kinds == {v: SELF if v in me.u3 else MASK for v in me.shared}
            me.gone = True
            event("unmasked")
            if MASK in kinds.values():
                event("unmasked: revealed a dropped peer's mask-key share")

    def live(self) -> list[int]:
        return [c for c in self.ids if not self.clients[c].gone and not self.clients[c].starved]

    def due(self, step: str) -> list[int]:
        return [c for c in self.live() if self.clients[c].next == STEPS.index(step)]

    def round_open(self, step: str) -> bool:
        """Rounds go in order: the server serves ``step`` once no live client is behind it."""
        return bool(self.due(step)) and all(self.clients[c].next >= STEPS.index(step)
                                            for c in self.live())

    def deal(self, data, step: str) -> list[tuple[int, str]]:
        """(client, move) for the clients served now: every due client or some of them (the
        others are served later, maybe differently); at most one of them gets a deviation."""
        due = self.due(step)
        if data.draw(st.sampled_from(["all", "all", "all", "some"])) == "some":
            due = [c for c in due if data.draw(st.booleans())] or due[:1]
        deviant = data.draw(st.sampled_from(due)) if data.draw(st.integers(0, 4)) == 0 else None
        return [(c, data.draw(st.sampled_from(DEVIATIONS[step] + ANY_ROUND)) if c == deviant
                 else "honest") for c in due]

    def pooled(self, data) -> Sent:
        return data.draw(st.sampled_from(self.history + self.foreign))

    def off_script(self, data, c: int, step: str, move: str) -> bool:
        """The moves every round has: a replayed message, another round altogether, or none
        (the client is never served again)."""
        if move == "starve":
            self.clients[c].starved = True
        elif move == "replayed" and step != "advertise_keys":
            self.deliver(c, step, self.pooled(data))
        elif move in ANY_ROUND:
            other = data.draw(st.sampled_from([s for s in STEPS if s != step]))
            self.deliver(c, other, None if other == "advertise_keys" else self.pooled(data))
        else:
            return False
        return True

    def frame(self, step: str, body: bytes, content, data, move: str) -> Sent:
        sent = Sent(step, from_server(step, self.sid, body), content)
        if move != "damage_frame":
            return sent
        how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
        raw = sent.data
        if how == "flip":
            raw = flip(raw, data.draw(st.sampled_from(DAMAGEABLE)), data.draw(st.integers(0, 7)))
        else:
            raw = raw[:-1] if how == "truncate" else raw + b"\x00"
        return Sent(step, raw, content, intact=False)

    # ---------------------------------------------------------------- rounds
    @precondition(lambda self: self.round_open("advertise_keys"))
    @rule(data=st.data())
    def advertise(self, data):
        for c, move in self.deal(data, "advertise_keys"):
            if not self.off_script(data, c, "advertise_keys", move):
                self.deliver(c, "advertise_keys", None)

    @precondition(lambda self: self.round_open("share_keys"))
    @rule(data=st.data())
    def send_key_lists(self, data):
        for c, move in self.deal(data, "share_keys"):
            if self.off_script(data, c, "share_keys", move):
                continue
            by_sender = {sender: raw for raw, sender in self.adverts.items()}
            u1 = frozenset(by_sender)
            if move == "other_u1":  # a different U1 for this client (split views of U1)
                u1 = frozenset(c2 for c2 in u1 if data.draw(st.booleans())) | {c}
            elif move == "u1_without_me":
                u1 -= {c}
            elif move == "u1_unenrolled":
                u1 |= {10**6}
            group = self.groups[c] & u1
            items = [by_sender[v] for v in sorted(group) if v in by_sender]
            listed = {v: m.advert_digest(by_sender[v]) for v in u1 if v in by_sender}
            if move == "wrong_digest" and listed:  # a member's listed digest is not its advert's
                v = data.draw(st.sampled_from(sorted(listed)))
                listed[v] = flip(listed[v], data.draw(st.integers(0, m.DIGEST_BYTES - 1)))
            elif move in ("stale_advert", "own_stale_advert"):
                # An advertisement from the earlier session under this id, listed with its digest:
                # undetectable for another member's, unless it is one's own.
                others = [v for v in sorted(group) if v in by_sender and v != c]
                v = c if move == "own_stale_advert" or not others else data.draw(
                    st.sampled_from(others))
                if by_sender.get(v) in items:
                    items[items.index(by_sender[v])] = self.stale_adverts[v]
                    listed[v] = m.advert_digest(self.stale_adverts[v])
            if move == "missing_advert" and items:
                items.remove(data.draw(st.sampled_from(items)))
            elif move == "extra_advert" and set(by_sender) - group:
                items.append(by_sender[data.draw(st.sampled_from(sorted(set(by_sender) - group)))])
            elif move == "duplicate" and items:
                items.append(data.draw(st.sampled_from(items)))
            elif move == "forge" and items:
                i = data.draw(st.integers(0, len(items) - 1))
                items[i] = flip(items[i], data.draw(st.integers(0, len(items[i]) - 1)))
            elif move == "foreign":
                items.append(data.draw(st.sampled_from(self.foreign_adverts)))
            self.deliver(c, "share_keys", self.frame(
                "share_keys", m.key_list_body(u1, items, listed), (u1, tuple(items), listed),
                data, move))

    @precondition(lambda self: self.round_open("masked_input"))
    @rule(data=st.data())
    def send_relays(self, data):
        for c, move in self.deal(data, "masked_input"):
            if self.off_script(data, c, "masked_input", move):
                continue
            shown = self.clients[c].u1  # an honest server relays from the U1 it showed
            cts = {v: ct for (v, w), ct in sorted(self.ciphertexts.items())
                   if w == c and v in shown}
            if move == "subset":
                cts = {v: ct for v, ct in cts.items() if data.draw(st.booleans())}
            elif move == "forge" and cts:
                v = data.draw(st.sampled_from(sorted(cts)))
                cts[v] = flip(cts[v], data.draw(st.integers(0, len(cts[v]) - 1)),
                              data.draw(st.integers(0, 7)))
            elif move == "relabel" and len(cts) >= 2:
                v, w = data.draw(st.permutations(sorted(cts)))[:2]
                cts[v], cts[w] = cts[w], cts[v]
            elif move == "misaddressed":
                elsewhere = sorted(p for p in self.ciphertexts if p[1] != c)
                if elsewhere:
                    v, w = data.draw(st.sampled_from(elsewhere))
                    cts[v] = self.ciphertexts[(v, w)]
            self.deliver(c, "masked_input",
                         self.frame("masked_input", m.relay_body(cts), dict(cts), data, move))

    @precondition(lambda self: self.round_open("consistency_check"))
    @rule(data=st.data())
    def send_survivors(self, data):
        """U3 = the clients whose masked input arrived; or a split view: each client is told, at
        random, that a victim survived or that it dropped."""
        masked = frozenset(self.loot.masked)
        victim = data.draw(st.sampled_from(self.ids)) if data.draw(st.booleans()) else None
        for c, move in self.deal(data, "consistency_check"):
            if self.off_script(data, c, "consistency_check", move):
                continue
            u3 = masked
            if victim is not None:
                u3 = masked - {victim} if data.draw(st.booleans()) else masked | {victim}
            if move == "random":
                u3 = frozenset(data.draw(st.sets(st.sampled_from([*self.ids, 10**6]))))
            elif move == "replayed_u3" and self.sent_u3:
                u3 = data.draw(st.sampled_from(self.sent_u3))
            self.sent_u3.append(u3)
            if move == "malformed":  # ids out of order, or a trailing byte
                body = (m.ids_body(u3) + b"\x00" if len(u3) < 2 else
                        m.u32(len(u3)) + b"".join(m.u32(i) for i in sorted(u3, reverse=True)))
                sent = Sent("consistency_check", from_server("consistency_check", self.sid,
                                                             body), u3, intact=False)
            else:
                sent = self.frame("consistency_check", m.ids_body(u3), u3, data, move)
            self.deliver(c, "consistency_check", sent)

    @precondition(lambda self: self.round_open("unmasking"))
    @rule(data=st.data())
    def send_signatures(self, data):
        """By default each client gets its group's signatures on the U3 it was sent."""
        for c, move in self.deal(data, "unmasking"):
            if self.off_script(data, c, "unmasking", move):
                continue
            everything = sorted(self.signed, key=lambda raw: (self.signed[raw][0],
                                                              sorted(self.signed[raw][1])))
            me = self.clients[c]
            items = [raw for raw in everything  # by default, my world's signatures on my U3
                     if self.signed[raw][1:] == (me.u3, me.world)
                     and self.signed[raw][0] in self.groups[c]]
            mine = list(items)
            if move == "all":
                items = everything
            elif move == "subset":
                items = [raw for raw in everything if data.draw(st.booleans())]
            elif move == "below_t":
                items = mine[: self.t - 1]
            elif move == "forge" and mine:
                i = data.draw(st.integers(0, len(mine) - 1))
                items[i] = flip(items[i], data.draw(st.integers(0, len(items[i]) - 1)))
            elif move == "foreign":
                items.append(data.draw(st.sampled_from(self.foreign_signed)))
            elif move == "duplicate" and mine:
                items.append(data.draw(st.sampled_from(mine)))
            self.deliver(c, "unmasking",
                         self.frame("unmasking", m.list_body(items), tuple(items), data, move))

    @precondition(lambda self: any(c.gone or c.starved for c in self.clients.values()))
    @rule(data=st.data())
    def call_a_client_that_is_gone(self, data):
        """A client that raised or finished, or that the server stopped serving, is called again:
        any round, any message seen so far."""
        step = data.draw(st.sampled_from(STEPS))
        c = data.draw(st.sampled_from([c for c in self.ids
                                       if self.clients[c].gone or self.clients[c].starved]))
        self.deliver(c, step, None if step == "advertise_keys" else self.pooled(data))

    # ---------------------------------------------------------------- the claim
    @invariant()
    def server_cannot_unmask_an_individual_input(self):
        if not hasattr(self, "loot"):
            return
        assert not self.loot.both_shares_from_one_holder()
        assert not self.loot.unmaskable()


def test_client_never_reveals_both_shares():
    run_state_machine_as_test(MaliciousServer)
