"""A file format for the server's record of one masked-sum session, read back strictly.

A record holds what the server saw and nothing secret: the public parameters, the session id,
every enrolled client's Ed25519 identity *public* key, every client message the server kept
(round, transport-level sender, bytes, in arrival order, rejected ones included; at most
``server.MAX_KEPT_PER_SENDER`` per client and round), the set of clients whose inputs are in the
sum and, for a session that aborted, why. ``python -m gptfl_secure.audit DIR`` checks such
records without any client secret.

Every masked-sum session gets a record, aborted ones included: an aborted session's record is
``SecAggAbort.partial`` (see :meth:`MaskedSumResult.aborted`), the messages up to the abort, with
nobody included and ``"aborted"`` set to the abort's message.

One record is two files in one directory, written by :func:`record_session`::

    session-<name>.json   metadata (UTF-8 JSON, keys below), written last
    session-<name>.bin    the messages

``session-<name>.json``::

    {
      "format": "gptfl-secure/secagg-session-record",
      "version": 2,
      "name": "<name>",
      "config": {"num_clients": n, "threshold": t, "vector_length": d, "modulus": q,
                 "neighbors": k or null},
      "session_id": "<64 hex digits>",
      "identity_keys": {"<client id>": "<64 hex digits: Ed25519 public key>", ...},
      "included": [client ids, strictly increasing; empty for an aborted session],
      "aborted": null | "<reason>",
      "messages": {"file": "session-<name>.bin", "count": N, "bytes": B,
                   "sha256": "<hex digest of the .bin file>"}
    }

``session-<name>.bin`` (all integers big-endian)::

    file  = b"GSAREC\\x00\\x01" | count (u32) | entry * count
    entry = round (u8: index into config.STEPS) | sender (u32) | length (u32) | message bytes

``"aborted"`` is null for a session that produced a sum, else the abort's message, non-empty
(``str(SecAggAbort)``, e.g. ``"secure aggregation aborted at masked_input: 3 survivors <
threshold 4"``). Version history: 1, wire-v1 messages, no ``"aborted"`` key (aborted sessions
were not recorded); 2 (this one), wire-v2 messages (signatures after ADVERTISE cover the session
context, ``messages.session_context``) and ``"aborted"``. A version-1 record is refused: its
messages are wire v1, which this code no longer verifies.

``<name>`` is 1 to 128 characters of ``[A-Za-z0-9._-]``, starting with a letter or digit. The
``.bin`` file is written first and the ``.json`` last, each through a temporary file and an atomic
rename, so a record whose ``.json`` exists is complete. The SHA-256 in the ``.json`` tells storage
damage (a truncated or altered ``.bin``: :class:`RecordError`, the auditor exits 2) from a
transcript that fails its checks (exit 1): the digest is the writer's, so it proves nothing about
the server's honesty; the clients' signatures on the messages do.

:func:`read_record` is strict: any missing or unknown key, wrong type, bad hex, key of the wrong
length, config that :class:`SecAggConfig` refuses, unknown round, truncated entry, trailing byte or
digest mismatch raises :class:`RecordError` (a ``ValueError``). It does not judge the messages
themselves: a record may hold forged or malformed messages, which is what the auditor is for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .config import STEPS, SecAggConfig
from .crypto import KEY_BYTES
from .messages import SESSION_ID_BYTES
from .server import TranscriptEntry

FORMAT = "gptfl-secure/secagg-session-record"
FORMAT_VERSION = 2  # 2: wire-v2 messages, "aborted" key (every session recorded)
BIN_MAGIC = b"GSAREC\x00\x01"
_COUNT = struct.Struct(">I")
_ENTRY = struct.Struct(">BII")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_CONFIG_KEYS = ("num_clients", "threshold", "vector_length", "modulus", "neighbors")
_TOP_KEYS = {"format", "version", "name", "config", "session_id", "identity_keys", "included",
             "aborted", "messages"}
_MESSAGES_KEYS = {"file", "count", "bytes", "sha256"}
U32_MAX = 2**32 - 1


class RecordError(ValueError):
    """A session record is missing, malformed, inconsistent or damaged."""


@dataclass(frozen=True)
class SessionRecord:
    """One session as the server saw it. ``transcript`` is in arrival order; ``aborted`` is
    None for a session that produced a sum, else why it aborted."""

    name: str
    config: SecAggConfig
    session_id: bytes
    identity_keys: Mapping[int, bytes]
    transcript: tuple[TranscriptEntry, ...]
    included: frozenset[int]
    aborted: str | None = None

    def __post_init__(self) -> None:
        _validate(self)
        object.__setattr__(self, "identity_keys",
                           MappingProxyType(dict(sorted(self.identity_keys.items()))))


def _validate(rec: SessionRecord) -> None:
    """Raise RecordError unless ``rec`` is a well-formed record (not: an honest session)."""
    if not isinstance(rec.name, str) or not _NAME.fullmatch(rec.name):
        raise RecordError(f"record name {rec.name!r}: 1-128 of [A-Za-z0-9._-], starting with a "
                          "letter or digit")
    if not isinstance(rec.config, SecAggConfig):
        raise RecordError(f"config must be a SecAggConfig, got {type(rec.config).__name__}")
    if not isinstance(rec.session_id, bytes) or len(rec.session_id) != SESSION_ID_BYTES:
        raise RecordError(f"session id must be {SESSION_ID_BYTES} bytes")
    if not isinstance(rec.identity_keys, Mapping):
        raise RecordError("identity keys must map client id -> Ed25519 public key")
    for cid, key in rec.identity_keys.items():
        if not _is_u32(cid) or cid == U32_MAX:
            raise RecordError(f"client id {cid!r}: must be an int in [0, 2^32 - 1)")
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise RecordError(f"identity key of client {cid} must be {KEY_BYTES} bytes")
    if len(rec.identity_keys) != rec.config.num_clients:
        raise RecordError(f"{len(rec.identity_keys)} identity keys for num_clients="
                          f"{rec.config.num_clients}")
    if not isinstance(rec.included, frozenset) or not all(_is_u32(c) for c in rec.included):
        raise RecordError("included must be a frozenset of client ids")
    if not rec.included <= set(rec.identity_keys):
        raise RecordError(f"included clients {sorted(rec.included - set(rec.identity_keys))} "
                          "are not enrolled")
    if rec.aborted is not None and (not isinstance(rec.aborted, str) or not rec.aborted):
        raise RecordError("aborted must be None or the abort's reason (a non-empty string)")
    if not isinstance(rec.transcript, tuple):
        raise RecordError("transcript must be a tuple of TranscriptEntry")
    for i, e in enumerate(rec.transcript):
        if not isinstance(e, TranscriptEntry):
            raise RecordError(f"transcript entry {i} is a {type(e).__name__}, not TranscriptEntry")
        if e.step not in STEPS:
            raise RecordError(f"transcript entry {i}: unknown round {e.step!r}")
        if not _is_u32(e.sender):
            raise RecordError(f"transcript entry {i}: sender {e.sender!r} is not a u32")
        if not isinstance(e.data, bytes) or len(e.data) > U32_MAX:
            raise RecordError(f"transcript entry {i}: data must be bytes shorter than 4 GiB")


def _is_u32(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= U32_MAX


# ------------------------------------------------------------------- writing
def record_session(directory: str | os.PathLike[str], name: str, cfg: SecAggConfig,
                   session_id: bytes, identity_public_keys: Mapping[int, bytes],
                   transcript: Iterable[TranscriptEntry], included: Iterable[int], *,
                   aborted: str | None = None, overwrite: bool = False) -> Path:
    """Write ``session-<name>.{bin,json}`` into ``directory`` (created if missing); ``aborted``
    is the abort's reason for a session that aborted.

    Returns the ``.json`` path. Raises :class:`RecordError` for a malformed record and
    ``FileExistsError`` if the record exists and ``overwrite`` is False.
    """
    record = SessionRecord(name, cfg, bytes(session_id), dict(identity_public_keys),
                           tuple(transcript), frozenset(included), aborted)
    return write_record(directory, record, overwrite=overwrite)


def record_result(directory: str | os.PathLike[str], name: str, result,
                  cfg: SecAggConfig | None = None, *, overwrite: bool = False) -> Path:
    """Record a :class:`MaskedSumResult` from ``run_masked_sum``, or the partial record of an
    aborted session (``SecAggAbort.partial``, whose ``abort_reason`` becomes ``"aborted"``)::

        try:
            result = run_masked_sum(cfg, inputs, dropouts)
        except SecAggAbort as abort:
            result = abort.partial
        record_result(out / "transcripts", f"round-{r:04d}", result, cfg)

    Uses ``result.session_id`` and ``result.identity_keys`` (the enrolled Ed25519 public keys).
    The config is ``result.config`` when the result carries one (it must then equal ``cfg`` if
    both are given), else ``cfg``.
    """
    session_id = getattr(result, "session_id", b"")
    keys = getattr(result, "identity_keys", None)
    if not session_id or not keys:
        raise TypeError("this result carries no session id or identity keys: it cannot be "
                        "recorded")
    carried = getattr(result, "config", None)
    if carried is not None and cfg is not None and carried != cfg:
        raise ValueError(f"cfg={cfg} differs from the result's own config {carried}")
    cfg = carried if carried is not None else cfg
    if cfg is None:
        raise TypeError("pass cfg: the result does not carry its SecAggConfig")
    return record_session(directory, name, cfg, session_id, keys, result.transcript,
                          result.included, aborted=getattr(result, "abort_reason", None),
                          overwrite=overwrite)


def bin_name(name: str) -> str:
    return f"session-{name}.bin"


def json_name(name: str) -> str:
    return f"session-{name}.json"


def encode_messages(transcript: Iterable[TranscriptEntry]) -> bytes:
    """The ``.bin`` file's bytes."""
    entries = list(transcript)
    parts = [BIN_MAGIC, _COUNT.pack(len(entries))]
    for e in entries:
        parts.append(_ENTRY.pack(STEPS.index(e.step), e.sender, len(e.data)))
        parts.append(e.data)
    return b"".join(parts)


