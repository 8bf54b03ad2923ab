"""Choosing SecAgg+ parameters (k neighbours, threshold t) for a population (Bell et al. 2020)."""

from __future__ import annotations

import math


def _binomial_tail_at_least(k: int, p: float, t: int) -> float:
    """P[Binomial(k, p) >= t]."""
    return sum(math.comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(t, k + 1))


def choose_secagg_plus_params(
    n: int,
    dropout_rate: float,
    corruption_rate: float,
    *,
    security_bits: int = 40,
    failure_bits: int = 20,
) -> tuple[int, int]:
    """The smallest even k, and a threshold t, meeting the security and failure targets.

    With each client dropping independently with probability ``dropout_rate`` and corrupted
    (colluding with the server) with probability ``corruption_rate``:

    * security: no client has c >= 2t - (k + 1) corrupted members among its k neighbours
      (n * P[Bin(k, corruption) >= 2t - k - 1] <= 2^-security/2). That bound is stricter than
      c < t: with c colluders, a server could otherwise show two sets of t group members
      different survivor sets and collect both of one client's shares. And the ring of honest
      survivors must not split, which needs k/2 consecutive removed clients
      (n * (dropout + corruption)^(k/2) <= 2^-security/2). t always exceeds (k + 1) / 2;
    * correctness: every client keeps >= t live members among its k neighbours, enough to
      rebuild its secrets even when it dropped itself (n * P[Bin(k, 1 - dropout) < t]
      <= 2^-failure).

    Union bounds throughout, so the targets are met conservatively. Returns (k, t) with
    k = n - 1 rounded up to even (the complete graph) when no smaller k works.
    """
    if n < 2:
        raise ValueError(f"n={n}: SecAgg+ needs at least 2 clients")
    for name, rate in (("dropout_rate", dropout_rate), ("corruption_rate", corruption_rate)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name}={rate}: must be in [0, 1)")
    if dropout_rate + corruption_rate >= 1.0:
        raise ValueError("dropout_rate + corruption_rate must be < 1")
    sec, fail = 2.0 ** -(security_bits + 1), 2.0**-failure_bits
    removed = dropout_rate + corruption_rate
    for k in range(2, n + 1, 2):
        if n * removed ** (k // 2) > sec:
            continue
        for t in range(k // 2 + 1, k + 1):
            secure = n * _binomial_tail_at_least(k, corruption_rate, 2 * t - k - 1) <= sec
            live_ok = n * (1 - _binomial_tail_at_least(k, 1 - dropout_rate, t)) <= fail
            if secure and live_ok:
                return k, t
    k = n if n % 2 == 0 else n + 1
    return k, min(k, 2 * k // 3 + 1)


def secagg_plus_is_secure(n: int, k: int, t: int, corruption_rate: float,
                          security_bits: int = 40) -> bool:
    """The security half of :func:`choose_secagg_plus_params`' target for a proposed (k, t):
    the chance that some client has >= 2t - k - 1 colluders among its k neighbours, or that k/2
    consecutive colluders split the ring, is at most 2^-security (union bounds). Dropouts only
    add to the split term; a client checks the part that depends on colluders alone."""
    if not (2 <= k and k % 2 == 0 and (k + 1) // 2 < t <= k):
        return False
    sec = 2.0 ** -(security_bits + 1)
    if n * corruption_rate ** (k // 2) > sec:
        return False
    return n * _binomial_tail_at_least(k, corruption_rate, 2 * t - k - 1) <= sec
