"""The public seed streams of a run: every non-secret random draw of round r comes from
``np.random.default_rng([seed, r, STREAM, ...])``, so a round replays identically (``--resume``)
and the Flower apps draw exactly what the in-process rounds draw.

None of these is secret: the protocol's keys and masks, and DP noise, never come from here.
"""

from __future__ import annotations

import numpy as np

# stream labels for np.random.default_rng([seed, round, STREAM, ...])
SAMPLING, DROPOUT, TRAINING, ROUNDING = 1, 2, 3, 4


def sampling_rng(seed: int, r: int) -> np.random.Generator:
    """Round ``r``'s cohort sampling."""
    return np.random.default_rng([seed, r, SAMPLING])


def dropout_rng(seed: int, r: int) -> np.random.Generator:
    """Round ``r``'s simulated dropouts."""
    return np.random.default_rng([seed, r, DROPOUT])


def rounding_rng(seed: int, r: int, client: int) -> np.random.Generator:
    """Client ``client``'s stochastic rounding in round ``r`` (the codec without DP)."""
    return np.random.default_rng([seed, r, ROUNDING, client])


def training_seed(seed: int, r: int, client: int) -> int:
    """Client ``client``'s torch seed for local training in round ``r``."""
    return derive_seed(seed, r, TRAINING, client)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed for torch from integer parts."""
    return int(np.random.default_rng(list(parts)).integers(0, 2**63 - 1))
