"""Public IBLT parameters: every party builds its sketch from the same :class:`IbltParams`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import field

CHUNK_BYTES = 7
"""Key bytes per field element: 7 bytes = 56 bits < 61 bits, so a chunk is a field element."""

MAX_REPETITIONS = 6
"""One 64-byte BLAKE2b digest yields 8 words: ``repetitions`` cell indices plus 2 check values."""

# Peeling thresholds (keys per cell^-1) of random r-partite hypergraphs: a table with fewer than
# PEELING_THRESHOLD[r] * n cells fails to decode n keys with probability -> 1 as n grows.
PEELING_THRESHOLD = {3: 1.222, 4: 1.295, 5: 1.425, 6: 1.570}

PAIR_FAILURE_TARGET = 1e-4
"""Target probability that two of ``capacity`` keys share all of their cells (never peelable)."""


def cells_per_subtable(capacity: int, repetitions: int) -> int:
    """Sizing rule: cells in each of the ``repetitions`` sub-tables for ``capacity`` keys.

    Two terms, take the larger:

    * linear: 10% above the peeling threshold, plus 4 cells, so large tables peel;
    * pair: two keys that land in the same cell of every sub-table can never be peeled; that
      happens with probability C(n, 2) / w^r, so w >= (C(n, 2) / 1e-4)^(1/r). This term dominates
      small tables, which is why they need proportionally more cells.

    Measured decode success at load = capacity with the real sketch (benches/iblt_bench.py,
    README): 19999/20000 at capacity 10, 9997/10000 at 100, 1999/2000 at 1000, 300/300 at 10^4;
    every failure was a pair of keys sharing all their cells, the case the pair term budgets for.
    """
    linear = math.ceil(1.1 * PEELING_THRESHOLD[repetitions] * capacity / repetitions) + 4
    pairs = max(capacity * (capacity - 1) / 2, 1.0)
    pair = math.ceil((pairs / PAIR_FAILURE_TARGET) ** (1.0 / repetitions))
    return max(linear, pair)


@dataclass(frozen=True)
class IbltParams:
    """Shape and hashing of an IBLT sketch, public and shared by all parties.

    Args:
        capacity: number of distinct keys the table decodes with probability >= 99.9%.
        max_key_bytes: longest key, in bytes of UTF-8.
        seed: public seed of the keyed hashes that place keys in cells (0 <= seed < 2^64).
        repetitions: cells per key, one in each sub-table (3 to 6).

    A cell is ``[count, length, chunk_0 .. chunk_{m-1}, check_0, check_1]``, each entry a count-
    weighted sum in Z_p. The table flattens row-major to ``vector_length`` entries.
    """

    capacity: int = 50
    max_key_bytes: int = 64
    seed: int = 0
    repetitions: int = 3

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
        return cells_per_subtable(self.capacity, self.repetitions)

    @property
    def num_cells(self) -> int:
        return self.repetitions * self.subtable_cells

    @property
    def vector_length(self) -> int:
        """Length of the flat vector that goes through the masked sum."""
        return self.num_cells * self.cell_width

    def with_capacity(self, capacity: int) -> IbltParams:
        """Same hashing and key size, another capacity (e.g. a retry at double capacity)."""
        return IbltParams(capacity, self.max_key_bytes, self.seed, self.repetitions)
