"""The wire format: explicit, versioned, strictly parsed.

Every message is ``header | body`` and, for a client's message, ``| signature``::

    header    = b"GSA" | version (1) | type (1) | session id (32) | sender (u32) | body length (u32)
    signature = Ed25519 by the sender's identity key over SHA-256(domain | header | body)

Signing a domain-separated SHA-256 digest (hash-then-sign) keeps verification of a 400 KB
masked input as cheap as that of a short message (pynacl would copy the whole message twice).

The signature binds the session id, the step (type) and the sender, so a message replayed from
another session id, another step or another client fails verification. Every client message after
ADVERTISE is signed under the **session context** as well (:func:`session_context`): a hash of
the session id, U1 and the digest of every advertisement in U1. Each honest client's own
advertisement carries two X25519 keys it made for this session, so the context is fresh
randomness that the server cannot choose or reuse: a signature from an earlier session, even one
run under the same session id, never verifies in this one, and two clients shown different key
lists sign under different contexts. Parsing checks every length
and range and rejects trailing bytes; any defect raises :class:`MessageError`.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .crypto import DOMAIN, KEY_BYTES, SIGNATURE_BYTES, verify
from .errors import MessageError
from .shamir import SHARE_BYTES

MAGIC = b"GSA"
VERSION = 2  # 2: signatures after ADVERTISE cover the session context
SERVER = 0xFFFFFFFF
SESSION_ID_BYTES = 32
_HEADER = struct.Struct(">3sBB32sII")
MAX_ENTRIES = 1 << 20
DIGEST_BYTES = 32


class MsgType(IntEnum):
    ADVERTISE = 1  # client: its two X25519 public keys
    KEY_LIST = 2  # server -> one client: U1, and the ADVERTISE messages of its group
    SHARES = 3  # client: per recipient, share commitments and the encrypted share pair
    SHARE_RELAY = 4  # server -> one client: the ciphertexts addressed to it
    MASKED_INPUT = 5  # client: y_u
    SURVIVORS = 6  # server: U3, the clients whose masked input arrived
    CONSISTENCY = 7  # client: SHA-256 of U3, signed
    SIGNATURES = 8  # server -> one client: the CONSISTENCY messages of its group
    UNMASK = 9  # client: per peer, one share (self-mask seed or mask key)


CLIENT_TYPES = {MsgType.ADVERTISE, MsgType.SHARES, MsgType.MASKED_INPUT, MsgType.CONSISTENCY,
                MsgType.UNMASK}


class ShareKind(IntEnum):
    SELF_MASK = 1  # a share of b_v: v's masked input is in the sum
    MASK_KEY = 2  # a share of v's mask-agreement secret key: v dropped after sharing


@dataclass(frozen=True)
class Envelope:
    type: MsgType
    session_id: bytes
    sender: int
    body: memoryview  # views into the message: a 400 KB masked input is never copied
    signed_part: memoryview  # header | body, what the signature covers
    signature: bytes | None


# ------------------------------------------------------------------- framing
def signing_digest(signed_part: bytes, context: bytes = b"") -> bytes:
    """What a client's Ed25519 signature covers: SHA-256 of the domain, the session context
    (empty for ADVERTISE, which precedes it; 32 bytes for every later message), header and body.
    """
    if len(context) not in (0, DIGEST_BYTES):
        raise ValueError(f"a session context is {DIGEST_BYTES} bytes, got {len(context)}")
    digest = hashlib.sha256(DOMAIN + b"message|" + bytes([len(context)]) + context)
    digest.update(signed_part)
    return digest.digest()


def seal(type_: MsgType, session_id: bytes, sender: int, body: bytes, identity=None,
         context: bytes = b"") -> bytes:
    """Frame ``body``; a client's message is signed with its ``identity`` key under ``context``
    (see :func:`session_context`; required for every client message after ADVERTISE)."""
    header = _HEADER.pack(MAGIC, VERSION, int(type_), session_id, sender, len(body))
    data = header + body
    if identity is None:
        return data
    return data + identity.sign(signing_digest(data, context))


def open_envelope(data: bytes, expected: MsgType, session_id: bytes) -> Envelope:
    """Parse the frame of a message of type ``expected`` in ``session_id`` (not the signature)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError(f"a message must be bytes, got {type(data).__name__}")
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) < _HEADER.size:
        raise MessageError(f"message of {len(data)} bytes is shorter than the header")
    magic, version, type_, sid, sender, body_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MessageError("bad magic: not a gptfl-secure secagg message")
    if version != VERSION:
        raise MessageError(f"wire version {version} is not supported (expected {VERSION})")
    if type_ != expected:
        raise MessageError(f"expected a {expected.name} message, got type {type_}")
    if sid != session_id:
        raise MessageError("message belongs to another session")
    signed = expected in CLIENT_TYPES
    total = _HEADER.size + body_len + (SIGNATURE_BYTES if signed else 0)
    if len(data) != total:
        raise MessageError(f"{expected.name}: {len(data)} bytes, the header announces {total}")
    end = _HEADER.size + body_len
    view = memoryview(data)
    return Envelope(expected, sid, sender, view[_HEADER.size : end], view[:end],
                    data[end:] if signed else None)


