"""The saved state of a :class:`~gptfl_secure.protocols.client.SecAggClient` between two steps.

A transport that cannot keep a client object alive between two protocol steps (Flower runs one
ClientApp call per message) saves the client with ``SecAggClient.export_state()`` and rebuilds
it with ``SecAggClient.restore_state(data, identity)``. The bytes hold the session's secrets
(X25519 private keys, b_u, the shares held for peers): keep them in memory only. The identity
key is not in them; the caller keeps it (Flower: in the node's Context) and passes it back.

Format, version :data:`VERSION`: UTF-8 JSON ``{"version": 1, "sha256": <hex>, "state": {...}}``
where ``sha256`` is the SHA-256 of the canonical JSON of ``state`` (sorted keys, no spaces) and
``state`` holds exactly the fields of :class:`ClientState`, encoded as follows:

=================  ==========================================================================
field              encoding
=================  ==========================================================================
``config``         object: ``num_clients``, ``threshold``, ``vector_length``, ``modulus`` (ints)
                   and ``neighbors`` (int or null), a valid :class:`SecAggConfig`
``client_id``      int, a key of ``identity_keys``
``session_id``     base64 of 32 bytes
``identity_keys``  object: decimal client id -> base64 of a 32-byte Ed25519 public key
``position``       the round the client runs next (a :class:`Step` value), or "done"/"aborted"
``enc_key``        base64 of the 32-byte X25519 private key for share encryption
``mask_key``       base64 of the 32-byte X25519 private key for pairwise masks
``own_advert``     base64 of the client's ADVERTISE message ("" before it sent one)
``advertised``     object: decimal id -> [base64 32-byte encryption key, base64 mask key]
``group``          sorted list of ids: the client's group (itself included)
``shared``         sorted list of ids: its group members in U2 (itself included)
``held``           object: decimal id -> [self-mask share, mask-key share, fate], a share an
                   int in [0, PRIME) or null, the fate "pending", "survived" or "dropped"
``enc_secrets``    object: decimal id -> base64 of a 32-byte X25519 shared secret
``survivors``      sorted list of ids: U3 as the client accepted it
``b``              base64 of the 32-byte self-mask secret b_u, or null
``context``        base64 of the session context: 0 bytes before share_keys, else 32
=================  ==========================================================================

:meth:`ClientState.from_bytes` refuses anything else with :class:`ClientStateError`: another
version, a checksum mismatch, a missing or unknown field, a value of the wrong type or size, and
a state whose fields contradict its position in the protocol (see :meth:`ClientState.check`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from . import shamir
from .config import STEPS, Position, SecAggConfig, SessionEnd, Step
from .errors import ClientStateError

VERSION = 1
KEY_BYTES = 32
SESSION_ID_BYTES = 32
FATES = ("pending", "survived", "dropped")


@dataclass(frozen=True)
class HeldState:
    """The shares a client holds for one peer, and the peer's fate."""

    self_mask: int | None
    mask_key: int | None
    fate: str


