"""How the server obtains a sum of client vectors.

An aggregator takes ``{client id: vector of ints in [0, modulus)}`` and returns the sum mod
``modulus`` with the set of client ids included in it. :class:`SecureAggregator` runs the
masked-sum protocol, so the server sees only the total; :func:`plain_sum` (``--secagg off``)
shows the server every vector and exists to measure what secure aggregation costs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..protocols import (
    MaskedSumResult,
    SecAggAbort,
    SecAggConfig,
    choose_secagg_plus_params,
    run_masked_sum,
)
from ..protocols.config import Step, element_bytes, uploads_input


@dataclass(frozen=True)
class AggregateResult:
    total: np.ndarray
    included: frozenset[int]
    session: MaskedSumResult | None = None  # transcript and stats when the protocol ran

    def upload_bytes_per_client(self, vector_length: int, modulus: int) -> int:
        """Bytes one included client sent (the largest over them); for a plain sum, the vector
        alone in the ring's element width."""
        if self.session is None:
            return vector_length * element_bytes(modulus)
        uploads = self.session.stats.client_total_upload()
        return max(uploads[c] for c in self.included)


Aggregator = Callable[..., AggregateResult]
"""``aggregate(vectors, modulus, dropouts=None) -> AggregateResult``; raises SecAggAbort when too
few clients survive."""


def plain_sum(vectors: Mapping[int, np.ndarray], modulus: int,
              dropouts: Mapping[int, str] | None = None) -> AggregateResult:
    """Sum mod ``modulus`` in the clear: the server sees each vector. Not private.

    A client in ``dropouts`` whose step is at or before ``masked_input`` never uploads and is
    left out; one that drops later has already uploaded its vector and is included.
    """
    if not vectors:
        raise ValueError("no client vectors to sum")
    dropouts = dropouts or {}
    vectors = {cid: v for cid, v in vectors.items() if uploads_input(dropouts.get(cid))}
    if not vectors:
        raise SecAggAbort(Step.MASKED_INPUT, 0, 1)
    if not 2 <= modulus <= 2**62:
        raise ValueError(f"modulus={modulus}: must be in [2, 2^62]")
    m = np.uint64(modulus)
    total = np.zeros_like(np.asarray(next(iter(vectors.values())), dtype=np.uint64))
    for vector in vectors.values():
        total = (total + np.asarray(vector, dtype=np.uint64) % m) % m
    return AggregateResult(total, frozenset(vectors))


def default_threshold(n: int) -> int:
    """t = floor(2n/3) + 1: Bonawitz et al.'s setting against an active server (Sec. 6)."""
    return min(n, 2 * n // 3 + 1)


@dataclass(frozen=True)
class SecureAggregator:
    """The masked-sum protocol as an aggregator: complete graph (``mode="full"``) or SecAgg+
    (``mode="plus"``, k and t from :func:`choose_secagg_plus_params` for the given rates)."""

    mode: str = "full"
    dropout_rate: float = 0.1
    corruption_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.mode not in ("full", "plus"):
            raise ValueError(f"secure aggregation mode {self.mode!r}: 'full' or 'plus'")

    def config(self, n: int, d: int, modulus: int) -> SecAggConfig:
        if self.mode == "plus" and n > 2:
            k, t = choose_secagg_plus_params(n, self.dropout_rate, self.corruption_rate)
            if k < n - 1:
                return SecAggConfig(n, t, d, modulus, neighbors=k)
        return SecAggConfig(n, default_threshold(n), d, modulus)

    def __call__(self, vectors: Mapping[int, np.ndarray], modulus: int,
                 dropouts: Mapping[int, str] | None = None) -> AggregateResult:
        if not vectors:
            raise ValueError("no client vectors to sum")
        d = len(next(iter(vectors.values())))
        result = run_masked_sum(self.config(len(vectors), d, modulus), vectors, dropouts)
        return AggregateResult(result.total, result.included, result)


def make_aggregator(mode: str, dropout_rate: float = 0.1) -> Aggregator:
    """``--secagg full|plus|off``; ``dropout_rate`` sizes the SecAgg+ neighbourhoods."""
    if mode == "off":
        return plain_sum
    return SecureAggregator(mode, dropout_rate=dropout_rate)
