"""The server's side of the masked-sum protocol.

``SecAggServer`` takes, for each round, the messages that arrived (as ``(sender, bytes)`` pairs or
a ``{sender: bytes}`` mapping) and returns the messages to send, ``{recipient: bytes}``. A client
whose message is malformed, forged, from another session or round, duplicated or inconsistent is
treated as dropped (``rejected`` says why) and the round goes on. Below ``threshold`` survivors it
raises :class:`SecAggAbort`; nothing partial is revealed. The server learns the sum over U3 and
the sets U1..U5, never an individual input.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import crypto, shamir
from . import messages as m
from .config import Position, SecAggConfig, SessionEnd, Step
from .derivation import pairwise_seed, secret_commitment, self_mask_seed, share_commitment
from .errors import MessageError, SecAggAbort
from .graph import neighbours, public_seed
from .ring import Ring

Incoming = Mapping[int, bytes] | Iterable[tuple[int, bytes]]


@dataclass(frozen=True)
class TranscriptEntry:
    """One message the server received: the round, the transport-level sender, the bytes."""

    step: Step
    sender: int
    data: bytes


MAX_KEPT_PER_SENDER = 2
"""Messages the transcript keeps per sender and step: the first, and a second as evidence of a
duplicate. Further ones are counted in ``SecAggServer.unrecorded`` and not stored, and a message
over the step's size bound is stored cut to the bound plus one byte, so one sender cannot grow
the record without bound, and an auditor still sees every sender the server heard."""


def max_message_bytes(cfg: SecAggConfig, step: Step) -> int:
    """The largest message a client can honestly send at ``step`` under ``cfg``; anything larger
    is rejected unparsed (and not stored)."""
    group = cfg.num_clients if cfg.neighbors is None else min(cfg.num_clients, cfg.neighbors + 1)
    header, sig = m._HEADER.size, crypto.SIGNATURE_BYTES
    body = {
        Step.ADVERTISE_KEYS: 2 * crypto.KEY_BYTES,
        Step.SHARE_KEYS: 32 + 4 + group * (m._SHARE_ENTRY.size + 2 * shamir.SHARE_BYTES + 16),
        Step.MASKED_INPUT: 4 + cfg.vector_length * cfg.element_bytes,
        Step.CONSISTENCY_CHECK: m.DIGEST_BYTES,
        Step.UNMASKING: 4 + group * m._UNMASK_ENTRY.size,
    }[step]
    return header + body + sig


@dataclass
class ServerOutput:
    total: np.ndarray
    included: frozenset[int]
    transcript: tuple[TranscriptEntry, ...]
    seconds: dict[str, float] = field(default_factory=dict)


class SecAggServer:
    def __init__(self, cfg: SecAggConfig, identity_keys: Mapping[int, bytes],
                 session_id: bytes) -> None:
        if len(session_id) != m.SESSION_ID_BYTES:
            raise ValueError(f"session_id must be {m.SESSION_ID_BYTES} bytes")
        if len(identity_keys) != cfg.num_clients:
            raise ValueError(f"{len(identity_keys)} identity keys for num_clients="
                             f"{cfg.num_clients}: enroll every client")
        self.cfg, self.session_id = cfg, session_id
        self._identity_keys = dict(identity_keys)
        self.transcript: list[TranscriptEntry] = []
        self.rejected: dict[int, str] = {}
        self.seconds: dict[str, float] = {}
        self._adverts: dict[int, bytes] = {}
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._groups: dict[int, frozenset[int]] = {}
        self._commits: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self._secret_commits: dict[int, bytes] = {}
        self._inputs: dict[int, np.ndarray] = {}
        self._u3_digest = b""
        self.context = b""  # the session context (messages.session_context), after round 0
        self._consistency: dict[int, bytes] = {}
        self.u1 = self.u2 = self.u3 = self.u4 = self.u5 = frozenset()
        self.unrecorded: dict[int, int] = {}  # sender -> messages not kept (over the caps)
        self._kept: dict[tuple[Step, object], int] = {}
        self._next: Position = Step.ADVERTISE_KEYS

    # ------------------------------------------------------------------ plumbing
    def _collect(self, step: Step, incoming: Incoming, expected_senders: frozenset[int],
                 msg_type: m.MsgType, parse) -> dict[int, object]:
        """Parse each message; keep one valid message per expected sender, drop the rest."""
        if self._next != step:
            raise RuntimeError(f"server is at {self._next}, not {step}: drive rounds in order")
        pairs = incoming.items() if isinstance(incoming, Mapping) else incoming
        seen: dict[int, object] = {}
        delivered: set[int] = set()  # every sender heard this round, valid message or not
        limit = max_message_bytes(self.cfg, step)
        for pair in pairs:
            sender, data = self._typed(step, pair, limit)
            if sender is None:
                continue
            if sender not in expected_senders:
                self.rejected.setdefault(sender, f"{step}: not expected at this round")
                continue
            if sender in delivered:  # a second message, whatever the first was: trust neither
                seen.pop(sender, None)
                self.rejected[sender] = f"{step}: duplicated message"
                continue
            delivered.add(sender)
            if data is None:
                continue  # rejected by _typed: malformed or oversized
            try:
                env = m.open_signed(data, msg_type, self.session_id, self._identity_keys,
                                    self.context)
                if env.sender != sender:
                    raise MessageError(f"signed by {env.sender}, delivered by {sender}")
                seen[sender] = parse(self, env)
            except MessageError as exc:
                self.rejected[sender] = f"{step}: {exc}"
            except (ValueError, TypeError, KeyError, IndexError, struct.error) as exc:
                self.rejected[sender] = f"{step}: malformed message ({type(exc).__name__}: {exc})"
        return seen

    def _typed(self, step: Step, pair: object, limit: int) -> tuple[int | None, bytes | None]:
        """(sender, bytes) of one incoming pair, kept in the transcript within the caps. A
        malformed pair (not a pair, a sender that is not a client id, bytes that are not bytes,
        more than ``limit`` bytes) gives data None and a rejection, never an exception."""
        try:
            sender, data = pair
        except (TypeError, ValueError):
            self.rejected.setdefault(-1, f"{step}: an incoming item is not a (sender, bytes) pair")
            return None, None
        if not isinstance(sender, int) or isinstance(sender, bool) or not 0 <= sender < m.SERVER:
            self.rejected.setdefault(-1, f"{step}: sender {sender!r} is not a client id")
            return None, None
        reason = None
        if not isinstance(data, (bytes, bytearray, memoryview)):
            reason = f"{step}: payload is a {type(data).__name__}, not bytes"
        elif len(data) > limit:
            reason = f"{step}: {len(data)} bytes exceed the step's bound of {limit}"
        # A rejected payload is kept as evidence too, cut to limit + 1 bytes (a non-bytes one as
        # b""), so that an auditor sees that the sender was heard, as the server did.
        if reason is None:
            stored = data if isinstance(data, bytes) else bytes(data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            stored = bytes(memoryview(data)[: limit + 1])
        else:
            stored = b""
        kept = self._kept.get((step, sender), 0)
        if kept < MAX_KEPT_PER_SENDER:
            self.transcript.append(TranscriptEntry(step, sender, stored))
            self._kept[(step, sender)] = kept + 1
        else:
            self.unrecorded[sender] = self.unrecorded.get(sender, 0) + 1
        if reason is not None:
            self.rejected[sender] = reason
            return sender, None
        return sender, stored

    def _abort_below_threshold(self, step: Step, survivors: frozenset[int]) -> None:
        if len(survivors) < self.cfg.threshold:
            self._next = SessionEnd.ABORTED
            raise SecAggAbort(step, len(survivors), self.cfg.threshold)

    def _timed(self, step: Step, start: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start

    # ------------------------------------------------------------------ parsers
    def _parse_advertise(self, env: m.Envelope):
        enc_pk, mask_pk = m.read_advertise(env.body)
        if crypto.is_low_order(enc_pk) or crypto.is_low_order(mask_pk):
            raise MessageError("advertised a small-order X25519 key")
        return enc_pk, mask_pk


    def _parse_shares(self, env: m.Envelope):
        secret_commitment, entries = m.read_shares(env.body)
        if set(entries) != self._groups[env.sender] & self.u1:
            raise MessageError("share entries must address exactly the sender's group in U1")
        for v, e in entries.items():
            if (v == env.sender) != (e.ciphertext == b""):
                raise MessageError("a ciphertext for each peer, none for the sender itself")
        return secret_commitment, entries


    def _parse_masked(self, env: m.Envelope):
        return m.read_vector(env.body, self.cfg.vector_length, self.cfg.modulus,
                             self.cfg.element_bytes)


    def _parse_consistency(self, env: m.Envelope):
        if env.body != self._u3_digest:
            raise MessageError("signed a different U3")
        return bytes(env.signed_part) + env.signature


    def _parse_unmask(self, env: m.Envelope):
        """One share per group peer in U2, of the kind U3 dictates. Shares are checked against
        their commitments only if a reconstruction fails its check (see ``_rebuild``)."""
        entries = m.read_unmask(env.body)
        if set(entries) != self._groups[env.sender] & self.u2:
            raise MessageError("must hold exactly one share for each group peer in U2")
        for v, (kind, share) in entries.items():
            want = m.ShareKind.SELF_MASK if v in self.u3 else m.ShareKind.MASK_KEY
            if kind is not want:
                raise MessageError(f"revealed the {kind.name} share of peer {v}")
            if int.from_bytes(share, "big") >= shamir.PRIME:
                raise MessageError(f"share of peer {v} is not a field element")
        return {v: share for v, (_, share) in entries.items()}


    # ------------------------------------------------------------------ rounds
    def advertise_keys(self, incoming: Incoming) -> dict[int, bytes]:
        """Round 0 -> the signed key list, to every client in U1."""
        start = time.perf_counter()
        got = self._collect(Step.ADVERTISE_KEYS, incoming, frozenset(self._identity_keys),
                            m.MsgType.ADVERTISE, SecAggServer._parse_advertise)
        self.u1 = frozenset(got)
        self._abort_below_threshold(Step.ADVERTISE_KEYS, self.u1)
        self._keys = dict(got)
        self._adverts = {e.sender: e.data for e in self.transcript
                         if e.step == Step.ADVERTISE_KEYS and e.sender in self.u1}
        digests = {c: m.advert_digest(self._adverts[c]) for c in self.u1}
        self.context = m.session_context(self.session_id, digests)
        enrolled = frozenset(self._identity_keys)
        seed = public_seed(self.session_id, enrolled)
        self._groups = {c: p | {c} for c, p in
                        neighbours(enrolled, self.cfg.neighbors, seed).items()}
        built: dict[frozenset[int], bytes] = {}  # the complete graph has a single group
        out = {}
        for c in sorted(self.u1):
            group = self._groups[c] & self.u1
            if group not in built:
                body = m.key_list_body(self.u1, (self._adverts[v] for v in sorted(group)),
                                       digests)
                built[group] = m.seal(m.MsgType.KEY_LIST, self.session_id, m.SERVER, body)
            out[c] = built[group]
        self._next = Step.SHARE_KEYS
        self._timed(Step.ADVERTISE_KEYS, start)
        return out

    def share_keys(self, incoming: Incoming) -> dict[int, bytes]:
        """Round 1 -> to each client in U2, the ciphertexts its group members in U2 sent it."""
        start = time.perf_counter()
        got = self._collect(Step.SHARE_KEYS, incoming, self.u1, m.MsgType.SHARES,
                            SecAggServer._parse_shares)
        self.u2 = frozenset(got)
        self._abort_below_threshold(Step.SHARE_KEYS, self.u2)
        out = {}
        for v in sorted(self.u2):
            ciphertexts = {u: got[u][1][v].ciphertext for u in self._groups[v] & self.u2 if u != v}
            out[v] = m.seal(m.MsgType.SHARE_RELAY, self.session_id, m.SERVER,
                            m.relay_body(ciphertexts))
        for u, (commitment, entries) in got.items():
            self._secret_commits[u] = commitment
            for v, e in entries.items():
                self._commits[(u, v)] = (e.commit_self_mask, e.commit_mask_key)
        self._next = Step.MASKED_INPUT
        self._timed(Step.SHARE_KEYS, start)
        return out

    def masked_input(self, incoming: Incoming) -> dict[int, bytes]:
        """Round 2 -> U3, the clients whose masked input arrived, to each of them."""
        start = time.perf_counter()
        self._inputs = self._collect(Step.MASKED_INPUT, incoming, self.u2,
                                     m.MsgType.MASKED_INPUT, SecAggServer._parse_masked)
        self.u3 = frozenset(self._inputs)
        self._abort_below_threshold(Step.MASKED_INPUT, self.u3)
        u3_body = m.ids_body(self.u3)
        self._u3_digest = m.survivors_digest(u3_body)
        msg = m.seal(m.MsgType.SURVIVORS, self.session_id, m.SERVER, u3_body)
        self._next = Step.CONSISTENCY_CHECK
        self._timed(Step.MASKED_INPUT, start)
        return dict.fromkeys(sorted(self.u3), msg)

    def consistency_check(self, incoming: Incoming) -> dict[int, bytes]:
        """Round 3 -> to each signer, the signatures on U3 of its group members."""
        start = time.perf_counter()
        self._consistency = self._collect(Step.CONSISTENCY_CHECK, incoming, self.u3,
                                          m.MsgType.CONSISTENCY, SecAggServer._parse_consistency)
        self.u4 = frozenset(self._consistency)
        self._abort_below_threshold(Step.CONSISTENCY_CHECK, self.u4)
        out = {}
        for c in sorted(self.u4):
            signed = (self._consistency[v] for v in sorted(self._groups[c] & self.u4))
            out[c] = m.seal(m.MsgType.SIGNATURES, self.session_id, m.SERVER, m.list_body(signed))
        self._next = Step.UNMASKING
        self._timed(Step.CONSISTENCY_CHECK, start)
        return out

    def unmasking(self, incoming: Incoming) -> ServerOutput:
        """Round 4: rebuild b_u for u in U3 and the mask keys of U2 \\ U3, and unmask the sum."""
        start = time.perf_counter()
        got = self._collect(Step.UNMASKING, incoming, self.u4, m.MsgType.UNMASK,
                            SecAggServer._parse_unmask)
        self.u5 = frozenset(got)
        self._abort_below_threshold(Step.UNMASKING, self.u5)
        t = self.cfg.threshold
        ring = Ring(self.cfg.modulus, self.cfg.vector_length)
        total = ring.zeros()
        for u in sorted(self.u3):
            ring.add_(total, self._inputs[u])
        for u in sorted(self.u3):
            b = self._rebuild(u, m.ShareKind.SELF_MASK, got, t)
            ring.add_mask_(total, self_mask_seed(b, self.session_id, u), -1)
        for v in sorted(self.u2 - self.u3):
            key = crypto.AgreementKey.from_private_bytes(
                self._rebuild(v, m.ShareKind.MASK_KEY, got, t))
            for u in sorted(self._groups[v] & self.u3):
                seed = pairwise_seed(key, self._keys[u][1], self.session_id, u, v)
                ring.add_mask_(total, seed, -1 if v > u else +1)  # undo u's +/- PRG(s_uv)
        self._next = SessionEnd.DONE
        self._timed(Step.UNMASKING, start)
        return ServerOutput(ring.reduce(total), self.u3, tuple(self.transcript), dict(self.seconds))

    def receive(self, step: Step, incoming: Incoming) -> dict[int, bytes] | ServerOutput:
        """Run round ``step`` on the clients' ``incoming`` messages: the messages to send on, or,
        after unmasking, the :class:`ServerOutput`."""
        match step:
            case Step.ADVERTISE_KEYS:
                return self.advertise_keys(incoming)
            case Step.SHARE_KEYS:
                return self.share_keys(incoming)
            case Step.MASKED_INPUT:
                return self.masked_input(incoming)
            case Step.CONSISTENCY_CHECK:
                return self.consistency_check(incoming)
            case Step.UNMASKING:
                return self.unmasking(incoming)
        raise ValueError(f"unknown step {step!r}")

    def _secret_checks(self, owner: int, kind: m.ShareKind, secret: bytes) -> bool:
        """Is ``secret`` the one ``owner`` committed to (b_u) or advertised (its mask key)?"""
        if kind is m.ShareKind.SELF_MASK:
            return secret_commitment(self.session_id, owner, secret) == self._secret_commits[owner]
        return crypto.AgreementKey.from_private_bytes(secret).public == self._keys[owner][1]

    def _share_checks(self, owner: int, holder: int, kind: m.ShareKind, share: bytes) -> bool:
        commit_b, commit_k = self._commits[(owner, holder)]
        commit = commit_b if kind is m.ShareKind.SELF_MASK else commit_k
        return share_commitment(kind, self.session_id, owner, holder, share) == commit

    def _rebuild(self, owner: int, kind: m.ShareKind, got: dict[int, dict[int, bytes]],
                 t: int) -> bytes:
        """``owner``'s secret from t shares, checked against its commitment. Only if that check
        fails are the shares checked one by one, the bad ones dropped (their senders recorded in
        ``rejected``) and the secret rebuilt from the good ones."""
        holders = sorted(self._groups[owner] & self.u5)
        secret = self._interpolate(owner, [(w, got[w][owner]) for w in holders], t)
        if secret is not None and self._secret_checks(owner, kind, secret):
            return secret
        good = []
        for w in holders:
            if self._share_checks(owner, w, kind, got[w][owner]):
                good.append((w, got[w][owner]))
            else:
                self.rejected[w] = (f"{Step.UNMASKING}: share of client {owner} breaks its "
                                    "commitment")
        secret = self._interpolate(owner, good, t)
        if secret is None or not self._secret_checks(owner, kind, secret):
            self._next = SessionEnd.ABORTED
            raise SecAggAbort(Step.UNMASKING, len(good), t,
                              f"client {owner}'s shares do not rebuild its committed secret",
                              cause=SecAggAbort.RECONSTRUCTION_FAILED)
        return secret

    def _interpolate(self, owner: int, shares: list[tuple[int, bytes]], t: int) -> bytes | None:
        if len(shares) < t:
            self._next = SessionEnd.ABORTED
            raise SecAggAbort(Step.UNMASKING, len(shares), t,
                              f"too few shares of client {owner} reached the server intact",
                              cause=SecAggAbort.RECONSTRUCTION_FAILED)
        points = [(w + 1, shamir.from_bytes(share)) for w, share in shares[:t]]
        secret = shamir.reconstruct(points, t)
        return secret.to_bytes(32, "big") if secret < 2**256 else None