def write_record(directory: str | os.PathLike[str], record: SessionRecord, *,
                 overwrite: bool = False) -> Path:
    """Write ``record`` (see the module docstring); returns the ``.json`` path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, bin_path = directory / json_name(record.name), directory / bin_name(record.name)
    if not overwrite and (json_path.exists() or bin_path.exists()):
        raise FileExistsError(f"{json_path} already exists (pass overwrite=True to replace it)")
    blob = encode_messages(record.transcript)
    cfg = record.config
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": record.name,
        "config": {k: getattr(cfg, k) for k in _CONFIG_KEYS},
        "session_id": record.session_id.hex(),
        "identity_keys": {str(c): k.hex() for c, k in sorted(record.identity_keys.items())},
        "included": sorted(record.included),
        "aborted": record.aborted,
        "messages": {"file": bin_path.name, "count": len(record.transcript), "bytes": len(blob),
                     "sha256": hashlib.sha256(blob).hexdigest()},
    }
    _atomic_write(bin_path, blob)
    _atomic_write(json_path, (json.dumps(meta, indent=1) + "\n").encode())
    return json_path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------- reading
def find_records(directory: str | os.PathLike[str]) -> list[Path]:
    """Every ``session-*.json`` under ``directory``, recursively, sorted by path."""
    return sorted(p for p in Path(directory).rglob("session-*.json") if p.is_file())


def find_orphans(directory: str | os.PathLike[str]) -> list[Path]:
    """``session-*.bin`` files under ``directory`` with no ``.json`` beside them (an interrupted
    write, or a lost metadata file)."""
    return sorted(p for p in Path(directory).rglob("session-*.bin")
                  if p.is_file() and not p.with_suffix(".json").exists())


def read_record(path: str | os.PathLike[str]) -> SessionRecord:
    """Read the record whose ``.json`` file is ``path``; :class:`RecordError` on any defect."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecordError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        meta = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant,
                          object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise RecordError(f"{path}: not a JSON session record ({exc})") from exc
    try:
        return _from_meta(path, meta)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from exc


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return out


