"""The client's side of the masked-sum protocol (Bonawitz et al. 2017, Fig. 4; SecAgg+ graph).

``SecAggClient`` is a state machine that takes the server's message bytes for a round and returns
its own. Any deviation by the server (a malformed, forged or inconsistent message, a round out of
order, fewer than t parties where t are needed) raises :class:`ProtocolViolation` and the client
aborts for good: it reveals nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import numpy as np

from . import crypto, shamir
from . import messages as m
from .client_state import ClientState, HeldState
from .config import STEPS, Position, SecAggConfig, SessionEnd, Step
from .derivation import (
    pairwise_seed,
    secret_commitment,
    self_mask_seed,
    share_associated_data,
    share_commitment,
    share_encryption_key,
)
from .errors import ClientStateError, MessageError, ProtocolViolation
from .graph import neighbours_of, public_seed
from .policy import ClientPolicy, SessionLedger
from .ring import Ring


class PeerFate(Enum):
    PENDING = "pending"  # shares held; the peer's fate is not known yet
    SURVIVED = "survived"  # in U3: only the self-mask share may be revealed
    DROPPED = "dropped"  # shared keys but not in U3: only the mask-key share may be revealed


class HeldShares:
    """The two shares a client holds for one peer. Settling the peer's fate deletes the share
    that must never leave, so no later request can obtain both (Bonawitz et al., Sec. 4)."""

    __slots__ = ("_self_mask", "_mask_key", "fate")

    def __init__(self, self_mask: int, mask_key: int) -> None:
        self._self_mask: int | None = self_mask
        self._mask_key: int | None = mask_key
        self.fate = PeerFate.PENDING

    @classmethod
    def restored(cls, saved: HeldState) -> HeldShares:
        """The shares a saved state holds (checked by :meth:`ClientState.check`)."""
        held = cls(saved.self_mask, saved.mask_key)
        held.fate = PeerFate(saved.fate)
        return held

    def saved(self) -> HeldState:
        return HeldState(self._self_mask, self._mask_key, self.fate.value)

    def settle(self, survived: bool) -> None:
        if self.fate is not PeerFate.PENDING:
            raise ProtocolViolation(Step.CONSISTENCY_CHECK, "server",
                                    "a peer's fate is decided once")
        if survived:
            self.fate, self._mask_key = PeerFate.SURVIVED, None
        else:
            self.fate, self._self_mask = PeerFate.DROPPED, None

    def reveal(self) -> tuple[m.ShareKind, int]:
        """The one share this peer's fate allows."""
        if self.fate is PeerFate.SURVIVED:
            return m.ShareKind.SELF_MASK, self._self_mask
        if self.fate is PeerFate.DROPPED:
            return m.ShareKind.MASK_KEY, self._mask_key
        raise ProtocolViolation(Step.UNMASKING, "server", "peer's fate was never settled")


