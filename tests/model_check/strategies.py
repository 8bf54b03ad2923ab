"""Strategy families: each enumerates, exhaustively over its parameters, complete schedules.

A schedule is ``(label, play)``; ``play(client_cls)`` runs it against fresh instances of
``client_cls`` and returns the :class:`~.adversary.World` the oracle reads.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gptfl_secure.protocols.policy import majority_threshold

from .adversary import World, cfg, unchecked_cfg


@dataclass(frozen=True)
class Setting:
    """A graph/config the explorer covers: n clients, threshold t, SecAgg+ degree k."""

    n: int
    t: int
    k: int | None = None

    @property
    def max_colluders(self) -> int:
        """T of SECURITY.md: 2t - n - 1 (complete graph); SecAgg+: 2t - k - 2 per neighbourhood."""
        group = self.n if self.k is None else self.k + 1
        return max(0, 2 * self.t - group - 1)

    def __str__(self) -> str:
        return f"n={self.n},t={self.t}" + (f",k={self.k}" if self.k else "")


def subsets(items, lo: int = 0, hi: int | None = None):
    items = sorted(items)
    hi = len(items) if hi is None else hi
    for r in range(lo, hi + 1):
        yield from (frozenset(c) for c in itertools.combinations(items, r))


# ------------------------------------------------------------------ one generic flow
def flow(w: World, sessions, *, lists=None, relays=None, u3s=None, sigs="own",
         silent=None) -> World:
    """Drive ``sessions`` in lock step. Defaults are the honest server's; each hook maps an
    instance key to the server's choice for it. ``silent[key] = step``: from that step on the
    server ignores the instance (a dropout)."""
    silent = silent or {}
    keys = [(s.index, c) for s in sessions for c in sorted(s.instances)]

    def quiet(key, step):
        steps = ("advertise_keys", "share_keys", "masked_input", "consistency_check",
                 "unmasking")
        return key in silent and steps.index(step) >= steps.index(silent[key])

    for s in sessions:
        w.advertise(s)
    for key in keys:
        if quiet(key, "advertise_keys"):
            w.inst(key).advert = b""
    listing = {}
    for key in keys:
        s = w.sessions[key[0]]
        listing[key] = (lists(key) if lists else
                        {c: (s.index, c) for c, i in s.instances.items() if i.advert})
        if key[1] in listing[key]:
            w.send_key_list(key, listing[key])
        if quiet(key, "share_keys"):
            w.inst(key).shares = b""
    for key in keys:
        if relays:
            senders = relays(key)
        else:  # honest: everyone listed who listed me back
            senders = [src for c, src in listing[key].items() if src != key
                       and listing.get(src, {}).get(key[1]) == key]
        w.send_relay(key, senders)
        if quiet(key, "masked_input"):
            w.inst(key).masked = False
    for key in keys:
        s = w.sessions[key[0]]
        u3 = (u3s(key) if u3s else
              frozenset(c for c, i in s.instances.items() if i.masked))
        w.send_survivors(key, u3)
        if quiet(key, "consistency_check"):
            w.inst(key).consistency = b""
    for key in keys:
        if not quiet(key, "unmasking") and w.inst(key).consistency:
            mode = sigs(key) if callable(sigs) else sigs
            w.send_signatures(key, w.signature_list(key, mode))
    return w


Play = Callable[[type], World]


def _world(st: Setting, cls, colluders, **start) -> tuple[World, object]:
    w = World(st.n, cls, colluders)
    s = w.start(os.urandom(32), cfg(st.n, st.t, st.k), **start)
    return w, s


# ------------------------------------------------------------------ families
def honest(st: Setting, col) -> Iterator[tuple[str, Play]]:
    """Honest server, with no dropout or one client silent from each step."""
    steps = ("share_keys", "masked_input", "consistency_check", "unmasking")
    patterns = [{}] + [{c: s} for c in range(st.n) for s in steps]
    for pat in patterns:
        def play(cls, pat=pat):
            w, s = _world(st, cls, col)
            return flow(w, [s], silent={(0, c): step for c, step in pat.items()})
        yield f"honest {st} colluders={sorted(col)} silent={pat}", play


def split_u3(st: Setting, col) -> Iterator[tuple[str, Play]]:
    """Class B is shown U3 without the victim v, class A (with v) U3 with it."""
    for v in range(st.n):
        for b in subsets(set(range(st.n)) - {v}, 1):
            for mode in ("own", "none"):
                def play(cls, v=v, b=b, mode=mode):
                    w, s = _world(st, cls, col)
                    everyone = frozenset(range(st.n))
                    return flow(w, [s], sigs=mode,
                                u3s=lambda k: everyone - {v} if k[1] in b else everyone)
                yield f"split-u3 {st} colluders={sorted(col)} victim={v} B={sorted(b)} " \
                      f"sigs={mode}", play


def partner_exclusion(st: Setting, col, sessions: int = 1) -> Iterator[tuple[str, Play]]:
    """v is relayed shares from its partners P only; every other client is told the partners
    in X (subset of P) dropped. v is shown U3 = {v} + P (``v-u3=partners``, with signatures from
    this session, none, or each repeated t times) or the others' U3 without X
    (``v-u3=consistent``, which names non-sharers). With two sessions (one reused id) signatures
    may be replayed."""
    modes = ([("partners", "own"), ("partners", "none"), ("partners", "dup"),
              ("consistent", "own")] if sessions == 1 else [("partners", "any")])
    for v in range(st.n):
        for p in subsets(set(range(st.n)) - {v}, st.t - 1):
            for x in subsets(p, 1):
                for vu3, mode in modes:
                    def play(cls, v=v, p=p, x=x, vu3=vu3, mode=mode):
                        w = World(st.n, cls, col)
                        sid = os.urandom(32)
                        ss = [w.start(sid, cfg(st.n, st.t, st.k)) for _ in range(sessions)]
                        mine = {v} | p

                        def relays(k):
                            peers = mine - {v} if k[1] == v else set(range(st.n)) - {k[1]}
                            return [(k[0], c) for c in sorted(peers)]

                        def u3s(k):
                            if k[1] == v and vu3 == "partners":
                                return frozenset(mine)
                            return frozenset(range(st.n)) - (x - {k[1]})
                        return flow(w, ss, relays=relays, u3s=u3s, sigs=mode)
                    yield (f"partner-exclusion{'/reused-id' if sessions > 1 else ''} {st} "
                           f"colluders={sorted(col)} victim={v} partners={sorted(p)} "
                           f"declared-dropped={sorted(x)} v-u3={vu3} sigs={mode}"), play


def mix(st: Setting, col) -> Iterator[tuple[str, Play]]:
    """Two sessions under one id (ledger off); v's key list (session T) carries its partners'
    advertisements from the other session O, whose instances sit in three differently mixed
    key lists: v's partners' mask keys are declared dropped elsewhere. n=5, t=3 only."""
    if (st.n, st.t, st.k) != (5, 3, None):
        return
    for v in range(5):
        for p1, p2 in itertools.combinations(sorted(set(range(5)) - {v}), 2):
            a, b = sorted(set(range(5)) - {v, p1, p2})
            for tgt in (0, 1):
                o = 1 - tgt

                def lists(k, v=v, p1=p1, p2=p2, a=a, b=b, tgt=tgt, o=o):
                    # No three instances get one identical list, so honest contexts never
                    # agree on a mixed list; only cross-context acceptance makes this work.
                    here = {c: (tgt, c) for c in range(5)}
                    there = {c: (o, c) for c in range(5)}
                    L_p1 = {**here, p1: (o, p1)}  # (O,p1) and the revealers of its mask key
                    L_p2 = {**there, v: (tgt, v), p1: (tgt, p1)}
                    vary = {None: lambda L: {c: s for c, s in L.items() if c != v},
                            "o": lambda L: {**L, v: (o, v)}}
                    if k == (tgt, v):
                        return {**here, p1: (o, p1), p2: (o, p2)}
                    if k in ((o, p1), (tgt, b)):
                        return L_p1
                    if k == (tgt, p2):
                        return vary[None](L_p1)
                    if k == (tgt, a):
                        return vary["o"](L_p1)
                    if k in ((o, p2), (o, b)):
                        return L_p2
                    if k == (tgt, p1):
                        return vary[None](L_p2)
                    if k == (o, a):
                        return vary["o"](L_p2)
                    return there

                def relays(k, v=v, p1=p1, p2=p2, tgt=tgt, o=o, lists=lists):
                    if k == (tgt, v):
                        return [(o, p1), (o, p2)]
                    return [src for src in lists(k).values()
                            if src != k and lists(src).get(k[1]) == k]

                def u3s(k, v=v, p1=p1, p2=p2, a=a, b=b, tgt=tgt, o=o):
                    if k in ((tgt, v), (o, p1), (o, p2)):
                        return frozenset({v, p1, p2})
                    if k in ((tgt, p2), (tgt, a), (tgt, b)):
                        return frozenset({p2, a, b})
                    if k in ((tgt, p1), (o, a), (o, b)):
                        return frozenset({p1, a, b})
                    return frozenset(range(5))

                def play(cls, lists=lists, relays=relays, u3s=u3s):
                    w = World(5, cls, col)
                    sid = os.urandom(32)
                    ss = [w.start(sid, cfg(5, 3)) for _ in range(2)]
                    return flow(w, ss, lists=lists, relays=relays, u3s=u3s, sigs="any")
                yield (f"cross-session-mix {st} target=({tgt},{v}) partners=({o},{p1}),"
                       f"({o},{p2})"), play


_VIRTUAL = [{0: (0, 0), 1: (0, 1), 2: (0, 2)}, {0: (1, 0), 1: (1, 1), 3: (0, 3), 4: (0, 4)},
            {2: (1, 2), 3: (1, 3), 4: (1, 4)}]


def regroup(st: Setting, col) -> Iterator[tuple[str, Play]]:
    """Two runs under one id (ledger off) regrouped into three consistent virtual sessions, each
    a key list that all its members see, so every session context agrees within it:
    V1 = {0A,1A,2A}, V2 = {0B,1B,3A,4A}, V3 = {2B,3B,4B}. Each instance's input enters one sum of
    >= t: allowed (in the gate). ``--findings`` also runs it with each client's input the same in
    both runs (a resubmitted input, outside the protocol's model): V1 - V2 + V3 = 2 x_2, which is
    why clients keep a SessionLedger and never resubmit an input (SECURITY.md)."""
    if (st.n, st.t, st.k) != (5, 3, None):
        return
    virtual = _VIRTUAL

    def lists(k):
        return next(v for v in virtual if v.get(k[1]) == k)

    def u3s(k):
        return frozenset(lists(k))

    def play(cls):
        w = World(5, cls, col)
        sid = os.urandom(32)
        ss = [w.start(sid, cfg(5, 3)) for _ in range(2)]
        return flow(w, ss, lists=lists, u3s=u3s, sigs="any")
    yield f"regroup {st} virtual sessions {virtual}", play


def ledger_reuse(st: Setting, col) -> Iterator[tuple[str, Play]]:
    """A second session under a used id with the ledger on: refused before any key. The honest
    flow of both sessions, then (n=5, t=3) the ``regroup`` schedule with each client's input the
    same in both sessions: the ledger is what keeps a retrying client (which resubmits its
    input) from letting the server difference the sums (the oracle runs over clients)."""
    def play(cls):
        w = World(st.n, cls, col)
        sid = os.urandom(32)
        s0 = w.start(sid, cfg(st.n, st.t, st.k), ledger=True)
        s1 = w.start(sid, cfg(st.n, st.t, st.k), ledger=True)
        return flow(w, [s0, s1], sigs="any")
    yield f"ledger-reuse {st}", play
    if (st.n, st.t, st.k) != (5, 3, None):
        return

    def lists(k):
        return next(v for v in _VIRTUAL if v.get(k[1]) == k)

    def replay(cls):
        w = World(5, cls, col)
        sid = os.urandom(32)
        ss = [w.start(sid, cfg(5, 3), ledger=True) for _ in range(2)]
        w.same_inputs = True  # a retried session: each client resubmits its input
        return flow(w, ss, lists=lists, u3s=lambda k: frozenset(lists(k)), sigs="any")
    yield f"ledger-reuse/regroup {st} same inputs, virtual sessions {_VIRTUAL}", replay


def weak_config(st: Setting, col) -> Iterator[tuple[str, Play]]:
    """Every client is offered a weaker config than the nominal one (the oracle's reference):
    t' <= n/2 (unchecked), or num_clients = m < n with the whole group; then split views."""
    if st.k is not None:
        return
    n = st.n
    offers = [(f"t={n // 2}", unchecked_cfg(n, n // 2))] if n // 2 >= 1 else []
    for m_ in range(2, n):
        if majority_threshold(m_) >= majority_threshold(n):
            continue  # not weaker than what the policy lets the server propose anyway
        offers.append((f"num_clients={m_},t={majority_threshold(m_)}",
                       cfg(m_, majority_threshold(m_))))
    for name, offer in offers:
        for v in range(n):
            for b in subsets(set(range(n)) - {v}, 1):
                def play(cls, offer=offer, v=v, b=b):
                    w, s = _world(st, cls, col, proposed=dict.fromkeys(range(n), offer))
                    everyone = frozenset(range(n))
                    return flow(w, [s], u3s=lambda k: everyone - {v} if k[1] in b else everyone)
                yield f"weak-config {st} offered {name} victim={v} B={sorted(b)}", play


FAMILIES = {
    "honest": honest,
    "split-u3": split_u3,
    "partner-exclusion": partner_exclusion,
    "partner-exclusion/reused-id": lambda st, col: partner_exclusion(st, col, sessions=2),
    "cross-session-mix": mix,
    "ledger-reuse": ledger_reuse,
    "weak-config": weak_config,
    "regroup/reused-id": regroup,
}

FINDINGS = {"regroup": regroup}

FULL = [Setting(3, 2), Setting(3, 3), Setting(4, 3), Setting(4, 4), Setting(5, 3), Setting(5, 4),
        Setting(5, 5), Setting(5, 2, 2)]