def open_signed(data: bytes, expected: MsgType, session_id: bytes, identity_keys,
                context: bytes = b"") -> Envelope:
    """Parse a client's message and verify its signature under the claimed sender's key and the
    session ``context`` (empty for ADVERTISE only)."""
    if (expected is MsgType.ADVERTISE) != (context == b""):
        raise ValueError("ADVERTISE is signed without a session context, every later client "
                         "message with one")
    env = open_envelope(data, expected, session_id)
    public = identity_keys.get(env.sender)
    if public is None:
        raise MessageError(f"sender {env.sender} is not an enrolled client")
    if not verify(public, signing_digest(env.signed_part, context), env.signature):
        raise MessageError(f"{expected.name} from {env.sender}: bad signature (or signed in "
                           "another session context)")
    return env


def advert_digest(advert: bytes) -> bytes:
    """SHA-256 of one client's whole signed ADVERTISE message, as listed in a key list."""
    return hashlib.sha256(DOMAIN + b"advert|" + bytes(advert)).digest()


def session_context(session_id: bytes, digests: dict[int, bytes]) -> bytes:
    """The session context: SHA-256 over the session id, U1 (the keys of ``digests``) and each
    U1 member's advertisement digest, in id order. Every party that saw the same U1 with the same
    advertisements computes the same 32 bytes; it changes whenever any advertisement does."""
    h = hashlib.sha256(DOMAIN + b"session-context|" + session_id)
    for cid in sorted(digests):
        h.update(cid.to_bytes(4, "big") + digests[cid])
    return h.digest()


