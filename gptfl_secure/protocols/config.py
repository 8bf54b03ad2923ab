"""Public parameters of one masked-sum session, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Step(StrEnum):
    """A round of the protocol (Bonawitz et al. 2017, Fig. 4). A ``str`` (``StrEnum``: a
    ``str, Enum``) whose value is the round's name, as transcripts, records and the Flower wire
    spell it, so ``Step.SHARE_KEYS == "share_keys"`` and ``str``/``format`` give the bare name."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASKING = "unmasking"


class SessionEnd(StrEnum):
    """Where a party stands once it runs no more rounds of a session."""

    DONE = "done"
    ABORTED = "aborted"


Position = Step | SessionEnd
"""A party's position in a session: the round it runs next, or how the session ended."""

STEPS: tuple[Step, ...] = tuple(Step)
"""The protocol's rounds, in order."""

MAX_MODULUS = 2**62


def element_bytes(modulus: int) -> int:
    """Bytes per vector entry on the wire for a modulus q: 4 when q <= 2^32, else 8."""
    return 4 if modulus <= 2**32 else 8


def uploads_input(silent_from: str | None) -> bool:
    """Whether a client that goes silent from step ``silent_from`` (None: never) has sent its
    masked input: only a client silent from a step after ``masked_input`` has."""
    return silent_from is None or STEPS.index(silent_from) > STEPS.index(Step.MASKED_INPUT)


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters every party agrees on.

    Args:
        num_clients: n, the number of enrolled clients.
        threshold: t. With ``neighbors=None`` (every pair shares masks, Bonawitz et al. 2017) each
            secret is shared t-out-of-n and every step needs >= t live clients. With
            ``neighbors=k`` (SecAgg+, Bell et al. 2020) each client shares with its k neighbours of
            a random k-regular graph, t-out-of-(k+1) counting itself, and t <= k. Either way t
            must exceed half the group (n, or k + 1): otherwise a malicious server could show two
            halves of a group different survivor sets, pass both consistency checks, and collect
            both shares of one client (tests/protocols/test_adversarial_server.py).
        vector_length: d, entries per input vector.
        modulus: q in [2, 2^62]; inputs and the sum live in Z_q.
        neighbors: None for the complete graph, or an even k >= 2 for SecAgg+.
    """

    num_clients: int
    threshold: int
    vector_length: int
    modulus: int = 2**32
    neighbors: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_clients", "threshold", "vector_length", "modulus"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"SecAggConfig.{name} must be an int, got {type(value).__name__}")
        n, t = self.num_clients, self.threshold
        if n < 1:
            raise ValueError(f"num_clients={n}: must be >= 1")
        if not 2 <= self.modulus <= MAX_MODULUS:
            raise ValueError(f"modulus={self.modulus}: must be in [2, 2^62]")
        if self.vector_length < 1:
            raise ValueError(f"vector_length={self.vector_length}: must be >= 1")
        if self.neighbors is None:
            group, limit = n, n
        else:
            k = self.neighbors
            if not isinstance(k, int) or isinstance(k, bool) or k < 2 or k % 2:
                raise ValueError(f"neighbors={k}: SecAgg+ needs an even number of neighbours >= 2")
            group, limit = k + 1, k
        low = group // 2 + 1
        if not low <= t <= limit:
            raise ValueError(
                f"threshold={t}: must be in [{low}, {limit}], more than half of the group of "
                f"{group}, so that no two disjoint sets of t clients can be shown different "
                "survivor sets (raise the threshold)"
            )

    @property
    def element_bytes(self) -> int:
        """Bytes per vector entry on the wire: 4 when q <= 2^32, else 8."""
        return element_bytes(self.modulus)