@dataclass(frozen=True)
class ClientState:
    """Every field of a client between two steps (its identity key excepted)."""

    config: SecAggConfig
    client_id: int
    session_id: bytes
    identity_keys: dict[int, bytes]
    position: Position
    enc_key: bytes
    mask_key: bytes
    own_advert: bytes
    advertised: dict[int, tuple[bytes, bytes]]
    group: frozenset[int]
    shared: frozenset[int]
    held: dict[int, HeldState]
    enc_secrets: dict[int, bytes]
    survivors: frozenset[int]
    b: bytes | None
    context: bytes

    # ------------------------------------------------------------------ invariants
    def check(self) -> None:
        """Raise :class:`ClientStateError` unless the fields agree with each other and with the
        client's position in the protocol."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ClientStateError(f"saved client state: {what}")

        need(len(self.session_id) == SESSION_ID_BYTES, "session_id must be 32 bytes")
        need(self.client_id in self.identity_keys, "client_id is not in identity_keys")
        need(all(len(k) == KEY_BYTES for k in self.identity_keys.values()),
             "identity keys must be 32 bytes")
        need(len(self.enc_key) == KEY_BYTES and len(self.mask_key) == KEY_BYTES,
             "private keys must be 32 bytes")
        need(len(self.context) in (0, 32), "context must be 0 or 32 bytes")
        need(self.b is None or len(self.b) == KEY_BYTES, "b must be 32 bytes")
        enrolled = frozenset(self.identity_keys)
        for name in ("group", "shared", "survivors"):
            need(getattr(self, name) <= enrolled, f"{name} names clients that are not enrolled")
        need(set(self.advertised) <= self.group, "advertised keys from outside the group")
        need(all(len(e) == KEY_BYTES and len(k) == KEY_BYTES
                 for e, k in self.advertised.values()), "advertised keys must be 32 bytes")
        need(set(self.enc_secrets) <= self.group - {self.client_id},
             "encryption secrets with clients outside the group")
        need(all(len(s) == KEY_BYTES for s in self.enc_secrets.values()),
             "encryption secrets must be 32 bytes")
        need(set(self.held) <= self.group, "shares held for clients outside the group")
        need(self.shared <= self.group, "shared names clients outside the group")
        for v, h in self.held.items():
            need(h.fate in FATES, f"unknown fate {h.fate!r} of peer {v}")
            for share in (h.self_mask, h.mask_key):
                need(share is None or 0 <= share < shamir.PRIME,
                     f"a share of peer {v} is not a field element")
            want = {"pending": (True, True), "survived": (True, False),
                    "dropped": (False, True)}[h.fate]
            need((h.self_mask is not None, h.mask_key is not None) == want,
                 f"peer {v}'s shares do not match its fate {h.fate}")

        if not isinstance(self.position, Step):  # done or aborted: every secret forgotten
            need(not self.held and not self.enc_secrets and self.b is None,
                 f"a {self.position} client still holds secrets")
            return
        done = STEPS.index(self.position)  # rounds this client has run
        need((self.own_advert != b"") == (done >= 1), "own advertisement vs position")
        shared_keys = done >= 2  # share_keys ran: context, group, b, own shares
        need((len(self.context) == 32) == shared_keys, "context vs position")
        need((self.b is not None) == shared_keys, "b vs position")
        need(bool(self.group) == shared_keys and bool(self.advertised) == shared_keys,
             "group and advertised keys vs position")
        need(not shared_keys or self.client_id in self.group, "the client is not in its group")
        need(set(self.enc_secrets) == set(self.advertised) - {self.client_id},
             "encryption secrets vs advertised keys")
        need(not shared_keys or self.client_id in self.held, "no share of its own secrets")
        need(done != 2 or set(self.held) == {self.client_id}, "shares held vs position")
        need(bool(self.shared) == (done >= 3), "U2 vs position")
        need(not self.shared or self.client_id in self.shared, "the client is not in U2")
        need(done < 3 or set(self.held) == self.shared, "shares held vs U2")
        need(bool(self.survivors) == (done >= 4), "U3 vs position")
        settled = done >= 4
        need(all((h.fate != "pending") == settled for h in self.held.values()),
             "peers' fates vs position")
        need(not settled or all((h.fate == "survived") == (v in self.survivors)
                                for v, h in self.held.items()), "fates vs U3")

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        state = {
            "config": asdict(self.config),
            "client_id": self.client_id,
            "session_id": _b64(self.session_id),
            "identity_keys": {str(c): _b64(k) for c, k in sorted(self.identity_keys.items())},
            "position": self.position.value,
            "enc_key": _b64(self.enc_key),
            "mask_key": _b64(self.mask_key),
            "own_advert": _b64(self.own_advert),
            "advertised": {str(c): [_b64(e), _b64(k)]
                           for c, (e, k) in sorted(self.advertised.items())},
            "group": sorted(self.group),
            "shared": sorted(self.shared),
            "held": {str(c): [h.self_mask, h.mask_key, h.fate]
                     for c, h in sorted(self.held.items())},
            "enc_secrets": {str(c): _b64(s) for c, s in sorted(self.enc_secrets.items())},
            "survivors": sorted(self.survivors),
            "b": None if self.b is None else _b64(self.b),
            "context": _b64(self.context),
        }
        return json.dumps({"version": VERSION, "sha256": _digest(state), "state": state},
                          sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientState:
        """The state :meth:`to_bytes` wrote, checked; ClientStateError for anything else."""
        try:
            saved = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError, TypeError) as exc:
            raise ClientStateError(f"saved client state is not JSON: {exc}") from exc
        if not isinstance(saved, dict):
            raise ClientStateError("saved client state is not a JSON object")
        if saved.get("version") != VERSION or type(saved.get("version")) is not int:
            raise ClientStateError(f"saved client state has version "
                                   f"{str(saved.get('version'))[:20]!r}, expected {VERSION}")
        _keys(saved, {"version", "sha256", "state"}, "saved client state")
        s = saved["state"]
        if not isinstance(s, dict):
            raise ClientStateError("saved client state: 'state' is not an object")
        if saved["sha256"] != _digest(s):
            raise ClientStateError("saved client state: checksum mismatch (corrupted)")
        _keys(s, {f.name for f in fields(cls)}, "saved client state")
        state = cls(
            config=_config(s["config"]),
            client_id=_int(s["client_id"], "client_id"),
            session_id=_bytes(s["session_id"], "session_id"),
            identity_keys=_id_map(s["identity_keys"], "identity_keys",
                                  lambda v, w: _bytes(v, w)),
            position=_position(s["position"]),
            enc_key=_bytes(s["enc_key"], "enc_key"),
            mask_key=_bytes(s["mask_key"], "mask_key"),
            own_advert=_bytes(s["own_advert"], "own_advert"),
            advertised=_id_map(s["advertised"], "advertised", _key_pair),
            group=_ids(s["group"], "group"),
            shared=_ids(s["shared"], "shared"),
            held=_id_map(s["held"], "held", _held),
            enc_secrets=_id_map(s["enc_secrets"], "enc_secrets", lambda v, w: _bytes(v, w)),
            survivors=_ids(s["survivors"], "survivors"),
            b=None if s["b"] is None else _bytes(s["b"], "b"),
            context=_bytes(s["context"], "context"),
        )
        state.check()
        return state


# ------------------------------------------------------------------ field codecs
def _digest(state: Any) -> str:
    canonical = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _keys(obj: dict, want: set[str], what: str) -> None:
    missing, unknown = want - set(obj), set(obj) - want
    if missing or unknown:
        raise ClientStateError(f"{what}: missing fields {sorted(missing)}, unknown fields "
                               f"{sorted(map(str, unknown))[:5]}")


def _int(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**32 - 1:
        raise ClientStateError(f"saved client state: {what} must be a client id")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ClientStateError(f"saved client state: {what} must be base64 text")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise ClientStateError(f"saved client state: {what} is not base64") from exc


def _ids(value: Any, what: str) -> frozenset[int]:
    if not isinstance(value, list):
        raise ClientStateError(f"saved client state: {what} must be a list of ids")
    ids = [_int(v, what) for v in value]
    if ids != sorted(set(ids)):
        raise ClientStateError(f"saved client state: {what} must be sorted and unique")
    return frozenset(ids)


def _id_map(value: Any, what: str, decode) -> dict:
    if not isinstance(value, dict):
        raise ClientStateError(f"saved client state: {what} must be an object")
    out = {}
    for key, v in value.items():
        if not (0 < len(key) <= 10 and key.isascii() and key.isdigit()) or str(int(key)) != key:
            raise ClientStateError(f"saved client state: {what} has a key that is not an id")
        out[_int(int(key), what)] = decode(v, f"{what}[{key}]")
    return out


def _key_pair(value: Any, what: str) -> tuple[bytes, bytes]:
    if not isinstance(value, list) or len(value) != 2:
        raise ClientStateError(f"saved client state: {what} must be two keys")
    return _bytes(value[0], what), _bytes(value[1], what)


def _held(value: Any, what: str) -> HeldState:
    if not isinstance(value, list) or len(value) != 3:
        raise ClientStateError(f"saved client state: {what} must be [share, share, fate]")
    for share in value[:2]:
        if share is not None and type(share) is not int:
            raise ClientStateError(f"saved client state: {what} holds a share that is not an int")
    if value[2] not in FATES:
        raise ClientStateError(f"saved client state: {what} has an unknown fate")
    return HeldState(value[0], value[1], value[2])


def _position(value: Any) -> Position:
    for kind in (Step, SessionEnd):
        try:
            return kind(value)
        except ValueError:
            continue
    raise ClientStateError(f"saved client state: unknown position {str(value)[:40]!r}")


def _config(value: Any) -> SecAggConfig:
    names = {"num_clients", "threshold", "vector_length", "modulus", "neighbors"}
    if not isinstance(value, dict):
        raise ClientStateError("saved client state: config must be an object")
    _keys(value, names, "saved client state: config")
    try:
        return SecAggConfig(**value)
    except (TypeError, ValueError) as exc:
        raise ClientStateError(f"saved client state: bad config: {exc}") from exc
