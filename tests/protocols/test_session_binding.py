"""Finding 1: a server that reuses a session id must not be able to mix sessions.

Until wire version 2, a client's CONSISTENCY signature covered (session id, type, sender, H(U3))
and nothing of the session it was made in. A server that ran the same clients twice under one
session id could collect signatures on U3 views of its choosing in an earlier run and relay them
in a later one, so that clients of the later run passed the consistency check on views that no t
of them shared in that run. Here the server does exactly that against honest ``SecAggClient``s
(complete graph, n = 5, t = 3) and asks clients 0 and 2 to reveal under U3 = {0, 1, 2}, 1 and 3
under {0, 1, 3}, 4 under {0, 1, 4}: it then holds t self-mask shares of clients 0 and 1 and t
mask-key shares of clients 2, 3 and 4, which unmask y_0 + y_1 = x_0 + x_1, the sum of two
inputs (fewer than t). Each run yields one signature per client, and the views above need two
earlier signatures from each of clients 0 and 1 ({0,1,3} and {0,1,4} from 0, {0,1,2} and
{0,1,4} from 1), so the server harvests in two earlier runs: an exhaustive search over every
choice of views (U2 included) finds no such split for n = 5, t = 3 with a single earlier run.

Now every signature after ADVERTISE covers the session context (messages.session_context), a
hash over each U1 member's fresh advertisement: every honest client refuses the replayed
signatures, and the server gets no share at all. ``test_the_attack_unmasks_two_inputs_when_
signatures_ignore_the_advertisements`` runs the same attack with the context reduced to the
session id (the old binding, patched in) and recovers x_0 + x_1 exactly: the attack is real and
the harness that rebuilds the sum is sound. (The attack code uses only what wire version 1 also
had; run against the previous commit's package, it recovers x_0 + x_1 too.)

The other replays (ADVERTISE, SHARES, MASKED_INPUT, share ciphertexts from an earlier run under
the same id) and split key lists (two instances of every client, two worlds, one session id)
are refused where they matter, and a property test plays random views and replays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from gptfl_secure.protocols import (
    STEPS,
    IdentityKey,
    ProtocolViolation,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    crypto,
    derivation,
    shamir,
)
from gptfl_secure.protocols import messages as m
from gptfl_secure.protocols.derivation import pairwise_seed, self_mask_seed
from gptfl_secure.protocols.ring import Ring

N, T, D, Q = 5, 3, 8, 2**16
CFG = SecAggConfig(num_clients=N, threshold=T, vector_length=D, modulus=Q)
SID = hashlib.sha256(b"session-binding/one-session-id").digest()
SELF, MASK = m.ShareKind.SELF_MASK, m.ShareKind.MASK_KEY
BAD_SIGNATURE = "another session context"  # what open_signed says of a signature from elsewhere

# The attack of the module docstring: U3 views in the attacked run, and in the two earlier runs
# (only the signatures of clients 0 and 1 are needed from those).
TARGET = frozenset({0, 1})
VIEWS = {0: frozenset({0, 1, 2}), 2: frozenset({0, 1, 2}), 1: frozenset({0, 1, 3}),
         3: frozenset({0, 1, 3}), 4: frozenset({0, 1, 4})}
HARVEST = [{0: frozenset({0, 1, 3}), 1: frozenset({0, 1, 2})},
           {0: frozenset({0, 1, 4}), 1: frozenset({0, 1, 4})}]


def identities_for(n: int, tag: bytes = b"") -> dict[int, IdentityKey]:
    return {c: IdentityKey(hashlib.sha256(b"session-binding/identity/%d/" % c + tag).digest())
            for c in range(n)}


def inputs_for(n: int, seed: int, d: int = D) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, Q, d, dtype=np.uint64) for c in range(n)}


def server_message(type_: m.MsgType, sid: bytes, body: bytes) -> bytes:
    return m.seal(type_, sid, m.SERVER, body)


# ------------------------------------------------------------------- one run of the clients
@dataclass
class Run:
    """One run of fresh client instances under ``sid``, driven by an honest server up to U3.

    ``replies[step][c]``: what client c sent at ``step``; ``received[step][c]``: what the server
    sent it for ``step``."""

    cfg: SecAggConfig
    sid: bytes
    identities: dict[int, IdentityKey]
    inputs: dict[int, np.ndarray]
    clients: dict[int, SecAggClient]
    server: SecAggServer
    replies: dict[str, dict[int, bytes]] = field(default_factory=dict)
    received: dict[str, dict[int, bytes]] = field(default_factory=dict)

    @property
    def public(self) -> dict[int, bytes]:
        return {c: k.public for c, k in self.identities.items()}

    def step(self, step: str, to_clients: dict[int, bytes] | None = None,
             replace: dict[int, bytes] | None = None):
        """Every addressed client runs ``step``; ``replace[c]`` is delivered to the server instead
        of c's reply. Returns the honest server's answer."""
        replies = {}
        for c in sorted(self.clients if to_clients is None else to_clients):
            args = () if to_clients is None else (to_clients[c],)
            if step == "masked_input":
                args += (self.inputs[c],)
            try:
                replies[c] = getattr(self.clients[c], step)(*args)
            except ProtocolViolation:
                continue
        self.replies[step] = dict(replies)
        for c, raw in (replace or {}).items():
            replies[c] = raw
        out = getattr(self.server, step)(replies)
        if step != "unmasking":
            self.received[STEPS[STEPS.index(step) + 1]] = out
        return out

    def until_u3(self) -> Run:
        """Honest advertise_keys, share_keys and masked_input."""
        out = None
        for step in STEPS[:3]:
            out = self.step(step, out)
        return self

    def sign(self, c: int, u3: frozenset[int]) -> bytes:
        """Client c's CONSISTENCY message, shown U3 = ``u3``."""
        return self.clients[c].consistency_check(
            server_message(m.MsgType.SURVIVORS, self.sid, m.ids_body(u3)))

    def unmask(self, c: int, signed: list[bytes]) -> bytes:
        return self.clients[c].unmasking(
            server_message(m.MsgType.SIGNATURES, self.sid, m.list_body(signed)))