class SecAggClient:
    """One client in one session. Secrets live in memory for this session only.

    Args:
        cfg: the session's public parameters, as the server proposes them.
        client_id: this client's enrolled id.
        identity: its long-term Ed25519 key.
        identity_keys: the session group: each member's Ed25519 public key.
        session_id: 32 public bytes; bound into every signature, AEAD and PRG.
        policy: what this client trusts (its enrolled registry, its threshold rule). ``cfg`` and
            ``identity_keys`` are checked against it before any key is made; a weaker or
            inconsistent proposal raises :class:`PolicyViolation`. None: the registry is
            ``identity_keys`` itself (the in-process runner enrols clients directly) with the
            default rules, except that a group of one is allowed (the caller chose the group).
        ledger: the session ids this client has started; a reused id raises PolicyViolation.
    """

    def __init__(self, cfg: SecAggConfig, client_id: int, identity: crypto.IdentityKey,
                 identity_keys: Mapping[int, bytes], session_id: bytes, *,
                 policy: ClientPolicy | None = None,
                 ledger: SessionLedger | None = None) -> None:
        if not isinstance(session_id, bytes) or len(session_id) != m.SESSION_ID_BYTES:
            raise ValueError(f"session_id must be {m.SESSION_ID_BYTES} bytes")
        policy = policy if policy is not None else ClientPolicy(dict(identity_keys), min_clients=1)
        policy.check(cfg, client_id, identity_keys)
        if identity_keys.get(client_id) != identity.public:
            raise ValueError(f"client {client_id}: identity key is not the enrolled one")
        if ledger is not None:
            ledger.claim(session_id)
        self.cfg, self.id, self.session_id = cfg, client_id, session_id
        self._identity, self._identity_keys = identity, dict(identity_keys)
        self._position: Position = Step.ADVERTISE_KEYS  # the round this client may run next
        self._enc_key = crypto.AgreementKey()
        self._mask_key = crypto.AgreementKey()
        self._own_advert = b""  # my ADVERTISE message, once sent
        self._advertised: dict[int, tuple[bytes, bytes]] = {}
        self._group: frozenset[int] = frozenset()
        self._shared: frozenset[int] = frozenset()  # my group members in U2
        self._held: dict[int, HeldShares] = {}
        self._enc_secrets: dict[int, bytes] = {}  # X25519 secret with each peer, reused to decrypt
        self._survivors: frozenset[int] = frozenset()
        self._b: bytes | None = None
        self._context = b""  # the session context, known once the key list is verified

    # ------------------------------------------------------------------ saved state
    def export_state(self) -> bytes:
        """This client's whole state, secrets included, as :mod:`.client_state` declares it (its
        identity key excepted): keep the bytes in memory only."""
        return ClientState(
            config=self.cfg, client_id=self.id, session_id=self.session_id,
            identity_keys=dict(self._identity_keys), position=self._position,
            enc_key=self._enc_key.private_bytes(), mask_key=self._mask_key.private_bytes(),
            own_advert=self._own_advert, advertised=dict(self._advertised), group=self._group,
            shared=self._shared, held={v: h.saved() for v, h in self._held.items()},
            enc_secrets=dict(self._enc_secrets), survivors=self._survivors, b=self._b,
            context=self._context,
        ).to_bytes()

    @classmethod
    def restore_state(cls, data: bytes, identity: crypto.IdentityKey) -> SecAggClient:
        """The client :meth:`export_state` saved, at the same point of its session, with its
        ``identity`` key. Raises :class:`ClientStateError` for bytes that are not a valid saved
        state of this version, or an identity that is not the one enrolled in it."""
        state = ClientState.from_bytes(data)
        if state.identity_keys[state.client_id] != identity.public:
            raise ClientStateError(f"client {state.client_id}: the identity key is not the one "
                                   "enrolled in the saved state")
        client = cls.__new__(cls)
        client.cfg, client.id, client.session_id = state.config, state.client_id, state.session_id
        client._identity, client._identity_keys = identity, dict(state.identity_keys)
        client._position = state.position
        client._enc_key = crypto.AgreementKey.from_private_bytes(state.enc_key)
        client._mask_key = crypto.AgreementKey.from_private_bytes(state.mask_key)
        client._own_advert = state.own_advert
        client._advertised = dict(state.advertised)
        client._group, client._shared = state.group, state.shared
        client._held = {v: HeldShares.restored(h) for v, h in state.held.items()}
        client._enc_secrets = dict(state.enc_secrets)
        client._survivors = state.survivors
        client._b = state.b
        client._context = state.context
        return client

    # ------------------------------------------------------------------ plumbing
    @property
    def position(self) -> Position:
        """The round this client may run next, or how its session ended (after unmasking the
        client forgets its secrets, so a finished session reads as aborted)."""
        return self._position

    def _enter(self, step: Step) -> None:
        if self._position is SessionEnd.ABORTED:
            raise ProtocolViolation(step, "server", "this client has aborted the session")
        expected = self._position
        if expected is SessionEnd.DONE or step != expected:
            self._abort()
            what = "nothing (session done)" if expected is SessionEnd.DONE else expected
            raise ProtocolViolation(step, "server", f"out of order: expected {what}")
        i = STEPS.index(expected) + 1
        self._position = STEPS[i] if i < len(STEPS) else SessionEnd.DONE

    def _abort(self) -> None:
        self._position = SessionEnd.ABORTED
        self._held.clear()
        self._enc_secrets.clear()
        self._b = None

    def _fail(self, step: Step, peer: object, reason: str) -> ProtocolViolation:
        self._abort()
        return ProtocolViolation(step, peer, reason)

    def _read_server(self, step: Step, data: bytes, type_: m.MsgType, read, what: str):
        """Parse a server message with ``read``; any defect aborts this client."""
        try:
            return read(m.open_envelope(data, type_, self.session_id).body)
        except MessageError as exc:
            raise self._fail(step, "server", f"bad {what}: {exc}") from exc

    def _seal(self, type_: m.MsgType, body: bytes) -> bytes:
        return m.seal(type_, self.session_id, self.id, body, self._identity, self._context)

    def _require(self, step: Step, members: frozenset[int], what: str) -> None:
        have = len(members & self._group)
        if have < self.cfg.threshold:
            t = self.cfg.threshold
            raise self._fail(step, "server", f"only {have} of my group {what} < t={t}")

    # ------------------------------------------------------------------ rounds
    def advertise_keys(self) -> bytes:
        """Round 0: two fresh X25519 public keys, signed with the identity key."""
        self._enter(Step.ADVERTISE_KEYS)
        body = m.advertise_body(self._enc_key.public, self._mask_key.public)
        self._own_advert = self._seal(m.MsgType.ADVERTISE, body)
        return self._own_advert

    def share_keys(self, key_list: bytes) -> bytes:
        """Round 1: from U1 derive my group, verify each group member's advertisement, then
        Shamir-share b_u and the mask key t-out-of-|group| and encrypt each share pair for its
        recipient (the server relays ciphertexts)."""
        step = Step.SHARE_KEYS
        self._enter(step)
        u1, digests, adverts = self._read_server(step, key_list, m.MsgType.KEY_LIST,
                                                 m.read_key_list, "key list")
        try:
            for raw in adverts:
                env = m.open_signed(raw, m.MsgType.ADVERTISE, self.session_id, self._identity_keys)
                if env.sender in self._advertised:
                    raise MessageError(f"client {env.sender} advertised twice")
                if env.sender == self.id and raw != self._own_advert:
                    raise MessageError("my own advertisement was altered")
                if digests.get(env.sender) != m.advert_digest(raw):
                    raise MessageError(f"client {env.sender}'s advertisement does not match "
                                       "its listed digest")
                self._advertised[env.sender] = m.read_advertise(env.body)
        except MessageError as exc:
            raise self._fail(step, "server", f"bad key list: {exc}") from exc
        if self.id not in u1:
            raise self._fail(step, "server", "key list leaves me out")
        if digests[self.id] != m.advert_digest(self._own_advert):
            raise self._fail(step, "server", "key list lists another advertisement for me")
        # Fresh per session: it covers my own new keys. Every signature from here on binds it.
        self._context = m.session_context(self.session_id, digests)
        enrolled = frozenset(self._identity_keys)
        if not u1 <= enrolled:
            raise self._fail(step, "server", "U1 names clients that are not enrolled")
        seed = public_seed(self.session_id, enrolled)
        self._group = neighbours_of(self.id, enrolled, self.cfg.neighbors, seed) | {self.id}
        if set(self._advertised) != self._group & u1:
            raise self._fail(step, "server", "key list must hold exactly my group's keys")
        self._require(step, u1, "advertised keys")

        self._b = crypto.random_bytes()
        members = sorted(self._group & u1)
        xs = [v + 1 for v in members]
        t = self.cfg.threshold
        b_shares = shamir.split(int.from_bytes(self._b, "big"), xs, t)
        k_shares = shamir.split(int.from_bytes(self._mask_key.private_bytes(), "big"), xs, t)
        entries = []
        for v, sb, sk in zip(members, b_shares, k_shares, strict=True):
            pb, pk = shamir.to_bytes(sb), shamir.to_bytes(sk)
            commit_b = share_commitment(m.ShareKind.SELF_MASK, self.session_id, self.id, v, pb)
            commit_k = share_commitment(m.ShareKind.MASK_KEY, self.session_id, self.id, v, pk)
            if v == self.id:
                self._held[v] = HeldShares(sb, sk)
                ciphertext = b""
            else:
                try:
                    self._enc_secrets[v] = self._enc_key.agree(self._advertised[v][0])
                except ValueError as exc:
                    raise self._fail(step, v, "advertised an invalid X25519 key") from exc
                key = share_encryption_key(self._enc_secrets[v], self.session_id, self.id, v)
                ciphertext = crypto.aead_encrypt(key, pb + pk, share_associated_data(
                    self.session_id, self.id, v, self._context))
            entries.append(m.ShareEntry(v, commit_b, commit_k, ciphertext))
        commitment = secret_commitment(self.session_id, self.id, self._b)
        return self._seal(m.MsgType.SHARES, m.shares_body(commitment, entries))

    def masked_input(self, relay: bytes, x: np.ndarray) -> bytes:
        """Round 2: y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv) mod q, over
        the group members that shared keys with me (U2)."""
        step = Step.MASKED_INPUT
        x = self._check_input(x)
        self._enter(step)
        ciphertexts = self._read_server(step, relay, m.MsgType.SHARE_RELAY, m.read_relay,
                                        "share relay")
        for v, ciphertext in ciphertexts.items():
            if v not in self._enc_secrets:  # exactly my group members in the U1 I was shown
                raise self._fail(step, "server", f"relayed shares from {v}, not in my group in U1")
            key = share_encryption_key(self._enc_secrets[v], self.session_id, v, self.id)
            plain = crypto.aead_decrypt(key, ciphertext, share_associated_data(
                self.session_id, v, self.id, self._context))
            if plain is None or len(plain) != 2 * shamir.SHARE_BYTES:
                raise self._fail(step, v, "share ciphertext does not decrypt")
            try:
                sb = shamir.from_bytes(plain[: shamir.SHARE_BYTES])
                sk = shamir.from_bytes(plain[shamir.SHARE_BYTES :])
            except ValueError as exc:
                raise self._fail(step, v, f"bad share: {exc}") from exc
            self._held[v] = HeldShares(sb, sk)
        self._shared = frozenset(ciphertexts) | {self.id}
        self._require(step, self._shared, "shared keys")

        ring = Ring(self.cfg.modulus, self.cfg.vector_length)
        y = ring.lift(x)
        ring.add_mask_(y, self_mask_seed(self._b, self.session_id, self.id))
        for v in sorted(self._shared - {self.id}):
            peer_public = self._advertised[v][1]
            try:
                seed = pairwise_seed(self._mask_key, peer_public, self.session_id, self.id, v)
            except ValueError as exc:  # a small-order point, which an honest server refuses
                raise self._fail(step, v, "advertised an invalid X25519 mask key") from exc
            ring.add_mask_(y, seed, +1 if v > self.id else -1)
        body = m.vector_body(ring.reduce(y), self.cfg.element_bytes)
        return self._seal(m.MsgType.MASKED_INPUT, body)

    def consistency_check(self, survivors: bytes) -> bytes:
        """Round 3: check U3 and sign (session id, U3); each peer's fate is settled here."""
        step = Step.CONSISTENCY_CHECK
        self._enter(step)
        u3 = self._read_server(step, survivors, m.MsgType.SURVIVORS, m.read_ids, "survivor list")
        if self.id not in u3:
            raise self._fail(step, "server", "survivor list leaves me out")
        if not (u3 & self._group) <= self._shared:
            raise self._fail(step, "server", "U3 holds group members that never shared keys")
        self._require(step, u3, "in U3")
        self._survivors = u3
        for v, held in self._held.items():
            held.settle(survived=v in u3)
        return self._seal(m.MsgType.CONSISTENCY, m.survivors_digest(m.ids_body(u3)))

    def unmasking(self, signatures: bytes) -> bytes:
        """Round 4: verify >= t signatures on the same U3, then reveal exactly one share per
        peer: of b_v if v survived, of v's mask key if v dropped. Never both: the fate decides."""
        step = Step.UNMASKING
        self._enter(step)
        expected_body = m.survivors_digest(m.ids_body(self._survivors))
        signers: set[int] = set()
        signed = self._read_server(step, signatures, m.MsgType.SIGNATURES, m.read_list,
                                   "signature list")
        try:
            for raw in signed:
                env = m.open_signed(raw, m.MsgType.CONSISTENCY, self.session_id,
                                    self._identity_keys, self._context)
                if env.body != expected_body:
                    raise MessageError(f"client {env.sender} signed a different U3")
                if env.sender not in self._survivors & self._group or env.sender in signers:
                    raise MessageError(f"unexpected or repeated signer {env.sender}")
                signers.add(env.sender)
        except MessageError as exc:
            raise self._fail(step, "server", f"consistency check failed: {exc}") from exc
        self._require(step, frozenset(signers), "signed U3")
        entries = []
        for v in sorted(self._held):
            kind, share = self._held[v].reveal()
            entries.append((v, kind, shamir.to_bytes(share)))
        out = self._seal(m.MsgType.UNMASK, m.unmask_body(entries))
        self._abort()  # session over: forget every secret
        return out

    def respond(self, step: Step, message: bytes | None = None,
                x: np.ndarray | None = None) -> bytes:
        """Run ``step`` on the server's ``message`` for it (None at the first step; ``x``, this
        client's input, at masked_input) and return this client's reply."""
        match step:
            case Step.ADVERTISE_KEYS:
                return self.advertise_keys()
            case Step.SHARE_KEYS:
                return self.share_keys(message)
            case Step.MASKED_INPUT:
                return self.masked_input(message, x)
            case Step.CONSISTENCY_CHECK:
                return self.consistency_check(message)
            case Step.UNMASKING:
                return self.unmasking(message)
        raise ValueError(f"unknown step {step!r}")

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        d, q = self.cfg.vector_length, self.cfg.modulus
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "ui":
            raise TypeError(f"client {self.id}: input must be an integer numpy array")
        if x.shape != (d,):
            raise ValueError(f"client {self.id}: input has shape {x.shape}, expected ({d},)")
        if d and (int(x.min()) < 0 or int(x.max()) >= q):
            raise ValueError(f"client {self.id}: input entries must lie in [0, {q})")
        return x
