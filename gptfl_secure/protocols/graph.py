"""Who shares masks and secrets with whom: the complete graph, or SecAgg+'s k-regular graph.

The SecAgg+ graph (Bell et al. 2020, Sec. 3) is a Harary graph over the *enrolled* clients:
they are placed on a ring in an order fixed by a hash of the session id and the enrolled ids,
and each is joined to the k/2 nearest on either side. Every party derives the same graph from
values it already holds; a client computes only its own neighbourhood (O(n) hashing, O(k)
result). The graph must not depend on U1: U1 reaches each client in a message from the server,
and a server free to tailor it could surround a client with colluders
(test_server_cannot_surround_a_client_with_colluders_by_tailoring_u1). The server still picks
the session id and can try several graphs; the 2^-40 target of ``choose_secagg_plus_params``
is per graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def public_seed(session_id: bytes, members: Iterable[int]) -> bytes:
    """Hash of the session id and the sorted member ids: the graph's public randomness."""
    h = hashlib.sha256(b"gptfl-secure/secagg/v1/graph" + session_id)
    h.update(b"".join(m.to_bytes(4, "big") for m in sorted(members)))
    return h.digest()


def _ring(members: list[int], seed: bytes) -> list[int]:
    return sorted(members, key=lambda m: hashlib.sha256(seed + m.to_bytes(4, "big")).digest())


def neighbours_of(member: int, members: Iterable[int], k: int | None,
                  seed: bytes) -> frozenset[int]:
    """``member``'s neighbours (never itself). ``k=None`` or k >= len - 1: everyone else."""
    members = sorted(members)
    if k is None or k >= len(members) - 1:
        return frozenset(members) - {member}
    ring = _ring(members, seed)
    i, n, half = ring.index(member), len(ring), k // 2
    return frozenset(ring[(i + s) % n] for s in range(-half, half + 1) if s != 0)


def neighbours(
    members: Iterable[int], k: int | None, seed: bytes
) -> dict[int, frozenset[int]]:
    """Every member's neighbours (the server's view). Symmetric; k-regular for k < len - 1."""
    members = sorted(members)
    if k is None or k >= len(members) - 1:
        everyone = frozenset(members)
        return {m: everyone - {m} for m in members}
    ring = _ring(members, seed)
    n, half = len(ring), k // 2
    return {
        ring[i]: frozenset(ring[(i + s) % n] for s in range(-half, half + 1) if s != 0)
        for i in range(n)
    }