def new_run(identities, sid: bytes, inputs, cfg: SecAggConfig = CFG) -> Run:
    public = {c: k.public for c, k in identities.items()}
    clients = {c: SecAggClient(cfg, c, identities[c], public, sid) for c in sorted(identities)}
    return Run(cfg, sid, dict(identities), inputs, clients, SecAggServer(cfg, public, sid))


# ------------------------------------------------------------------- what the server rebuilds
def _body(raw: bytes, type_: m.MsgType, sid: bytes):
    return m.open_envelope(raw, type_, sid).body


def rebuild_sum(run: Run, unmasked: dict[int, bytes], target: frozenset[int]):
    """The sum of the inputs of ``target`` from the run's messages and the UNMASK replies, as the
    server would rebuild it: b_u of each target client and the mask key of every other client
    from t shares that match their owner's commitments. None if the shares do not suffice."""
    sid, t = run.sid, run.cfg.threshold
    commits = {}
    for owner, raw in run.replies["share_keys"].items():
        for holder, e in m.read_shares(_body(raw, m.MsgType.SHARES, sid))[1].items():
            commits[(owner, holder)] = (e.commit_self_mask, e.commit_mask_key)
    shares: dict[tuple[int, m.ShareKind], list[tuple[int, int]]] = {}
    for holder, raw in unmasked.items():
        for owner, (_, share) in m.read_unmask(_body(raw, m.MsgType.UNMASK, sid)).items():
            commit_b, commit_k = commits[(owner, holder)]
            for kind, purpose, commit in ((SELF, derivation.SELF_MASK, commit_b),
                                          (MASK, derivation.MASK_KEY, commit_k)):
                if crypto.commitment(purpose, sid, owner, holder, share) == commit:
                    shares.setdefault((owner, kind), []).append((holder + 1,
                                                                  shamir.from_bytes(share)))

    def secret(owner: int, kind: m.ShareKind) -> bytes | None:
        points = shares.get((owner, kind), [])
        if len(points) < t:
            return None
        return shamir.reconstruct(points[:t], t).to_bytes(32, "big")

    mask_pk = {c: m.read_advertise(_body(raw, m.MsgType.ADVERTISE, sid))[1]
               for c, raw in run.replies["advertise_keys"].items()}
    ring = Ring(run.cfg.modulus, run.cfg.vector_length)
    total = ring.zeros()
    for u in sorted(target):
        b = secret(u, SELF)
        if b is None:
            return None
        y = m.read_vector(_body(run.replies["masked_input"][u], m.MsgType.MASKED_INPUT, sid),
                          run.cfg.vector_length, run.cfg.modulus, run.cfg.element_bytes)
        ring.add_(total, ring.lift(y))
        ring.add_mask_(total, self_mask_seed(b, sid, u), -1)
    for v in sorted(set(run.clients) - target):  # the pairwise masks between target and others
        raw_key = secret(v, MASK)
        if raw_key is None:
            return None
        key = crypto.AgreementKey.from_private_bytes(raw_key)
        for u in sorted(target):
            ring.add_mask_(total, pairwise_seed(key, mask_pk[u], sid, u, v), -1 if v > u else +1)
    return ring.reduce(total)


