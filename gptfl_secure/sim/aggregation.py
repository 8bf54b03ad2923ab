"""How the server obtains a sum of client vectors.

An aggregator takes ``{client id: vector of ints in [0, modulus)}`` and returns the sum mod
``modulus`` together with the set of client ids included in it. ``plain_sum`` shows the server
every vector (for measuring the cost of secure aggregation); the masked-sum protocol shows it
only the total.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AggregateResult:
    total: np.ndarray
    included: frozenset[int]


Aggregator = Callable[[Mapping[int, np.ndarray], int], AggregateResult]


def plain_sum(vectors: Mapping[int, np.ndarray], modulus: int) -> AggregateResult:
    """Sum mod ``modulus`` in the clear: the server sees each vector. Not private."""
    if not vectors:
        raise ValueError("no client vectors to sum")
    if modulus > 2**62:
        raise ValueError(f"modulus={modulus}: must be <= 2^62 so that two residues add in uint64")
    m = np.uint64(modulus)
    total = None
    for vector in vectors.values():
        v = np.asarray(vector, dtype=np.uint64)
        total = v % m if total is None else (total + v) % m
    return AggregateResult(total, frozenset(vectors))