def _keys(obj: object, want: set[str], what: str) -> dict:
    if not isinstance(obj, dict):
        raise RecordError(f"{what} must be a JSON object")
    if set(obj) != want:
        extra, missing = sorted(set(obj) - want), sorted(want - set(obj))
        raise RecordError(f"{what}: " + "; ".join(
            s for s in (f"unknown keys {extra}" if extra else "",
                        f"missing keys {missing}" if missing else "") if s))
    return obj


def _int(v: object, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise RecordError(f"{what} must be an integer, got {json.dumps(v)[:40]}")
    return v


def _hex(v: object, n: int, what: str) -> bytes:
    if not isinstance(v, str) or len(v) != 2 * n or not re.fullmatch(r"[0-9a-f]*", v):
        raise RecordError(f"{what} must be {2 * n} lowercase hex digits")
    return bytes.fromhex(v)


def _from_meta(path: Path, meta: object) -> SessionRecord:
    # format and version first: the set of keys depends on the version
    if isinstance(meta, dict) and "format" in meta and "version" in meta:
        if meta["format"] != FORMAT:
            raise RecordError(f"format {meta['format']!r} is not {FORMAT!r}")
        if _int(meta["version"], "version") != FORMAT_VERSION:
            raise RecordError(f"record version {meta['version']} is not supported (expected "
                              f"{FORMAT_VERSION}; version 1 holds wire-v1 messages)")
    meta = _keys(meta, _TOP_KEYS, "record")
    name = meta["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name) or path.name != json_name(name):
        raise RecordError(f"name {name!r} does not match the file name {path.name!r}")
    conf = _keys(meta["config"], set(_CONFIG_KEYS), "config")
    values = {k: _int(conf[k], f"config.{k}") for k in _CONFIG_KEYS if k != "neighbors"}
    neighbors = conf["neighbors"]
    if neighbors is not None:
        neighbors = _int(neighbors, "config.neighbors")
    try:
        cfg = SecAggConfig(**values, neighbors=neighbors)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"config refused: {exc}") from exc
    session_id = _hex(meta["session_id"], SESSION_ID_BYTES, "session_id")
    ids = meta["identity_keys"]
    if not isinstance(ids, dict):
        raise RecordError("identity_keys must be a JSON object")
    keys: dict[int, bytes] = {}
    for cid_text, key in ids.items():
        if not re.fullmatch(r"0|[1-9][0-9]{0,9}", cid_text):
            raise RecordError(f"identity_keys: client id {cid_text!r} is not a decimal integer")
        keys[int(cid_text)] = _hex(key, KEY_BYTES, f"identity key of client {cid_text}")
    included = meta["included"]
    if not isinstance(included, list):
        raise RecordError("included must be a list of client ids")
    included = [_int(c, "included client id") for c in included]
    if included != sorted(set(included)):
        raise RecordError("included must be strictly increasing")
    msgs = _keys(meta["messages"], _MESSAGES_KEYS, "messages")
    if msgs["file"] != bin_name(name):
        raise RecordError(f"messages.file must be {bin_name(name)!r}")
    count, size = _int(msgs["count"], "messages.count"), _int(msgs["bytes"], "messages.bytes")
    digest = _hex(msgs["sha256"], 32, "messages.sha256")
    aborted = meta["aborted"]
    if aborted is not None and (not isinstance(aborted, str) or not aborted):
        raise RecordError("aborted must be null or the abort's reason (a non-empty string)")
    transcript = _read_bin(path.with_name(bin_name(name)), count, size, digest)
    return SessionRecord(name, cfg, session_id, keys, transcript, frozenset(included), aborted)


def _read_bin(path: Path, count: int, size: int, digest: bytes) -> tuple[TranscriptEntry, ...]:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise RecordError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    if len(blob) != size:
        raise RecordError(f"{path.name} has {len(blob)} bytes, the record announces {size} "
                          "(truncated or altered)")
    if hashlib.sha256(blob).digest() != digest:
        raise RecordError(f"{path.name}: SHA-256 differs from the one recorded (damaged file)")
    return decode_messages(blob, count)


def decode_messages(blob: bytes, count: int | None = None) -> tuple[TranscriptEntry, ...]:
    """Parse a ``.bin`` file's bytes; ``count``, if given, must match the one inside."""
    if blob[: len(BIN_MAGIC)] != BIN_MAGIC:
        raise RecordError("message file: bad magic (not a gptfl-secure session record)")
    pos = len(BIN_MAGIC)
    if len(blob) < pos + _COUNT.size:
        raise RecordError("message file: truncated before the message count")
    (inner,) = _COUNT.unpack_from(blob, pos)
    pos += _COUNT.size
    if count is not None and inner != count:
        raise RecordError(f"message file holds {inner} messages, the record announces {count}")
    out = []
    for i in range(inner):
        if pos + _ENTRY.size > len(blob):
            raise RecordError(f"message file: entry {i} is truncated")
        step, sender, length = _ENTRY.unpack_from(blob, pos)
        pos += _ENTRY.size
        if step >= len(STEPS):
            raise RecordError(f"message file: entry {i} names unknown round {step}")
        if pos + length > len(blob):
            raise RecordError(f"message file: entry {i} announces {length} bytes, "
                              f"{len(blob) - pos} remain")
        out.append(TranscriptEntry(STEPS[step], sender, blob[pos : pos + length]))
        pos += length
    if pos != len(blob):
        raise RecordError(f"message file: {len(blob) - pos} trailing bytes")
    return tuple(out)