def true_sum(inputs, clients) -> list[int]:
    return [int(sum(int(inputs[c][j]) for c in clients) % Q) for j in range(D)]


# ------------------------------------------------------------------- the attack
@dataclass
class Outcome:
    attacked: Run
    harvests: list[Run]
    signed: dict[int, bytes]  # the attacked run's own CONSISTENCY messages
    harvested: dict[tuple[int, frozenset[int]], bytes]  # (signer, U3) -> earlier run's
    unmasked: dict[int, bytes]
    refused: dict[int, ProtocolViolation]
    recovered: np.ndarray | None


def reused_session_id_attack(identities=None, sid: bytes = SID, seed: int = 0) -> Outcome:
    """Two harvesting runs and the attacked run, all under ``sid``, same clients."""
    identities = identities or identities_for(N)
    inputs = inputs_for(N, seed)
    harvests, harvested = [], {}
    for views in HARVEST:
        run = new_run(identities, sid, inputs).until_u3()
        for c, u3 in views.items():
            harvested[(c, u3)] = run.sign(c, u3)
        harvests.append(run)
    attacked = new_run(identities, sid, inputs).until_u3()
    signed = {c: attacked.sign(c, VIEWS[c]) for c in sorted(VIEWS)}
    unmasked, refused = {}, {}
    for c, u3 in sorted(VIEWS.items()):
        bundle = [signed[s] if VIEWS.get(s) == u3 else harvested[(s, u3)] for s in sorted(u3)]
        try:
            unmasked[c] = attacked.unmask(c, bundle)
        except ProtocolViolation as exc:
            refused[c] = exc
    return Outcome(attacked, harvests, signed, harvested, unmasked, refused,
                   rebuild_sum(attacked, unmasked, TARGET))


def test_the_views_would_hand_over_two_inputs():
    """The bookkeeping of the attack: each view has t signers, and the reveals it asks for give
    t self-mask shares of 0 and 1 and t mask-key shares of 2, 3 and 4."""
    for u3 in set(VIEWS.values()):
        fresh = {s for s in u3 if VIEWS.get(s) == u3}
        earlier = {s for s in u3 if any(h.get(s) == u3 for h in HARVEST)}
        assert fresh | earlier == u3 and len(u3) >= T
        assert len(fresh) < T, "a view this run's own signatures cover needs no replay"
    # A holder reveals, for every client (itself included), the self-mask share if that client
    # is in the U3 it was shown, else the mask-key share.
    holders = {(v, kind): [h for h, u3 in VIEWS.items() if (v in u3) == (kind is SELF)]
               for v in range(N) for kind in (SELF, MASK)}
    assert all(len(holders[(v, SELF)]) >= T for v in TARGET)
    assert all(len(holders[(v, MASK)]) >= T for v in set(range(N)) - TARGET)
    assert len(TARGET) < T


def test_reused_session_id_cannot_replay_consistency_signatures():
    out = reused_session_id_attack()
    assert not out.unmasked, "a client revealed shares on signatures from an earlier run"
    assert set(out.refused) == set(VIEWS)
    for exc in out.refused.values():
        assert exc.step == "unmasking" and "consistency check failed" in exc.reason
        assert BAD_SIGNATURE in exc.reason
    assert out.recovered is None
    # Each harvested signature is genuine in the run it was made in, and nowhere else.
    context = out.attacked.server.context
    for (signer, _), raw in out.harvested.items():
        made_in = [h for h in out.harvests if _verifies(h, raw, h.server.context)]
        assert len(made_in) == 1 and made_in[0].sid == out.attacked.sid
        assert not _verifies(out.attacked, raw, context)
        assert m.open_envelope(raw, m.MsgType.CONSISTENCY, SID).sender == signer
    # The attacked run's own signatures verify under its context: the refusals are the replays.
    assert all(_verifies(out.attacked, raw, context) for raw in out.signed.values())


