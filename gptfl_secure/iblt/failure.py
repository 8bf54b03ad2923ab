"""An upper bound on the probability that peeling fails, for sizing the table.

Model: each of ``n`` keys lands in one uniformly random cell of each of ``r`` sub-tables of ``w``
cells, independently (keyed BLAKE2b as a random function). Peeling stops with keys left exactly
when the keys' hypergraph has a non-empty 2-core, i.e. when some non-empty set S of keys is a
*stopping set*: every cell that a key of S touches holds at least two keys of S. So

    P(fail) <= sum_{s=2..n} C(n, s) * q_s(w)^r,

the expected number of stopping sets (a first-moment bound), where q_s(w) is the probability that
``s`` given keys, thrown into the ``w`` cells of one sub-table, leave no cell with exactly one of
them. q_s(w) = N_s(w) / w^s with N_s(w) = s! [x^s] (e^x - x)^w (each cell holds 0 or >= 2 keys):

* exactly for s <= ``EXACT_SIZES`` (N_s(w) = sum_j (w)_j T(s, j), T the associated Stirling
  numbers of the second kind, blocks of size >= 2): two keys sharing all r cells (s = 2:
  C(n, 2) / w^r) is the leading term at small n;
* above, by the saddle-point inequality [x^s] f(x) <= f(x) / x^s for any x > 0 (f has
  non-negative coefficients), at an x near the saddle. Any x gives a valid bound.

The bound holds at every n, not only asymptotically. It is loose near the 2-core threshold
(r = 3: the true peeling threshold is 1.222 cells per key; this bound needs about 1.513) and
tight at small n, where the pair term dominates. It is monotone in n (C(n, s) grows), so a table
sized for ``capacity`` keys obeys it for every smaller load.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

EXACT_SIZES = 40
"""Stopping-set sizes whose no-singleton probability is computed exactly (Python integers)."""


@lru_cache(maxsize=1)
def _stirling_ge2() -> tuple[tuple[int, ...], ...]:
    """T[s][j]: partitions of s labelled items into j blocks of size >= 2, s <= EXACT_SIZES."""
    t = [[0] * (EXACT_SIZES // 2 + 1) for _ in range(EXACT_SIZES + 1)]
    t[0][0] = 1
    for s in range(2, EXACT_SIZES + 1):
        for j in range(1, s // 2 + 1):
            t[s][j] = j * t[s - 1][j] + (s - 1) * t[s - 2][j - 1]
    return tuple(tuple(row) for row in t)


def _log_no_singleton_exact(s: int, w: int) -> float:
    """log q_s(w), exact, for 2 <= s <= EXACT_SIZES."""
    t = _stirling_ge2()[s]
    total, falling = 0, 1
    for j in range(1, min(s // 2, w) + 1):
        falling *= w - j + 1
        total += falling * t[j]
    return math.log(total) - s * math.log(w)


def _log_e_minus_x(x: np.ndarray) -> np.ndarray:
    """log(e^x - x) for x > 0, accurate for small x (series below 0.01)."""
    series = x * x / 2 * (1 + x / 3 * (1 + x / 4 * (1 + x / 5 * (1 + x / 6))))
    small = np.log1p(series)
    large = np.log1p(np.expm1(np.maximum(x, 0.01)) - np.maximum(x, 0.01))
    return np.where(x < 0.01, small, large)


_X_GRID = np.exp(np.linspace(math.log(1e-4), math.log(60.0), 4000))
# s / w at the saddle of (e^x - x)^w / x^s: increasing in x, so it can be inverted by interpolation.
_LOAD_AT_X = _X_GRID * np.expm1(_X_GRID) / (np.expm1(_X_GRID) + 1 - _X_GRID)


def _log_no_singleton_saddle(s: np.ndarray, w: int, log_factorial: np.ndarray) -> np.ndarray:
    """Upper bound on log q_s(w) for an array of sizes s (any x > 0 would do; near the saddle
    is tightest)."""
    x = np.interp(s / w, _LOAD_AT_X, _X_GRID)
    bound = log_factorial[s] + w * _log_e_minus_x(x) - s * np.log(x) - s * math.log(w)
    return np.minimum(bound, 0.0)


def log_stopping_set_terms(keys: int, subtable_cells: int, repetitions: int) -> np.ndarray:
    """log E_s for s = 2..keys: the expected number of stopping sets of s keys (see module)."""
    if keys < 2:
        return np.empty(0)
    w, r = subtable_cells, repetitions
    s = np.arange(2, keys + 1)
    log_factorial = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, keys + 1)))))
    log_q = _log_no_singleton_saddle(s, w, log_factorial)
    exact = min(EXACT_SIZES, keys)
    log_q[: exact - 1] = [_log_no_singleton_exact(int(v), w) for v in range(2, exact + 1)]
    log_choose = log_factorial[keys] - log_factorial[s] - log_factorial[keys - s]
    return log_choose + r * log_q


def failure_bound(keys: int, subtable_cells: int, repetitions: int) -> float:
    """Upper bound on P(peeling ``keys`` keys fails) in ``repetitions`` sub-tables of
    ``subtable_cells`` cells: the expected number of stopping sets, capped at 1."""
    terms = log_stopping_set_terms(keys, subtable_cells, repetitions)
    if terms.size == 0:
        return 0.0
    top = float(terms.max())
    if top > 0:
        return 1.0
    return min(1.0, math.exp(top) * float(np.exp(terms - top).sum()))


def pair_term(keys: int, subtable_cells: int, repetitions: int) -> float:
    """C(n, 2) / w^r: the expected number of key pairs that share all their cells (the leading
    stopping-set term at small n)."""
    return keys * (keys - 1) / 2 / subtable_cells**repetitions
