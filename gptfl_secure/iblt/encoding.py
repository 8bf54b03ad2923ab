"""Keys to field elements, and the keyed hashes that place and check them.

A key (any Unicode string) is UTF-8 encoded and carried as ``[length, chunk_0 .. chunk_{m-1}]``:
the byte length (so the empty key and keys ending in NUL bytes are distinct) and the bytes zero-
padded to ``m * 7`` bytes, 7 big-endian bytes per chunk.

One keyed BLAKE2b-512 digest of the key bytes gives, as eight 64-bit words, the
key's cell in each sub-table and two check values in Z_p. BLAKE2b is non-linear: a cell that holds
several keys passes the check with probability about 2^-122 (two independent 61-bit checks),
unlike an affine hash that the keys' average would pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import field
from .params import CHUNK_BYTES, IbltParams

_DOMAIN = b"gptfl-secure/iblt/v1"


def _hash_key(params: IbltParams) -> bytes:
    return hashlib.blake2b(_DOMAIN + params.seed.to_bytes(8, "big"), digest_size=32).digest()


def validate_keys(params: IbltParams, keys: Iterable[object]) -> list[bytes]:
    """UTF-8 bytes of each key; TypeError for a non-string, ValueError for a key too long."""
    out = []
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"IBLT keys must be str, got {type(key).__name__}: {key!r}")
        data = key.encode("utf-8")
        if len(data) > params.max_key_bytes:
            raise ValueError(
                f"key {key[:32]!r}... is {len(data)} bytes of UTF-8; max_key_bytes="
                f"{params.max_key_bytes}: raise max_key_bytes or shorten the key"
            )
        out.append(data)
    return out


@dataclass(frozen=True)
class EncodedKeys:
    """Per-key rows: ``payload`` (n, 1 + m) = [length, chunks], ``cells`` (n, r) flat cell
    indices (one per sub-table), ``checks`` (n, 2) check values in Z_p."""

    payload: np.ndarray
    cells: np.ndarray
    checks: np.ndarray


def encode(params: IbltParams, keys: Sequence[bytes]) -> EncodedKeys:
    """Encode validated key bytes: vectorised except for one BLAKE2b call per key."""
    n, m = len(keys), params.num_chunks
    width = m * CHUNK_BYTES
    payload = np.zeros((n, 1 + m), dtype=np.uint64)
    payload[:, 0] = np.fromiter(map(len, keys), dtype=np.uint64, count=n)
    if n:
        # A fixed-width bytes array zero-pads each key in C; the lengths keep trailing NULs apart.
        raw = np.array(keys, dtype=f"S{width}").view(np.uint8).reshape(n, width)
        payload[:, 1:] = chunks_from_bytes(raw, m)
    digests = digest_keys(params, keys)
    return EncodedKeys(payload, cells_from_digests(params, digests), checks_from_digests(digests))


def chunks_from_bytes(raw: np.ndarray, num_chunks: int) -> np.ndarray:
    """(n, m*7) uint8 -> (n, m) uint64 chunks, 7 big-endian bytes each."""
    n = raw.shape[0]
    wide = np.zeros((n, num_chunks, 8), dtype=np.uint8)
    wide[:, :, 1:] = raw.reshape(n, num_chunks, CHUNK_BYTES)
    return wide.view(">u8").reshape(n, num_chunks).astype(np.uint64)


def keys_from_bytes(raw: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """Row i of ``raw`` (n, width) uint8, cut to ``lengths[i]`` bytes, as ``bytes``."""
    n, width = raw.shape
    if n == 0:
        return []
    # numpy's fixed-width bytes drop trailing NULs: re-cut the few keys that end in NUL bytes.
    keys = np.ascontiguousarray(raw).view(f"S{width}").ravel().tolist()
    lengths = lengths.tolist()
    for i in np.flatnonzero(np.fromiter(map(len, keys), np.int64, n) != lengths).tolist():
        keys[i] = raw[i, : lengths[i]].tobytes()
    return keys


def bytes_from_chunks(chunks: np.ndarray) -> np.ndarray:
    """(n, m) uint64 chunks (< 2^56) -> (n, m*7) uint8 bytes; inverse of chunks_from_bytes."""
    n, m = chunks.shape
    wide = np.ascontiguousarray(chunks.astype(">u8")).view(np.uint8).reshape(n, m, 8)
    return np.ascontiguousarray(wide[:, :, 1:]).reshape(n, m * CHUNK_BYTES)


def digest_keys(params: IbltParams, keys: Sequence[bytes]) -> np.ndarray:
    """(n, 8) uint64 words of BLAKE2b-512, keyed by the params' seed, over each key's bytes."""
    hkey = _hash_key(params)
    blake = hashlib.blake2b
    joined = b"".join(blake(k, key=hkey, digest_size=64).digest() for k in keys)
    return np.frombuffer(joined, dtype="<u8").reshape(len(keys), 8).astype(np.uint64)


def cells_from_digests(params: IbltParams, digests: np.ndarray) -> np.ndarray:
    """Flat cell index in each sub-table: sub-table j covers cells [j*w, (j+1)*w)."""
    r, w = params.repetitions, params.subtable_cells
    offsets = np.arange(r, dtype=np.uint64) * np.uint64(w)
    return (digests[:, 2 : 2 + r] % np.uint64(w) + offsets).astype(np.int64)


def checks_from_digests(digests: np.ndarray) -> np.ndarray:
    """Two check values in Z_p from the first two digest words."""
    return digests[:, :2] % np.uint64(field.MODULUS)