def _verifies(run: Run, raw: bytes, context: bytes) -> bool:
    try:
        m.open_signed(raw, m.MsgType.CONSISTENCY, run.sid, run.public, context)
        return True
    except m.MessageError:
        return False


def test_the_attack_unmasks_two_inputs_when_signatures_ignore_the_advertisements(monkeypatch):
    """Control: with the session context reduced to a hash of the session id (the binding of
    wire version 1: the same in every run under one id), the very same attack goes through:
    every client reveals, and the server rebuilds x_0 + x_1 exactly, two inputs below t = 3."""
    def session_id_only(session_id, digests):
        return hashlib.sha256(b"session-binding/old-binding" + session_id).digest()

    monkeypatch.setattr(m, "session_context", session_id_only)
    out = reused_session_id_attack()
    assert not out.refused and set(out.unmasked) == set(VIEWS)
    assert out.recovered is not None
    assert out.recovered.tolist() == true_sum(out.attacked.inputs, TARGET)


# ------------------------------------------------------------------- other replays, same id
@pytest.mark.parametrize("step, type_", [("share_keys", m.MsgType.SHARES),
                                         ("masked_input", m.MsgType.MASKED_INPUT)])
def test_an_earlier_runs_shares_or_masked_input_are_rejected_by_the_honest_server(step, type_):
    """Client 2's message from an earlier run under the same session id, delivered in its place:
    validly signed, right session id, right step, but in another session context. The honest
    server drops client 2 and the session completes without it, exactly."""
    identities, inputs, victim = identities_for(N), inputs_for(N, 1), 2
    earlier = new_run(identities, SID, inputs).until_u3()
    now = new_run(identities, SID, inputs)
    out = None
    for s in STEPS:
        replace = {victim: earlier.replies[s][victim]} if s == step else None
        out = now.step(s, out, replace)
    assert now.server.rejected[victim].startswith(f"{step}: {type_.name} from {victim}: bad "
                                                  "signature")
    assert BAD_SIGNATURE in now.server.rejected[victim]
    assert victim not in out.included and len(out.included) == N - 1
    assert out.total.tolist() == true_sum(inputs, out.included)


def test_an_earlier_runs_advertisement_is_refused_where_it_matters():
    """An earlier run's ADVERTISE of client 2 under the same session id is validly signed for
    this id: neither the honest server nor another client can tell it from a fresh one (only a
    SessionLedger stops the second run, test_a_ledger_refuses_a_second_run_under_one_id). But
    it buys nothing: delivered next to 2's fresh one, the server drops 2 for sending twice;
    delivered instead of it, client 2 refuses the key list that lists it, the others seal their
    shares for 2 in a context that holds it, which the earlier instance of 2 cannot open, and the
    session completes without 2."""
    identities, inputs, victim = identities_for(N), inputs_for(N, 2), 2
    earlier = new_run(identities, SID, inputs)
    earlier.step("share_keys", earlier.step("advertise_keys"))  # its instances: at masked_input
    old_advert = earlier.replies["advertise_keys"][victim]

    both = new_run(identities, SID, inputs)
    adverts = [(c, cl.advertise_keys()) for c, cl in both.clients.items()] + [(victim,
                                                                              old_advert)]
    assert victim not in both.server.advertise_keys(adverts)
    assert both.server.rejected[victim] == "advertise_keys: duplicated message"

    now = new_run(identities, SID, inputs)
    key_lists = now.step("advertise_keys", None, {victim: old_advert})
    assert victim in now.server.u1  # the server cannot tell
    with pytest.raises(ProtocolViolation, match="own advertisement was altered"):
        now.clients[victim].share_keys(key_lists[victim])
    others = {c: raw for c, raw in key_lists.items() if c != victim}
    relays = now.step("share_keys", others)
    assert victim not in now.server.u2
    # The shares the others sealed for the earlier instance's keys: it cannot open them.
    shares_for_victim = {c: m.read_shares(_body(raw, m.MsgType.SHARES, SID))[1][victim].ciphertext
                         for c, raw in now.replies["share_keys"].items()}
    with pytest.raises(ProtocolViolation, match="does not decrypt"):
        earlier.clients[victim].masked_input(server_message(
            m.MsgType.SHARE_RELAY, SID, m.relay_body(shares_for_victim)), inputs[victim])
    out = None
    for s in STEPS[2:]:
        out = now.step(s, relays if out is None else out)
    assert out.included == frozenset(range(N)) - {victim}
    assert out.total.tolist() == true_sum(inputs, out.included)


