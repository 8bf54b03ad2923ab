"""How a round's cohort is drawn (``--client-sampling``), public and fixed for the whole run.

* ``fixed``: exactly ``cohort`` of the ``clients`` ids, uniformly without replacement.
* ``poisson``: every client independently with probability q = cohort/clients; the cohort size m
  varies. A round with m < ``min_size`` (the smallest group a client joins a masked sum with,
  :class:`~gptfl_secure.protocols.policy.ClientPolicy`'s default 2) or m > ``cap`` is skipped
  before any client trains. ``cap`` is the smallest k with P(Binomial(clients, q) > k) <=
  ``CAP_TAIL``: the ring (quantization level bits, the DP modulus) is sized for ``cap`` clients,
  so a sum of any cohort that runs cannot wrap for want of bits.

The skip costs no privacy: whether a round is skipped depends on m alone, and under the
replace-one relation that the accountant uses m has the same distribution for neighbouring
data sets (proofs/dp-guarantees.md). It costs utility with probability <= ``CAP_TAIL`` per round
above the cap, and P(m < ``min_size``) below it (both in :meth:`CohortSampling.skip_probability`).

``auto`` (the default) is ``poisson`` under distributed DP (``--dp-noise-multiplier``) and
``fixed`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..learning.partition import poisson_sample_clients, sample_clients
from .config import RunConfig
from .seeds import sampling_rng

SAMPLING_MODES = ("fixed", "poisson")
MIN_POISSON_COHORT = 2
CAP_TAIL = 1e-6


class CohortOutOfRange(Exception):
    """A Poisson cohort outside [min_size, cap]: the round is skipped before it starts."""

    partial = None  # what :func:`~.rounds.skip_round` reads from an aborted session

    def __init__(self, size: int, min_size: int, cap: int) -> None:
        self.size, self.min_size, self.cap = size, min_size, cap
        side = (f"below the minimum group of {min_size}" if size < min_size
                else f"above the public cap of {cap} the ring is sized for")
        super().__init__(f"Poisson cohort of {size} clients is {side}: round skipped")


def poisson_cohort_cap(clients: int, rate: float, tail: float = CAP_TAIL) -> int:
    """The smallest k with P(Binomial(clients, rate) > k) <= tail."""
    from scipy import stats  # here, not at import: a node that trains needs no scipy
    if not 0 < tail < 1:
        raise ValueError(f"tail={tail}: must be in (0, 1)")
    k = int(stats.binom.isf(tail, clients, rate))
    while k < clients and stats.binom.sf(k, clients, rate) > tail:
        k += 1
    while k > 0 and stats.binom.sf(k - 1, clients, rate) <= tail:
        k -= 1
    return min(max(k, 0), clients)


@dataclass(frozen=True)
class CohortSampling:
    """The run's cohort sampler; every party that needs the cohort bound reads ``cap`` here.

    Args:
        clients: N, the population.
        cohort: n, the cohort (fixed) or its expectation (poisson: q = n/N).
        mode: 'fixed' or 'poisson'.
    """

    clients: int
    cohort: int
    mode: str = "fixed"

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"client sampling {self.mode!r}: one of {SAMPLING_MODES}")
        if not 1 <= self.cohort <= self.clients:
            raise ValueError(f"cohort={self.cohort}: must be in [1, clients={self.clients}]")

    @property
    def rate(self) -> float:
        """q = cohort/clients."""
        return self.cohort / self.clients

    @property
    def min_size(self) -> int:
        return 1 if self.mode == "fixed" else MIN_POISSON_COHORT

    @property
    def cap(self) -> int:
        """The most clients a round may sum (sizes the ring): the cohort, or the Poisson cap."""
        if self.mode == "fixed":
            return self.cohort
        return max(self.cohort, poisson_cohort_cap(self.clients, self.rate))

    def skip_probability(self) -> float:
        """P(a round is skipped for its cohort size): 0 for fixed sampling."""
        from scipy import stats  # here, not at import: a node that trains needs no scipy
        if self.mode == "fixed":
            return 0.0
        dist = stats.binom(self.clients, self.rate)
        return float(dist.cdf(self.min_size - 1) + dist.sf(self.cap))

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, CohortOutOfRange | None]:
        """The cohort (sorted ids) and, when it is out of range, why the round is skipped."""
        if self.mode == "fixed":
            return sample_clients(self.clients, self.cohort, rng), None
        ids = poisson_sample_clients(self.clients, self.rate, rng)
        if not self.min_size <= len(ids) <= self.cap:
            return ids, CohortOutOfRange(len(ids), self.min_size, self.cap)
        return ids, None

    def round_cohort(self, seed: int, r: int) -> tuple[np.ndarray, CohortOutOfRange | None]:
        """Round ``r``'s cohort, drawn from the run's public stream
        :func:`~.seeds.sampling_rng` (seed, r): the same on every replay."""
        return self.sample(sampling_rng(seed, r))


def cohort_sampling(config: RunConfig) -> CohortSampling:
    """The sampler of ``config`` (``--client-sampling``, with ``auto`` resolved)."""
    return CohortSampling(config.clients, config.cohort, config.effective_client_sampling)