# ------------------------------------------------------------------- body fields
class Reader:
    """Strict cursor over a body: every read is bounds-checked, ``done`` rejects leftovers."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data, self.pos = data, 0

    def view(self, n: int) -> memoryview:
        """The next ``n`` bytes, without copying."""
        if n < 0 or self.pos + n > len(self.data):
            raise MessageError(f"truncated body: need {n} bytes at offset {self.pos}")
        out = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return out

    def take(self, n: int) -> bytes:
        return bytes(self.view(n))

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def count(self, min_entry_bytes: int) -> int:
        n = self.u32()
        if n > MAX_ENTRIES or n * min_entry_bytes > len(self.data) - self.pos:
            raise MessageError(f"entry count {n} does not fit in the body")
        return n

    def blob(self) -> bytes:
        return self.take(self.u32())

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MessageError(f"{len(self.data) - self.pos} trailing bytes")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def blob(b: bytes) -> bytes:
    return u32(len(b)) + b


def ids_body(ids) -> bytes:
    ids = sorted(ids)
    return u32(len(ids)) + b"".join(u32(i) for i in ids)


def survivors_digest(u3_body: bytes) -> bytes:
    """The body of a CONSISTENCY message: a digest of the U3 list the client received, so that
    relaying signatures costs O(1) bytes each, not O(n)."""
    return hashlib.sha256(DOMAIN + b"survivors|" + u3_body).digest()


def read_ids(body: bytes) -> frozenset[int]:
    r = Reader(body)
    ids = [r.u32() for _ in range(r.count(4))]
    r.done()
    if ids != sorted(set(ids)):
        raise MessageError("id list must be strictly increasing")
    return frozenset(ids)


# ------------------------------------------------------------------- per-type bodies
def key_list_body(u1, adverts, digests: dict[int, bytes] | None = None) -> bytes:
    """U1, the digest of every U1 member's advertisement (in id order), then the full
    advertisements of the recipient's group. ``digests=None`` computes them from ``adverts``,
    which then must hold one advertisement per member of U1 (the complete graph)."""
    adverts = list(adverts)
    if digests is None:
        digests = {int.from_bytes(a[37:41], "big"): advert_digest(a) for a in adverts}
    ids = sorted(u1)
    return (ids_body(ids) + b"".join(digests.get(i, bytes(DIGEST_BYTES)) for i in ids)
            + list_body(adverts))


def read_key_list(body: bytes) -> tuple[frozenset[int], dict[int, bytes], list[bytes]]:
    """(U1, {member: advertisement digest}, the group's advertisements)."""
    r = Reader(body)
    ids = [r.u32() for _ in range(r.count(4 + DIGEST_BYTES))]
    if ids != sorted(set(ids)):
        raise MessageError("id list must be strictly increasing")
    digests = {i: r.take(DIGEST_BYTES) for i in ids}
    adverts = [r.blob() for _ in range(r.count(4))]
    r.done()
    return frozenset(ids), digests, adverts


def advertise_body(enc_pk: bytes, mask_pk: bytes) -> bytes:
    return enc_pk + mask_pk


def read_advertise(body: bytes) -> tuple[bytes, bytes]:
    r = Reader(body)
    enc_pk, mask_pk = r.take(KEY_BYTES), r.take(KEY_BYTES)
    r.done()
    return enc_pk, mask_pk


def list_body(messages) -> bytes:
    messages = list(messages)
    return u32(len(messages)) + b"".join(blob(m) for m in messages)


def read_list(body: bytes) -> list[bytes]:
    r = Reader(body)
    out = [r.blob() for _ in range(r.count(4))]
    r.done()
    return out


@dataclass(frozen=True)
class ShareEntry:
    recipient: int
    commit_self_mask: bytes
    commit_mask_key: bytes
    ciphertext: bytes  # empty for the owner's own entry


_SHARE_ENTRY = struct.Struct(">I32s32sI")


def shares_body(secret_commitment: bytes, entries: list[ShareEntry]) -> bytes:
    """The owner's commitment to b_u, then per recipient: share commitments and ciphertext."""
    return secret_commitment + u32(len(entries)) + b"".join(
        _SHARE_ENTRY.pack(e.recipient, e.commit_self_mask, e.commit_mask_key, len(e.ciphertext))
        + e.ciphertext
        for e in entries
    )


def read_shares(body: bytes) -> tuple[bytes, dict[int, ShareEntry]]:
    r = Reader(bytes(body))
    secret_commitment = r.take(32)
    count = r.count(_SHARE_ENTRY.size)
    out: dict[int, ShareEntry] = {}
    data, pos = r.data, r.pos
    for _ in range(count):
        if pos + _SHARE_ENTRY.size > len(data):
            raise MessageError("truncated share entry")
        recipient, commit_b, commit_k, ct_len = _SHARE_ENTRY.unpack_from(data, pos)
        pos += _SHARE_ENTRY.size
        if pos + ct_len > len(data):
            raise MessageError("truncated share ciphertext")
        if recipient in out:
            raise MessageError(f"two share entries for recipient {recipient}")
        out[recipient] = ShareEntry(recipient, commit_b, commit_k, data[pos : pos + ct_len])
        pos += ct_len
    r.pos = pos
    r.done()
    return secret_commitment, out


def relay_body(ciphertexts: dict[int, bytes]) -> bytes:
    return u32(len(ciphertexts)) + b"".join(
        u32(s) + blob(c) for s, c in sorted(ciphertexts.items())
    )


def read_relay(body: bytes) -> dict[int, bytes]:
    r = Reader(body)
    out: dict[int, bytes] = {}
    for _ in range(r.count(8)):
        sender, ct = r.u32(), r.blob()
        if sender in out:
            raise MessageError(f"two ciphertexts from sender {sender}")
        out[sender] = ct
    r.done()
    return out


def vector_body(y: np.ndarray, element_bytes: int) -> bytes:
    dtype = "<u4" if element_bytes == 4 else "<u8"
    return u32(len(y)) + np.ascontiguousarray(y, dtype=dtype).tobytes()


def read_vector(body: bytes, d: int, modulus: int, element_bytes: int) -> np.ndarray:
    r = Reader(body)
    if r.u32() != d:
        raise MessageError(f"masked input must have {d} entries")
    raw = r.view(d * element_bytes)
    r.done()
    y = np.frombuffer(raw, dtype="<u4" if element_bytes == 4 else "<u8")  # read-only, no copy
    if y.size and int(y.max()) >= modulus:
        raise MessageError(f"masked input entry out of range [0, {modulus})")
    return y


_UNMASK_ENTRY = struct.Struct(f">IB{SHARE_BYTES}s")


def unmask_body(entries: list[tuple[int, ShareKind, bytes]]) -> bytes:
    return u32(len(entries)) + b"".join(_UNMASK_ENTRY.pack(p, k, s) for p, k, s in entries)


def read_unmask(body: bytes) -> dict[int, tuple[ShareKind, bytes]]:
    r = Reader(body)
    count = r.count(_UNMASK_ENTRY.size)
    entries = r.take(count * _UNMASK_ENTRY.size)
    r.done()
    out: dict[int, tuple[ShareKind, bytes]] = {}
    kinds = {int(k): k for k in ShareKind}
    for peer, kind, share in _UNMASK_ENTRY.iter_unpack(entries):
        if kind not in kinds:
            raise MessageError(f"unknown share kind {kind}")
        if peer in out:
            raise MessageError(f"two shares for peer {peer}: a client reveals one share per peer")
        out[peer] = (kinds[kind], share)
    return out