def test_an_earlier_runs_share_ciphertexts_do_not_decrypt():
    """The share relay of an earlier run under the same session id, delivered to this run's
    instance: refused at masked_input (other keys, other context in the associated data)."""
    identities, inputs = identities_for(N), inputs_for(N, 3)
    earlier = new_run(identities, SID, inputs)
    now = new_run(identities, SID, inputs)
    for run in (earlier, now):
        run.step("share_keys", run.step("advertise_keys"))
    old_relays, relays = earlier.received["masked_input"], now.received["masked_input"]
    with pytest.raises(ProtocolViolation, match="does not decrypt") as exc:
        now.clients[0].masked_input(old_relays[0], inputs[0])
    assert exc.value.step == "masked_input"
    assert now.clients[1].masked_input(relays[1], inputs[1])  # control


def test_a_ledger_refuses_a_second_run_under_one_id():
    from gptfl_secure.protocols import PolicyViolation, SessionLedger

    identities = identities_for(N)
    public = {c: k.public for c, k in identities.items()}
    ledger = SessionLedger()
    SecAggClient(CFG, 0, identities[0], public, SID, ledger=ledger)
    with pytest.raises(PolicyViolation, match="was used before"):
        SecAggClient(CFG, 0, identities[0], public, SID, ledger=ledger)


# ------------------------------------------------------------------- split key lists
def test_clients_shown_different_key_lists_refuse_each_others_consistency_signatures():
    """Two instances of every client under one session id, and two key lists: world X holds the
    fresh instances of 0..3 with the earlier instance of 4, world Y the others. Each world runs
    to U3 on its own. Client 0 (X) and the fresh client 4 (Y) are shown the same U3 and t
    signatures on it, one of them from the other world: each refuses; with its own world's
    signature instead, each accepts."""
    identities, inputs = identities_for(N), inputs_for(N, 4)
    a, b = new_run(identities, SID, inputs), new_run(identities, SID, inputs)
    for run in (a, b):
        run.replies["advertise_keys"] = {c: cl.advertise_keys() for c, cl in run.clients.items()}
    worlds = {"X": {**{c: a for c in range(4)}, 4: b}, "Y": {**{c: b for c in range(4)}, 4: a}}
    everyone = frozenset(range(N))
    signed = {}
    for name, world in worlds.items():
        adverts = [world[c].replies["advertise_keys"][c] for c in range(N)]
        key_list = server_message(m.MsgType.KEY_LIST, SID, m.key_list_body(everyone, adverts))
        shares = {c: world[c].clients[c].share_keys(key_list) for c in range(N)}
        for c in range(N):
            relay = {v: m.read_shares(_body(shares[v], m.MsgType.SHARES, SID))[1][c].ciphertext
                     for v in range(N) if v != c}
            world[c].clients[c].masked_input(server_message(
                m.MsgType.SHARE_RELAY, SID, m.relay_body(relay)), inputs[c])
        signed[name] = {c: world[c].sign(c, everyone) for c in range(N)}
    contexts = {name: {world[c].clients[c]._context for c in range(N)}
                for name, world in worlds.items()}
    assert all(len(ctx) == 1 for ctx in contexts.values()) and contexts["X"] != contexts["Y"]
    for mine, other, c, peer in (("X", "Y", 0, 4), ("Y", "X", 4, 0)):
        run = worlds[mine][c]
        mates = [signed[mine][s] for s in range(N) if s not in (c, peer)][: T - 2]
        foreign = [signed[mine][c], *mates, signed[other][peer]]
        with pytest.raises(ProtocolViolation, match=BAD_SIGNATURE) as exc:
            run.unmask(c, foreign)
        assert exc.value.step == "unmasking"
    # control: the instances in the same worlds, and each other's own-world signatures
    for name, c, peer in (("X", 1, 4), ("Y", 1, 0)):
        run = worlds[name][c]
        assert run.unmask(c, [signed[name][c], signed[name][peer], signed[name][2]])


