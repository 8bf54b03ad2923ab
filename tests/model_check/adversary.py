"""The malicious server's toolbox: real client instances, the messages it sends them, and a
record of everything it collects (the input of :mod:`.oracle`).

An *instance* is one client in one session, keyed ``(session, client id)``. The server builds
every message to an instance itself (key lists, relays, survivor lists, signature lists) from the
messages it has collected in either session, so views can differ per instance and messages can be
replayed across sessions. Any ``ProtocolViolation`` an instance raises is recorded and the
instance gets nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gptfl_secure.protocols import IdentityKey, ProtocolViolation, SecAggConfig, SessionLedger
from gptfl_secure.protocols import messages as m
from gptfl_secure.protocols.derivation import pairwise_seed, self_mask_seed
from gptfl_secure.protocols.graph import neighbours, public_seed

Key = tuple[int, int]  # (session index, client id)
D, Q = 1, 2**32  # one entry per input: the oracle is symbolic, the wire format is real


def cfg(n: int, t: int, k: int | None = None) -> SecAggConfig:
    return SecAggConfig(num_clients=n, threshold=t, vector_length=D, modulus=Q, neighbors=k)


def unchecked_cfg(n: int, t: int, k: int | None = None) -> SecAggConfig:
    """A config SecAggConfig refuses (t <= group/2), built without its validation."""
    out = object.__new__(SecAggConfig)
    for name, value in (("num_clients", n), ("threshold", t), ("vector_length", D),
                        ("modulus", Q), ("neighbors", k)):
        object.__setattr__(out, name, value)
    return out


@dataclass
class Instance:
    key: Key
    client: object  # a SecAggClient (or a mutant's subclass)
    cfg: SecAggConfig
    advert: bytes = b""
    shares: bytes = b""  # its SHARES message
    entries: dict = field(default_factory=dict)  # holder id -> ShareEntry
    secret_commitment: bytes = b""
    masked: bool = False  # its masked input reached the server
    self_seed: bytes = b""
    pairwise: list = field(default_factory=list)  # (seed, sign, peer mask public key)
    consistency: bytes = b""
    u3: frozenset = frozenset()
    unmask: bytes = b""
    mask_public: bytes = b""
    secrets: dict | None = None  # a colluder's: {"b", "mask_key", "held": {peer: (sb, sk)}}
    dead: bool = False  # raised ProtocolViolation: gets nothing more


@dataclass
class Session:
    index: int
    session_id: bytes
    nominal: SecAggConfig  # the honest config: the reference threshold of the oracle
    instances: dict[int, Instance] = field(default_factory=dict)


class World:
    """Enrolled clients (fixed identities) and up to two sessions run against them."""

    def __init__(self, n: int, client_cls, colluders=frozenset(), identities=None) -> None:
        self.n, self.client_cls = n, client_cls
        self.ids = list(range(n))
        self.identities = identities or {c: IdentityKey() for c in self.ids}
        self.public = {c: k.public for c, k in self.identities.items()}
        self.colluders = frozenset(colluders)
        self.sessions: list[Session] = []
        self.violations: list[tuple[Key, str]] = []  # what honest instances refused
        self.ledgers = {c: SessionLedger() for c in self.ids}
        self.same_inputs = False  # the oracle's model: one input per client, not per instance

    # ------------------------------------------------------------------ set-up
    def start(self, session_id: bytes, nominal: SecAggConfig, proposed=None,
              ledger: bool = False) -> Session:
        """A session; ``proposed[c]`` is the config offered to client c (default: nominal)."""
        s = Session(len(self.sessions), session_id, nominal)
        self.sessions.append(s)
        for c in self.ids:
            offered = (proposed or {}).get(c, nominal)
            try:
                client = self.client_cls(offered, c, self.identities[c], self.public, session_id,
                                         ledger=self.ledgers[c] if ledger else None)
            except ProtocolViolation as exc:
                self.violations.append(((s.index, c), str(exc)))
                continue
            s.instances[c] = Instance((s.index, c), client, offered)
        return s

    def inst(self, key: Key) -> Instance | None:
        return self.sessions[key[0]].instances.get(key[1])

    def all_instances(self):
        for s in self.sessions:
            yield from s.instances.values()

    def group(self, s: Session, c: int) -> frozenset[int]:
        """c and its neighbours (as the client derives them, from its own config)."""
        enrolled = frozenset(self.ids)
        k = s.instances[c].cfg.neighbors if c in s.instances else s.nominal.neighbors
        return neighbours(enrolled, k, public_seed(s.session_id, enrolled))[c] | {c}

    def _call(self, inst: Instance, fn, *args):
        if inst is None or inst.dead:
            return None
        try:
            return fn(*args)
        except ProtocolViolation as exc:
            inst.dead = True
            self.violations.append((inst.key, str(exc)))
            return None

    # ------------------------------------------------------------------ rounds
    def advertise(self, s: Session) -> None:
        for inst in s.instances.values():
            out = self._call(inst, inst.client.advertise_keys)
            if out is not None:
                inst.advert = out
                inst.mask_public = m.read_advertise(
                    m.open_envelope(out, m.MsgType.ADVERTISE, s.session_id).body)[1]

    def send_key_list(self, key: Key, listing: dict[int, Key]) -> None:
        """Key list to instance ``key``: U1 = listing's ids, each id's advertisement taken from
        the instance ``listing[id]`` (of either session: a replay when it is the other one)."""
        inst = self.inst(key)
        if inst is None or not inst.advert:
            return
        s = self.sessions[key[0]]
        adverts = {c: self.inst(src).advert for c, src in listing.items()
                   if self.inst(src) is not None and self.inst(src).advert}
        digests = {c: m.advert_digest(a) for c, a in adverts.items()}
        grp = self.group(s, key[1])
        body = m.key_list_body(sorted(adverts), [adverts[c] for c in sorted(adverts) if c in grp],
                               digests)
        msg = m.seal(m.MsgType.KEY_LIST, s.session_id, m.SERVER, body)
        out = self._call(inst, inst.client.share_keys, msg)
        if out is not None:
            inst.shares = out
            env = m.open_envelope(out, m.MsgType.SHARES, s.session_id)
            inst.secret_commitment, inst.entries = m.read_shares(env.body)
            if key[1] in self.colluders:
                inst.secrets = {"b": inst.client._b,
                                "mask_key": inst.client._mask_key.private_bytes(), "held": {}}

    def send_relay(self, key: Key, senders) -> None:
        """Relay to ``key`` the ciphertexts addressed to it by the instances ``senders``."""
        inst = self.inst(key)
        if inst is None or not inst.shares:
            return
        s = self.sessions[key[0]]
        cts = {}
        for src in senders:
            sender = self.inst(src)
            if sender is not None and sender.shares and key[1] in sender.entries:
                cts[src[1]] = sender.entries[key[1]].ciphertext
        msg = m.seal(m.MsgType.SHARE_RELAY, s.session_id, m.SERVER, m.relay_body(cts))
        x = np.zeros(D, dtype=np.uint64)
        out = self._call(inst, inst.client.masked_input, msg, x)
        if out is None:
            return
        cl = inst.client
        inst.masked = True
        inst.self_seed = self_mask_seed(cl._b, s.session_id, key[1])
        for v in sorted(cl._shared - {key[1]}):
            peer_pk = cl._advertised[v][1]
            seed = pairwise_seed(cl._mask_key, peer_pk, s.session_id, key[1], v)
            inst.pairwise.append((seed, +1 if v > key[1] else -1, peer_pk))
        if inst.secrets is not None:
            inst.secrets["held"] = {v: (h._self_mask, h._mask_key) for v, h in cl._held.items()}

    def send_survivors(self, key: Key, u3) -> None:
        inst = self.inst(key)
        if inst is None or not inst.masked:
            return
        s = self.sessions[key[0]]
        msg = m.seal(m.MsgType.SURVIVORS, s.session_id, m.SERVER, m.ids_body(u3))
        out = self._call(inst, inst.client.consistency_check, msg)
        if out is not None:
            inst.consistency, inst.u3 = out, frozenset(u3)

    def send_signatures(self, key: Key, signed: list[bytes]) -> None:
        inst = self.inst(key)
        if inst is None or not inst.consistency:
            return
        s = self.sessions[key[0]]
        msg = m.seal(m.MsgType.SIGNATURES, s.session_id, m.SERVER, m.list_body(signed))
        out = self._call(inst, inst.client.unmasking, msg)
        if out is not None:
            inst.unmask = out

    # ------------------------------------------------------------------ signature lists
    def verifies(self, key: Key, raw: bytes) -> bool:
        """Would instance ``key`` accept this CONSISTENCY message on its own U3? (The server
        knows each client's session context: it built the key list the context hashes.)"""
        inst = self.inst(key)
        try:
            env = m.open_signed(raw, m.MsgType.CONSISTENCY, self.sessions[key[0]].session_id,
                                self.public, inst.client._context)
        except m.MessageError:
            return False
        return env.body == m.survivors_digest(m.ids_body(inst.u3))

    def signature_list(self, key: Key, mode: str) -> list[bytes]:
        """The signatures the server hands ``key``: ``none``; ``own`` (this session's, on
        ``key``'s U3, from its group); ``any`` (also replayed from the other session); ``dup``
        (``own``, each repeated t times: a client must count a signer once). Colluders sign
        whatever U3 is needed under the recipient's context. Except in ``dup``, at most one per
        signer, and only ones that verify for the recipient (a bad one would make it abort)."""
        if mode == "none":
            return []
        if mode == "dup":  # every signature of "own", repeated t times
            return self.signature_list(key, "own") * self.inst(key).cfg.threshold
        inst = self.inst(key)
        s = self.sessions[key[0]]
        grp = self.group(s, key[1]) & inst.u3
        pool = [i for i in self.all_instances()
                if i.consistency and (mode == "any" or i.key[0] == key[0])]
        out, signers = [], set()
        for c in sorted(grp & self.colluders):
            body = m.survivors_digest(m.ids_body(inst.u3))
            out.append(m.seal(m.MsgType.CONSISTENCY, s.session_id, c, body, self.identities[c],
                              inst.client._context))
            signers.add(c)
        for i in sorted(pool, key=lambda i: (i.key[0] != key[0], i.key)):
            c = i.key[1]
            if c in grp and c not in signers and self.verifies(key, i.consistency):
                out.append(i.consistency)
                signers.add(c)
        return out
