"""What travels in the Flower ``Message`` s: record names, message types, and the session header.

A message carries up to :data:`MAX_PARTS` protocol steps, each of its own session: ``ConfigRecord``
s named ``part-0``, ``part-1``, ... (:func:`part`), each ``{session, step, payload}`` (the first
step of a session: ``header`` instead of ``payload``); the reply answers each part under the same
name with ``{payload, seconds}`` or ``{abort, seconds}``. So one exchange can run round r's
consistency check and round r+1's key advertisement. Protocol bytes travel as ``bytes`` values (a
ConfigRecord admits bytes). A ``train`` message also carries the global model as an
``ArrayRecord`` named ``model`` and ``{"round": r}`` in the ``ConfigRecord`` named ``gptfl``; its
reply says ``{ok, seconds}`` there. The first step of a session carries its public parameters:
the :class:`SecAggConfig`, the session's client ids with their enrolled identity keys, and what
the client must sum (its label sketch, or its training contribution of a round).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..protocols import SecAggConfig
from ..protocols.config import MAX_MODULUS
from ..protocols.crypto import KEY_BYTES

RECORD = "gptfl"
MODEL = "model"
ENROLL = "query.enroll"
SECAGG = "query.secagg"
PLAIN = "query.plain"
TRAIN = "train"

MAX_PARTS = 4
"""Protocol steps in one message (the pipelined schedule sends at most two)."""


def part(index: int) -> str:
    """The record name of a message's ``index``-th protocol step."""
    return f"part-{index}"


PURPOSE_LABELS = "labels"
PURPOSE_ROUND = "round"


@dataclass(frozen=True)
class SessionHeader:
    """Public parameters of one masked-sum session, sent with its first step."""

    cfg: SecAggConfig
    identity_keys: dict[int, bytes]
    purpose: str
    round: int = 0
    iblt_capacity: int = 0
    iblt_seed: int = 0

    def to_bytes(self) -> bytes:
        ids = sorted(self.identity_keys)
        return json.dumps({
            "num_clients": self.cfg.num_clients, "threshold": self.cfg.threshold,
            "vector_length": self.cfg.vector_length, "modulus": self.cfg.modulus,
            "neighbors": self.cfg.neighbors,
            "peers": [[i, self.identity_keys[i].hex()] for i in ids],
            "purpose": self.purpose, "round": self.round,
            "iblt_capacity": self.iblt_capacity, "iblt_seed": self.iblt_seed,
        }).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionHeader:
        """Parse and validate a header from the server. Every field's type and range is checked
        (ints are JSON integers, not floats or booleans; ids in [0, 2^32 - 1), keys 32 bytes of
        hex, sizes bounded so that a header cannot make the node allocate without bound); any
        defect raises :class:`HeaderError` naming the field. Whether the node accepts the
        session is a separate question, answered by its own policy (client_app)."""
        if not isinstance(data, bytes | bytearray):
            raise HeaderError(f"a session header is bytes, got {type(data).__name__}")
        if len(data) > MAX_HEADER_BYTES:
            raise HeaderError(f"{len(data)} bytes exceed the header bound of {MAX_HEADER_BYTES}")
        try:
            raw = json.loads(bytes(data).decode())
        except (UnicodeDecodeError, ValueError) as exc:
            raise HeaderError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise HeaderError(f"a JSON object is expected, got {type(raw).__name__}")
        missing, unknown = _FIELDS - set(raw), set(raw) - _FIELDS
        if missing or unknown:
            raise HeaderError(f"missing fields {sorted(missing)}, unknown fields "
                              f"{sorted(unknown)}")
        n = _int(raw, "num_clients", 1, MAX_PEERS)
        t = _int(raw, "threshold", 1, n)
        d = _int(raw, "vector_length", 1, MAX_VECTOR_LENGTH)
        q = _int(raw, "modulus", 2, MAX_MODULUS)
        k = None if raw["neighbors"] is None else _int(raw, "neighbors", 2, MAX_PEERS)
        peers = raw["peers"]
        if not isinstance(peers, list) or len(peers) > MAX_PEERS:
            raise HeaderError(f"peers: a list of at most {MAX_PEERS} [id, key hex] pairs")
        keys: dict[int, bytes] = {}
        for entry in peers:
            if (not isinstance(entry, list) or len(entry) != 2 or not _is_int(entry[0])
                    or not 0 <= entry[0] < _U32_MAX or not isinstance(entry[1], str)
                    or len(entry[1]) != 2 * KEY_BYTES):
                raise HeaderError(f"peers: each entry is [client id in [0, 2^32 - 1), "
                                  f"{2 * KEY_BYTES} hex digits], got {str(entry)[:80]}")
            if entry[0] in keys:
                raise HeaderError(f"peers: client {entry[0]} is listed twice")
            try:
                keys[entry[0]] = bytes.fromhex(entry[1])
            except ValueError:
                raise HeaderError(f"peers: the key of client {entry[0]} is not hex") from None
        purpose = raw["purpose"]
        if purpose not in PURPOSES:
            raise HeaderError(f"purpose {str(purpose)[:40]!r}: one of {PURPOSES}")
        round_ = _int(raw, "round", 0, MAX_ROUND)
        capacity = _int(raw, "iblt_capacity", 0, MAX_IBLT_CAPACITY)
        seed = _int(raw, "iblt_seed", 0, 2**64 - 1)
        if purpose == PURPOSE_LABELS and capacity < 1:
            raise HeaderError("iblt_capacity: a label session needs a capacity >= 1")
        try:
            cfg = SecAggConfig(n, t, d, q, k)
        except (TypeError, ValueError) as exc:
            raise HeaderError(f"session parameters: {exc}") from None
        return cls(cfg, keys, purpose, round_, capacity, seed)


class HeaderError(ValueError):
    """A session header from the server is malformed or out of range (the node refuses it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed session header: {reason}")


MAX_HEADER_BYTES = 1 << 23
"""Bound on a header's size: 2^16 peers at ~75 bytes each, with room to spare."""
MAX_PEERS = 1 << 16
MAX_VECTOR_LENGTH = 1 << 28
"""Entries of one session's vector (a model of 2^28 coordinates is 1-2 GiB per message)."""
MAX_ROUND = 2**31 - 1
MAX_IBLT_CAPACITY = 1 << 20
PURPOSES = (PURPOSE_LABELS, PURPOSE_ROUND)
_U32_MAX = 2**32 - 1
_FIELDS = frozenset({"num_clients", "threshold", "vector_length", "modulus", "neighbors",
                     "peers", "purpose", "round", "iblt_capacity", "iblt_seed"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(raw: dict, name: str, low: int, high: int) -> int:
    value = raw[name]
    if not _is_int(value) or not low <= value <= high:
        raise HeaderError(f"{name}={str(value)[:40]}: must be an integer in [{low}, {high}]")
    return value