# ------------------------------------------------------------------- property
@st.composite
def replays(draw):
    """(n, t, the earlier run's views, this run's views, each client's list, an input seed).

    Views are biased so that lists often pass every other check: most clients of a base view
    are shown it, earlier views often equal this run's (a replay on the very view the client
    was shown), and a list is often "my view's signers from this run", with some of them
    swapped for their earlier signature, or with earlier signatures added."""
    n = draw(st.integers(3, 5))
    t = draw(st.integers(n // 2 + 1, n))
    clients = range(n)
    any_view = st.frozensets(st.integers(0, n - 1))
    base = draw(st.frozensets(st.integers(0, n - 1), min_size=t))
    now = {c: base if c in base and draw(st.integers(0, 3)) else draw(any_view) | {c}
           for c in clients}
    earlier = {c: now[c] if draw(st.booleans()) else draw(any_view) | {c} for c in clients}
    bundles = {}
    for c in clients:
        mine = [s for s in sorted(now[c]) if now[s] == now[c]]  # my view's signers, this run
        how = draw(st.sampled_from(["mine", "mine_swapped", "mine_plus", "random"]))
        fresh, replayed = list(mine), []
        if how == "mine_swapped" and mine:
            swapped = draw(st.lists(st.sampled_from(mine), min_size=1, unique=True))
            fresh = [s for s in mine if s not in swapped]
            replayed = swapped
        elif how == "mine_plus":
            replayed = draw(st.lists(st.sampled_from(list(clients)), min_size=1, max_size=2))
        elif how == "random":
            fresh = draw(st.lists(st.sampled_from(list(clients)), max_size=n + 1))
            replayed = draw(st.lists(st.sampled_from(list(clients)), max_size=2))
        bundles[c] = (fresh, replayed)
    return n, t, earlier, now, bundles, draw(st.integers(0, 2**16))


@given(case=replays())
def test_no_client_unmasks_on_a_replayed_signature(case):
    """Random (n, t), an earlier run under the same id whose clients sign random views, then a
    run whose clients sign random views and each get a random list of this run's and the
    earlier run's signatures. A client answers exactly when its list holds no replayed
    signature and >= t distinct signers from its view that signed its view in this run."""
    n, t, earlier_views, now_views, bundles, seed = case
    cfg = SecAggConfig(num_clients=n, threshold=t, vector_length=D, modulus=Q)
    identities, inputs = identities_for(n, b"property"), inputs_for(n, seed)

    def signatures(run, views):
        out = {}
        for c, u3 in views.items():
            try:
                out[c] = run.sign(c, u3)
            except ProtocolViolation:
                assert len(u3) < t  # only a view too small is refused here
        return out

    earlier = new_run(identities, SID, inputs, cfg).until_u3()
    old = signatures(earlier, earlier_views)
    now = new_run(identities, SID, inputs, cfg).until_u3()
    new = signatures(now, now_views)
    for c in sorted(new):
        fresh, replayed = bundles[c]
        fresh = [s for s in fresh if s in new]
        replayed = [s for s in replayed if s in old]
        listed = [new[s] for s in fresh] + [old[s] for s in replayed]
        ok_signers = {s for s in fresh if now_views[s] == now_views[c] and s in now_views[c]}
        expected = (not replayed and len(set(fresh)) == len(fresh) and set(fresh) == ok_signers
                    and len(ok_signers) >= t)
        try:
            reply = now.unmask(c, listed)
        except ProtocolViolation as exc:
            assert not expected, f"client {c} refused a consistent list: {exc}"
            assert exc.step == "unmasking"
            event("refused" + (" a replay" if replayed else ""))
            if any(earlier_views[s] == now_views[c] for s in replayed if s in old):
                event("refused a replay on the view it was shown")
            continue
        assert expected and not replayed, f"client {c} unmasked on {len(replayed)} replays"
        event("unmasked")
        assert m.open_envelope(reply, m.MsgType.UNMASK, SID).sender == c
