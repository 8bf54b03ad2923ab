"""Public IBLT parameters: every party builds its sketch from the same :class:`IbltParams`."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from fractions import Fraction

from . import field

CHUNK_BYTES = 7
"""Key bytes per field element: 7 bytes = 56 bits < 61 bits, so a chunk is a field element."""

_RETRY_DOMAIN = b"gptfl-secure/iblt/retry-seed/v1"

MAX_REPETITIONS = 6
"""One 64-byte BLAKE2b digest yields 8 words: ``repetitions`` cell indices plus 2 check values."""

FIRST_MOMENT_CELLS_PER_KEY = {3: Fraction("1.53"), 4: Fraction("1.64"), 5: Fraction("1.79"),
                              6: Fraction("1.97")}
"""Cells per key of the linear term, per ``repetitions``: just above the density (r = 3: about
1.513) below which the first-moment bound of :mod:`.failure` stops converging at large n."""

SMALL_TABLE_RAMP = 12
"""Cells added to each sub-table by the linear term (at most ``capacity``): the bound converges
slowly between a few hundred and a few thousand keys."""

PAIR_MARGIN = Fraction("1.2")
"""The pair term is sized for ``max_failure / 1.2``, leaving a sixth of the budget to stopping
sets of three or more keys."""

MAX_FAILURE = 0.01
"""Default bound on one decode's failure probability at load <= capacity. Three attempts under
fresh seeds (label discovery's retries) all fail with probability <= 0.01^3 = 1e-6."""


def _root_ceil(x: Fraction, r: int) -> int:
    """Smallest integer w >= 1 with w^r >= x, in exact arithmetic (every party gets the same w)."""
    w = max(1, int(float(x) ** (1.0 / r)))
    while w**r < x:
        w += 1
    while w > 1 and (w - 1) ** r >= x:
        w -= 1
    return w


def cells_per_subtable(capacity: int, repetitions: int, max_failure: float = MAX_FAILURE) -> int:
    """Sizing rule: cells in each of the ``repetitions`` sub-tables for ``capacity`` keys, so that
    decoding any ``capacity`` or fewer keys fails with probability <= ``max_failure``.

    The larger of two terms, both in exact arithmetic:

    * pair: two keys that land in the same cell of every sub-table can never be peeled, which
      happens with probability C(n, 2) / w^r; w^r >= 1.2 * C(n, 2) / max_failure. This term
      dominates small tables;
    * linear: ``FIRST_MOMENT_CELLS_PER_KEY[r] * n / r`` cells plus ``min(n, 12)``, so that the
      first-moment bound over all stopping-set sizes converges at large n.

    The rule does not compute the bound (floating point could make two machines disagree on the
    table's size); tests/iblt/test_sizing.py checks ``failure_bound(n, w, r) <= max_failure``
    against it (proofs/iblt-sizing.md).
    """
    pairs = capacity * (capacity - 1) // 2
    pair = _root_ceil(pairs * PAIR_MARGIN / Fraction(max_failure), repetitions) if pairs else 1
    linear = math.ceil(FIRST_MOMENT_CELLS_PER_KEY[repetitions] * capacity / repetitions)
    return max(linear + min(capacity, SMALL_TABLE_RAMP), pair)


@dataclass(frozen=True)
class IbltParams:
    """Shape and hashing of an IBLT sketch, public and shared by all parties.

    Args:
        capacity: number of distinct keys the table is sized for: decoding at most ``capacity``
            keys fails with probability <= ``max_failure``.
        max_key_bytes: longest key, in bytes of UTF-8.
        seed: public seed of the keyed hashes that place keys in cells (0 <= seed < 2^64).
        repetitions: cells per key, one in each sub-table (3 to 6).
        max_failure: bound on the probability that one decode within capacity fails (a stall,
            reported as ``complete=False``, never a wrong count), in [1e-12, 0.1]. The default
            0.01 suits a caller that retries with fresh seeds (:meth:`retry_seed`); a caller that
            cannot retry lowers it.

    A cell is ``[count, length, chunk_0 .. chunk_{m-1}, check_0, check_1]``, each entry a count-
    weighted sum in Z_p. The table flattens row-major to ``vector_length`` entries.
    """

    capacity: int = 50
    max_key_bytes: int = 64
    seed: int = 0
    repetitions: int = 3
    max_failure: float = MAX_FAILURE

    def __post_init__(self) -> None:
        for name in ("capacity", "max_key_bytes", "seed", "repetitions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"IbltParams.{name} must be an int, got {type(value).__name__}")
        if self.capacity < 1:
            raise ValueError(f"capacity={self.capacity}: must be >= 1 distinct key")
        if not 1 <= self.max_key_bytes <= 4096:
            raise ValueError(
                f"max_key_bytes={self.max_key_bytes}: must be in [1, 4096]; "
                "hash longer keys to a digest before sketching them"
            )
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed={self.seed}: must be in [0, 2^64)")
        if not 3 <= self.repetitions <= MAX_REPETITIONS:
            raise ValueError(
                f"repetitions={self.repetitions}: must be in [3, {MAX_REPETITIONS}] "
                "(fewer than 3 cells per key does not peel reliably)"
            )
        if not isinstance(self.max_failure, (int, float)) or isinstance(self.max_failure, bool):
            raise TypeError(
                f"IbltParams.max_failure must be a float, got {type(self.max_failure).__name__}"
            )
        if not 1e-12 <= self.max_failure <= 0.1:
            raise ValueError(
                f"max_failure={self.max_failure}: must be in [1e-12, 0.1] (a decode that fails "
                "more often than 1 in 10 wastes more sessions than it saves bytes)"
            )

    @property
    def modulus(self) -> int:
        """The prime p of the field that every cell lives in."""
        return field.MODULUS

    @property
    def num_chunks(self) -> int:
        """Field elements that carry a key's bytes."""
        return math.ceil(self.max_key_bytes / CHUNK_BYTES)

    @property
    def cell_width(self) -> int:
        """Entries per cell: count, length, chunks, two check values."""
        return 2 + self.num_chunks + 2

    @property
    def subtable_cells(self) -> int:
        """Cells in each sub-table (see :func:`cells_per_subtable`)."""
        return cells_per_subtable(self.capacity, self.repetitions, self.max_failure)

    @property
    def num_cells(self) -> int:
        return self.repetitions * self.subtable_cells

    @property
    def vector_length(self) -> int:
        """Length of the flat vector that goes through the masked sum."""
        return self.num_cells * self.cell_width

    def with_capacity(self, capacity: int) -> IbltParams:
        """Same hashing, key size and failure bound, another capacity."""
        return replace(self, capacity=capacity)

    def with_seed(self, seed: int) -> IbltParams:
        """Same shape, another hash seed (e.g. :meth:`retry_seed`)."""
        return replace(self, seed=seed)

    def retry_seed(self, attempt: int) -> int:
        """The public hash seed of decode attempt ``attempt`` (1 = this seed), derived from this
        seed with BLAKE2b so that every party computes it and attempts hash independently."""
        if not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt={attempt!r}: must be an int >= 1")
        if attempt == 1:
            return self.seed
        data = _RETRY_DOMAIN + self.seed.to_bytes(8, "big") + attempt.to_bytes(8, "big")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
