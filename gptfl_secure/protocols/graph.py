"""Who shares masks and secrets with whom: the complete graph, or SecAgg+'s k-regular graph.

The SecAgg+ graph (Bell et al. 2020, Sec. 3) is a Harary graph: the clients that advertised keys
are placed on a ring in an order fixed by public randomness (a hash of the session id and of
every advertised key, so neither the server nor one client chooses it alone), and each is joined
to the k/2 nearest on either side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def public_seed(session_id: bytes, advertised: Mapping[int, bytes]) -> bytes:
    """Hash of the session id and of each advertised client's public keys, in id order."""
    h = hashlib.sha256(b"gptfl-secure/secagg/v1/graph" + session_id)
    for cid in sorted(advertised):
        h.update(cid.to_bytes(4, "big") + advertised[cid])
    return h.digest()


def neighbours(
    members: Iterable[int], k: int | None, seed: bytes
) -> dict[int, frozenset[int]]:
    """Each member's neighbours (never itself). ``k=None`` or k >= len - 1: everyone else."""
    members = sorted(members)
    if k is None or k >= len(members) - 1:
        everyone = frozenset(members)
        return {m: everyone - {m} for m in members}
    ring = sorted(members, key=lambda m: hashlib.sha256(seed + m.to_bytes(4, "big")).digest())
    n, half = len(ring), k // 2
    return {
        ring[i]: frozenset(ring[(i + s) % n] for s in range(-half, half + 1) if s != 0)
        for i in range(n)
    }
