"""Vectorised arithmetic in the prime field Z_p, p = 2^61 - 1 (a Mersenne prime).

Every IBLT cell lives in this field. Elements are numpy ``uint64`` values in [0, p). Products of
two 61-bit values need 122 bits, so :func:`mul` splits its operands into 32-bit halves and folds
with 2^61 = 1 (mod p); no Python loop touches a coordinate.
"""

from __future__ import annotations

import numpy as np

MODULUS = (1 << 61) - 1
"""p = 2^61 - 1: below the masked-sum limit of 2^62, and sums of two elements fit in uint64."""

_P = np.uint64(MODULUS)
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK29 = np.uint64((1 << 29) - 1)
_S61 = np.uint64(61)
_S32 = np.uint64(32)
_S29 = np.uint64(29)


def _fold(x: np.ndarray) -> np.ndarray:
    """Reduce values < 2^64 to [0, p) using 2^61 = 1 (mod p)."""
    x = (x & _P) + (x >> _S61)
    return np.where(x >= _P, x - _P, x)


def _fold_in_place(x: np.ndarray) -> np.ndarray:
    """:func:`_fold` without temporaries beyond one: reduces uint64 ``x`` to [0, p) in place."""
    high = x >> _S61
    np.bitwise_and(x, _P, out=x)
    np.add(x, high, out=x)
    np.subtract(x, _P, out=x, where=x >= _P)
    return x


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) mod p for arrays of field elements (broadcasting)."""
    s = np.asarray(a, dtype=np.uint64) + np.asarray(b, dtype=np.uint64)
    return np.where(s >= _P, s - _P, s)


def neg(a: np.ndarray) -> np.ndarray:
    """(-a) mod p."""
    a = np.asarray(a, dtype=np.uint64)
    return np.where(a == 0, a, _P - a)


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) mod p."""
    return add(a, neg(b))


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a * b) mod p for field elements (broadcasting), exact, in uint64 arithmetic."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    ah, al = a >> _S32, a & _MASK32  # ah < 2^29
    bh, bl = b >> _S32, b & _MASK32
    # a*b = ah*bh*2^64 + (ah*bl + al*bh)*2^32 + al*bl, and 2^64 = 8 (mod p).
    high = _fold((ah * bh) << np.uint64(3))
    mid = ah * bl + al * bh  # < 2^62
    mid = _times_2_32(mid)
    low = _fold(al * bl)
    return add(add(high, mid), low)


def from_signed(values: np.ndarray) -> np.ndarray:
    """Map int64 values (any sign) into [0, p)."""
    v = np.asarray(values, dtype=np.int64)
    return np.mod(v, np.int64(MODULUS)).astype(np.uint64)


def to_signed(values: np.ndarray) -> np.ndarray:
    """Read field elements as signed integers in (-(p-1)/2, (p-1)/2]."""
    v = np.asarray(values, dtype=np.uint64)
    half = _P >> np.uint64(1)
    return np.where(v > half, v.astype(np.int64) - np.int64(MODULUS), v.astype(np.int64))


def inverse(values: np.ndarray) -> np.ndarray:
    """Multiplicative inverses of nonzero field elements.

    Counts in an IBLT take few distinct values, so the inverses are computed once per distinct
    value with Python's exact ``pow`` and gathered back.
    """
    v = np.asarray(values, dtype=np.uint64)
    if np.any(v == 0):
        raise ZeroDivisionError("0 has no inverse in Z_p")
    uniq, pos = np.unique(v, return_inverse=True)
    inv = np.array([pow(int(x), -1, MODULUS) for x in uniq], dtype=np.uint64)
    return inv[pos].reshape(v.shape)


def _times_2_32(x: np.ndarray) -> np.ndarray:
    """(x * 2^32) mod p for any uint64 x: x = h*2^29 + l gives h*2^61 + l*2^32 = h + l*2^32."""
    return _fold((x >> _S29) + ((x & _MASK29) << _S32))


SAFE_TERMS = 7
"""A table entry plus up to 7 row values, each < p < 2^61, sum below 2^64: no uint64 overflow."""


def add_rows_to_cells(table: np.ndarray, cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """In place: for every i and j, ``table[cells[i, j]] += rows[i]`` (mod p).

    ``cells`` is (n, r): each of the n rows goes to r cells; ``rows`` is (n, width) in [0, p).
    One unbuffered ``np.add.at`` per column of ``cells`` adds the rows in uint64, which cannot
    overflow in a cell that gets at most ``SAFE_TERMS`` rows; the touched cells are then folded
    back into Z_p. The rare cells that get more are recomputed exactly on their 32-bit halves
    (:func:`_exact_cell_sums`). Returns the sorted distinct touched cells.
    """
    if cells.size == 0:
        return np.empty(0, dtype=np.int64)
    num_cells, width = table.shape
    per_cell = np.bincount(cells.ravel(), minlength=num_cells)
    touched = np.flatnonzero(per_cell)
    heavy = np.flatnonzero(per_cell > SAFE_TERMS)
    before = table[heavy]
    flat = table.reshape(-1)
    columns = np.arange(width)
    for j in range(cells.shape[1]):
        np.add.at(flat, (cells[:, j, None] * width + columns).ravel(), rows.reshape(-1))
    if 2 * touched.size > num_cells:
        _fold_in_place(table)  # contiguous passes beat a gather and a scatter
    else:
        table[touched] = _fold_in_place(table[touched])
    if heavy.size:
        table[heavy] = add(before, _exact_cell_sums(cells, rows, heavy))
    return touched


def _exact_cell_sums(cells: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sum (mod p) of the rows that ``cells`` sends to each of the sorted cells ``targets``:
    grouped by cell (sort + ``reduceat``) and summed on 32-bit halves, which cannot overflow
    below 2^32 rows per cell."""
    flat = cells.ravel()
    picked = np.flatnonzero(np.isin(flat, targets))
    order = picked[np.argsort(flat[picked], kind="stable")]
    values = rows[order // cells.shape[1]]
    sorted_cells = flat[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_cells[1:] != sorted_cells[:-1])))
    hi = np.add.reduceat(values >> _S32, starts, axis=0)
    lo = np.add.reduceat(values & _MASK32, starts, axis=0)
    return add(_times_2_32(hi), _fold(lo))
