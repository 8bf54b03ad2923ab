"""The IBLT sketch: a linear, vector-shaped encoding of a multiset of string keys.

``IbltSketch`` values add and subtract cell-wise in Z_p, so the masked sum of clients' sketch
vectors is the sketch of the union of their keys, with each key's count the number of clients
that inserted it. ``decode`` recovers ``{key: count}`` from a sum; it reveals exactly the
histogram, and nothing about which client inserted what.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import field as zp
from .encoding import (
    EncodedKeys,
    bytes_from_chunks,
    cells_from_digests,
    checks_from_digests,
    digest_keys,
    encode,
    keys_from_bytes,
    validate_keys,
)
from .params import CHUNK_BYTES, IbltParams

_CHUNK_LIMIT = np.uint64(1 << (8 * CHUNK_BYTES))


@dataclass(frozen=True)
class DecodeResult:
    """``counts``: every key that could be verified, with its signed count. ``complete``: True iff
    the table peeled to all zeros, so ``counts`` is the whole histogram. For a sum of honest
    sketches an incomplete result (over capacity, or a stall within capacity, which happens with
    probability at most ``params.max_failure``) still holds only verified, exact counts; a forged
    vector can make an over-capacity decode report a wrong count (SECURITY.md).

    What could not be decoded, for sizing a retry (read for honest sums with positive counts):
    ``undecoded_cells``, the non-zero cells left; ``min_keys``, a lower bound on the distinct keys
    (every cell left holds at least two keys, else it would have peeled); ``estimated_keys``, the
    distinct keys estimated from the occupied cells of the summed table (linear counting), or the
    total count when a sub-table is full (an upper bound)."""

    counts: dict[str, int]
    complete: bool
    undecoded_cells: int = field(default=0, compare=False)
    min_keys: int = field(default=0, compare=False)
    estimated_keys: float = field(default=0.0, compare=False)


class DecodeFailed(ValueError):
    """The table did not peel to zero: :meth:`IbltSketch.decode_exact` refuses to return a partial
    histogram. ``result`` is the partial :class:`DecodeResult` (verified, exact counts, and what
    could not be decoded)."""

    def __init__(self, result: DecodeResult, capacity: int) -> None:
        self.result = result
        self.capacity = capacity
        super().__init__(
            f"IBLT decode incomplete: {len(result.counts)} keys decoded, {result.undecoded_cells} "
            f"cells left (at least {result.min_keys} keys in all, about "
            f"{result.estimated_keys:.0f}; capacity {capacity}). Retry with a fresh seed, and a "
            "larger capacity if the keys exceed it")


class IbltSketch:
    """An invertible Bloom lookup table over Z_p, p = ``params.modulus``.

    Build with :meth:`from_keys`, :meth:`from_counts` or :meth:`from_vector`; combine with ``+``,
    ``-`` and ``sum``; read with :meth:`decode`. Instances are immutable.
    """

    __slots__ = ("params", "_table")

    def __init__(self, params: IbltParams, table: np.ndarray) -> None:
        """Internal: use the ``from_*`` constructors, which validate their input."""
        self.params = params
        self._table = table
        self._table.flags.writeable = False

    # ---------------------------------------------------------------- construction
    @classmethod
    def empty(cls, params: IbltParams) -> IbltSketch:
        """The sketch of the empty multiset: all cells zero."""
        _require_params(params)
        return cls(params, np.zeros((params.num_cells, params.cell_width), dtype=np.uint64))

    @classmethod
    def from_keys(cls, params: IbltParams, keys: Iterable[str]) -> IbltSketch:
        """Sketch of a set of keys, each with count 1 (a client's distinct labels).

        Raises TypeError for a non-string key, ValueError for a key over ``max_key_bytes`` or a
        key given twice (pass ``set(keys)``, or use :meth:`from_counts` for multiplicities).
        """
        _require_params(params)
        keys = list(keys)
        data = validate_keys(params, keys)
        if len(set(data)) != len(data):
            dup = next(k for k, n in Counter(keys).items() if n > 1)
            raise ValueError(
                f"key {dup!r} appears more than once; from_keys encodes a set: pass set(keys), "
                "or use IbltSketch.from_counts for multiplicities"
            )
        ones = np.ones(len(data), dtype=np.uint64)
        return cls._from_encoded(params, encode(params, data), ones)

    @classmethod
    def from_counts(cls, params: IbltParams, counts: Mapping[str, int]) -> IbltSketch:
        """Sketch of a multiset given as ``{key: count}``; counts may be negative, 0 is skipped."""
        _require_params(params)
        if not isinstance(counts, Mapping):
            raise TypeError(f"counts must be a mapping of str to int, got {type(counts).__name__}")
        half = params.modulus // 2
        for key, count in counts.items():
            if not isinstance(count, (int, np.integer)) or isinstance(count, bool):
                raise TypeError(f"count of {key!r} must be an int, got {type(count).__name__}")
            if abs(int(count)) > half:
                raise ValueError(f"count of {key!r} is {count}; |count| must be <= (p-1)/2")
        items = [(k, int(c)) for k, c in counts.items() if int(c) != 0]
        data = validate_keys(params, [k for k, _ in items])
        mult = zp.from_signed(np.array([c for _, c in items], dtype=np.int64))
        return cls._from_encoded(params, encode(params, data), mult)

    @classmethod
    def from_vector(cls, params: IbltParams, vector: np.ndarray) -> IbltSketch:
        """Inverse of :meth:`to_vector`: 1-D integers, ``vector_length`` entries in [0, p)."""
        _require_params(params)
        if not isinstance(vector, np.ndarray):
            raise TypeError(f"vector must be a numpy array, got {type(vector).__name__}")
        if vector.ndim != 1 or vector.shape[0] != params.vector_length:
            raise ValueError(
                f"vector has shape {vector.shape}; these params need ({params.vector_length},): "
                "check that every party uses the same IbltParams"
            )
        if vector.dtype.kind not in "ui":
            raise ValueError(f"vector dtype is {vector.dtype}; an integer dtype is required")
        if vector.size and (vector.min() < 0 or vector.max() >= params.modulus):
            raise ValueError(
                f"vector entries must lie in [0, p) with p={params.modulus}; got range "
                f"[{vector.min()}, {vector.max()}]"
            )
        table = vector.astype(np.uint64).reshape(params.num_cells, params.cell_width)
        return cls(params, table)

    @classmethod
    def _from_encoded(cls, params: IbltParams, enc: EncodedKeys, mult: np.ndarray) -> IbltSketch:
        rows = _cell_rows(enc, mult)
        table = np.zeros((params.num_cells, params.cell_width), dtype=np.uint64)
        zp.add_rows_to_cells(table, enc.cells, rows)
        return cls(params, table)

    def to_vector(self) -> np.ndarray:
        """The table as a flat uint64 vector of ``params.vector_length`` entries in [0, p)."""
        return self._table.reshape(-1).copy()

    # ---------------------------------------------------------------- linearity
    def _check_compatible(self, other: object) -> IbltSketch:
        if not isinstance(other, IbltSketch):
            raise TypeError(f"cannot combine IbltSketch with {type(other).__name__}")
        if other.params != self.params:
            raise ValueError(
                f"sketches have different params ({self.params} vs {other.params}); "
                "all parties must build sketches from the same IbltParams"
            )
        return other

    def __add__(self, other: object) -> IbltSketch:
        other = self._check_compatible(other)
        return IbltSketch(self.params, zp.add(self._table, other._table))

    def __radd__(self, other: object) -> IbltSketch:
        if isinstance(other, int) and other == 0:  # sum([...]) starts from 0
            return self
        return self.__add__(other)

    def __sub__(self, other: object) -> IbltSketch:
        other = self._check_compatible(other)
        return IbltSketch(self.params, zp.sub(self._table, other._table))

    def __neg__(self) -> IbltSketch:
        return IbltSketch(self.params, zp.neg(self._table))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IbltSketch):
            return NotImplemented
        return self.params == other.params and bool(np.array_equal(self._table, other._table))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        nonzero = int(np.count_nonzero(self._table[:, 0]))
        return f"IbltSketch({self.params}, nonzero_cells={nonzero})"

    # ---------------------------------------------------------------- decoding
    def decode(self) -> DecodeResult:
        """Peel the table and return the verified histogram.

        Each round takes the changed cells with count 1 (or, once those stop peeling, every cell
        with another nonzero count), divides out the count and accepts the cell as pure only if
        the payload is a valid key encoding, both BLAKE2b checks match and the key hashes back to
        that very cell; all pure cells of a round are peeled at once. At most
        ``2 * num_cells + 2`` rounds run, so decoding terminates on any input. A key seen pure
        after it was peeled, or with two different counts, marks the table inconsistent: decoding
        stops with ``complete=False`` and that key is not reported.
        """
        params = self.params
        table = self._table.copy()
        counts: dict[bytes, int] = {}
        consistent = True
        # Only cells changed by the last peel can have become pure: test those alone. Cells
        # whose count is not 1 wait until the count-1 cells stop peeling: an impure cell of two
        # count-1 keys has count 2 and payload their sum, whose half is often a well-formed
        # encoding (the average of "label-552" and "label-754" is "label-653") that costs a hash
        # to refuse. Peeling is confluent (any order of pure cells ends in the same core), so the
        # order changes the work, not the result.
        dirty = np.arange(params.num_cells)
        deferred = np.zeros(params.num_cells, dtype=bool)
        for _ in range(2 * params.num_cells + 2):
            ones = table[dirty, 0] == 1
            deferred[dirty[~ones]] = True
            found = _pure_cells(params, table, dirty[ones])
            if found is None:  # no count-1 cell peels: test the deferred cells too
                found = _pure_cells(params, table, np.flatnonzero(deferred))
                deferred[:] = False
            if found is None:
                break
            keys, cells, rows, mult = found
            # An honest sum shows each key pure with one count, and never again once peeled.
            fresh = set(keys)
            repeated = counts.keys() & fresh
            if repeated or len(fresh) != len(keys):
                consistent = False
                for key in repeated | {k for k in keys if keys.count(k) > 1}:
                    counts.pop(key, None)
                break
            counts.update(zip(keys, zp.to_signed(mult).tolist(), strict=True))
            # A pure cell holds exactly its key's contribution: subtract that row everywhere.
            dirty = zp.add_rows_to_cells(table, cells, zp.neg(rows))
        left = table.any(axis=1)
        complete = consistent and not left.any()
        try:
            decoded = dict(zip(map(bytes.decode, counts), counts.values(), strict=True))
        except UnicodeDecodeError:  # only a forged vector holds non-UTF-8 keys: drop them
            complete = False
            decoded = {}
            for key, count in counts.items():
                with contextlib.suppress(UnicodeDecodeError):
                    decoded[key.decode("utf-8")] = count
        if complete:
            return DecodeResult(decoded, True)
        r, w = params.repetitions, params.subtable_cells
        min_keys = len(counts) + 2 * int(left.reshape(r, w).sum(axis=1).max())
        return DecodeResult(decoded, False, int(left.sum()), min_keys,
                            max(float(min_keys), _estimate_keys(self._table, r, w)))

    def decode_exact(self) -> dict[str, int]:
        """The whole histogram ``{key: count}``, or :class:`DecodeFailed` (carrying the partial
        result) when the table does not peel to zero; never a partial histogram."""
        result = self.decode()
        if not result.complete:
            raise DecodeFailed(result, self.params.capacity)
        return result.counts


def _estimate_keys(table: np.ndarray, repetitions: int, subtable_cells: int) -> float:
    """Distinct keys in a summed table, from its occupied cells: n ~ -w ln(1 - occupied / w)
    (linear counting), the largest over sub-tables; with a full sub-table, the total count of
    sub-table 0 (an upper bound for positive counts) when it is plausible, else infinity."""
    w = subtable_cells
    occupied = table.any(axis=1).reshape(repetitions, w).sum(axis=1)
    if occupied.max() < w:
        return float(np.max(-w * np.log1p(-occupied / w)))
    total = sum(table[:w, 0].tolist()) % zp.MODULUS
    return float(total) if total < 1 << 40 else float("inf")


def _require_params(params: object) -> None:
    if not isinstance(params, IbltParams):
        raise TypeError(f"params must be IbltParams, got {type(params).__name__}")


def _cell_rows(enc: EncodedKeys, mult: np.ndarray) -> np.ndarray:
    """Per-key cell contribution ``mult * [1, length, chunks, check_0, check_1]`` in Z_p."""
    n = enc.payload.shape[0]
    rows = np.concatenate([np.ones((n, 1), np.uint64), enc.payload, enc.checks], axis=1)
    if np.all(mult == 1):
        return rows
    return zp.mul(rows, mult[:, None])


_SMALL_COUNT = np.uint64(32)
# An odd 64-bit multiplier: count * _FINGERPRINT[0] + check_0 (wrapping) fingerprints a row.
_FINGERPRINT = np.random.default_rng(0x1B17).integers(1, 2**63, size=1, dtype=np.uint64) | 1


def _unit_payload(payload: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """``payload / mult`` in Z_p, row-wise, in place (``payload`` is a fresh gather). A pure cell
    with count c < 32 holds c * v < p for every entry v < 2^56 (length, chunks), so exact integer
    division recovers v (a remainder marks the cell impure: its length is then made invalid);
    other counts use the inverse."""
    is_small = (mult != 1) & (mult < _SMALL_COUNT)
    small = np.flatnonzero(is_small)
    if small.size:
        # The length column first: most impure cells fail it, the others are divided in full.
        c = mult[small]
        divides = payload[small, 0] % c == 0
        payload[small[~divides], 0] = _CHUNK_LIMIT
        small, c = small[divides], c[divides, None]
        x = payload[small]
        q = x // c
        payload[small] = np.where(q * c == x, q, _CHUNK_LIMIT)
    rest = np.flatnonzero((mult != 1) & ~is_small)
    if rest.size:
        payload[rest] = zp.mul(payload[rest], zp.inverse(mult[rest])[:, None])
    return payload


def _pure_cells(params: IbltParams, table: np.ndarray, cells_to_test: np.ndarray):
    """Verified pure cells among ``cells_to_test``, one per distinct key.

    Returns ``(keys, cells, rows, mult)``: key bytes, their (k, r) cell indices, the pure cells'
    rows (count * [1, length, chunks, checks], the key's whole contribution to each of its cells)
    and their counts in Z_p; or None if no cell is pure.
    """
    m = params.num_chunks
    candidates = cells_to_test[table[cells_to_test, 0] != 0]
    if candidates.size == 0:
        return None
    mult = table[candidates, 0]
    unit = _unit_payload(table[candidates, 1 : 2 + m], mult)  # [length, chunks] / count
    # Cheap structural filter: a valid encoding has length <= max, chunks < 2^56, zero padding.
    ok = np.flatnonzero((unit[:, 0] <= np.uint64(params.max_key_bytes))
                        & np.all(unit[:, 1:] < _CHUNK_LIMIT, axis=1))
    # A key pure in several cells has identical rows there (count and checks included): look at
    # each distinct row once. Deduplicating on the decoded key (or the unit row) instead would be
    # wrong: an impure cell can decode to the average of its keys, which may be another real key
    # (e.g. the average of "label-552" and "label-754" is "label-653") and would shadow that
    # key's pure cell. Rows are told apart by their count and first check value (the average's
    # count and checks differ); a pure row that shares both with another candidate's (about
    # 2^-61) may stay undecoded: a stall, which is detected, never a wrong count.
    fingerprint = table[candidates[ok], 0] * _FINGERPRINT[0] + table[candidates[ok], -2]
    ok = ok[np.unique(fingerprint, return_index=True)[1]]
    # Zero padding: chunk j keeps its first clip(length - 7j, 0, 7) bytes, its low bytes are 0.
    length = unit[:, 0].astype(np.int64)
    kept = np.clip(length[ok, None] - CHUNK_BYTES * np.arange(m)[None, :], 0, CHUNK_BYTES)
    padding = (np.uint64(1) << (8 * (CHUNK_BYTES - kept)).astype(np.uint64)) - np.uint64(1)
    sel = ok[np.all(unit[ok, 1:] & padding == 0, axis=1)]
    if sel.size == 0:
        return None
    candidates, mult = candidates[sel], mult[sel]
    keys = keys_from_bytes(bytes_from_chunks(unit[sel, 1:]), length[sel])
    digests = digest_keys(params, keys)
    cells = cells_from_digests(params, digests)
    ok = np.flatnonzero(np.any(cells == candidates[:, None], axis=1))
    checks = checks_from_digests(digests[ok])
    ok = ok[np.all(table[candidates[ok], -2:] == zp.mul(checks, mult[ok, None]), axis=1)]
    if ok.size == 0:
        return None
    return [keys[i] for i in ok], cells[ok], table[candidates[ok]], mult[ok]
