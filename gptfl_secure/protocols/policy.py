"""What a client trusts, fixed before any server message: its enrolled group and the weakest
session parameters it will accept.

The server proposes each session's :class:`SecAggConfig` and its group (the cohort's enrolled ids
and identity keys). A client never takes those on trust: :meth:`ClientPolicy.check` refuses, with a
:class:`PolicyViolation`, a group that names keys the client did not enrol, a group size that is not
the config's, a threshold that the client's own rule forbids, or a SecAgg+ neighbourhood too small
for its collusion assumption. :class:`SessionLedger` refuses a session id the client has started
before, so a server cannot run one client twice under one id.

Reveals nothing: a refusal happens before the client creates any key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from .config import SecAggConfig
from .errors import ProtocolViolation
from .secagg_plus import secagg_plus_is_secure

CONFIGURE = "configure"
"""The pseudo-step a :class:`PolicyViolation` names: the client refused before advertise_keys."""


class PolicyViolation(ProtocolViolation):
    """The server proposed a session that the client's own policy forbids; nothing was sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(CONFIGURE, "server", reason)


def majority_threshold(group: int, colluders: int = 0) -> int:
    """The least t with 2t - group > colluders: no two t-subsets of the group that share only
    colluders can exist, so a server cannot show two honest halves different survivor sets."""
    return (group + colluders) // 2 + 1


@dataclass(frozen=True)
class ClientPolicy:
    """A client's own rules for joining a masked-sum session.

    Args:
        trusted_keys: the enrolled registry, client id -> Ed25519 public key, obtained out of band
            (never from the server). A session's group must be a subset of it.
        min_clients: the smallest session group the client joins. A group of 1 is its input in
            the clear; with the default 2 a server may run a cohort of two (it learns their sum,
            and a colluding partner learns the other's input): raise it to what the deployment's
            cohorts are.
        max_colluders: T, how many clients of one group (all n clients, or a SecAgg+
            neighbourhood of k + 1) the client assumes may collude with the server; the threshold
            must satisfy 2t - group > T.
        min_threshold_fraction: an extra floor, t >= ceil(fraction * group).
        allow_secagg_plus: whether a sparse SecAgg+ graph is acceptable at all.
        corruption_rate: the rate of colluding clients assumed for SecAgg+; a proposed (k, t) must
            meet ``secagg_plus_is_secure`` at this rate and ``security_bits``. The default 0
            (like ``max_colluders=0``) assumes none and enforces the majority rule alone.
        security_bits: SecAgg+'s per-graph security target.
    """

    trusted_keys: Mapping[int, bytes]
    min_clients: int = 2
    max_colluders: int = 0
    min_threshold_fraction: float = 0.0
    allow_secagg_plus: bool = True
    corruption_rate: float = 0.0
    security_bits: int = 40

    def __post_init__(self) -> None:
        keys = dict(self.trusted_keys)
        for cid, key in keys.items():
            if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid < 2**32 - 1:
                raise ValueError(f"trusted client id {cid!r}: must be an int in [0, 2^32 - 1)")
            if not isinstance(key, bytes) or len(key) != 32:
                raise ValueError(f"trusted key of client {cid}: must be 32 bytes (Ed25519)")
        object.__setattr__(self, "trusted_keys", keys)
        if not isinstance(self.min_clients, int) or self.min_clients < 1:
            raise ValueError(f"min_clients={self.min_clients!r}: must be an int >= 1")
        if not isinstance(self.max_colluders, int) or self.max_colluders < 0:
            raise ValueError(f"max_colluders={self.max_colluders!r}: must be an int >= 0")
        if not 0.0 <= self.min_threshold_fraction <= 1.0:
            raise ValueError(f"min_threshold_fraction={self.min_threshold_fraction!r}: must be "
                             "in [0, 1]")
        if not 0.0 <= self.corruption_rate < 1.0:
            raise ValueError(f"corruption_rate={self.corruption_rate!r}: must be in [0, 1)")

    def min_threshold(self, group: int) -> int:
        """The least threshold this policy accepts for a group of ``group`` parties (all n
        clients, or a SecAgg+ neighbourhood of k + 1): 2t - group > max_colluders and
        t >= ceil(fraction * group), the fraction taken as the decimal it was written as
        (0.55 * 100 asks for 55, not for the 56 that float rounding would give)."""
        fraction = Fraction(repr(float(self.min_threshold_fraction)))
        return max(majority_threshold(group, self.max_colluders), math.ceil(fraction * group))

    def _rule(self, group: int) -> str:
        rule = f"2t - {group} > {self.max_colluders} colluders"
        if self.min_threshold_fraction > 0:
            rule += f", t >= {self.min_threshold_fraction:g} x {group}"
        return rule

    def check(self, cfg: SecAggConfig, client_id: int, session_keys: Mapping[int, bytes]) -> None:
        """Refuse (PolicyViolation) any session this policy forbids; return None otherwise."""
        if not isinstance(cfg, SecAggConfig):
            raise PolicyViolation(f"session parameters must be a SecAggConfig, got "
                                  f"{type(cfg).__name__}")
        if not isinstance(session_keys, Mapping):
            raise PolicyViolation("the session group must map client id -> identity key")
        if client_id not in session_keys:
            raise PolicyViolation(f"the session group leaves out this client ({client_id})")
        for cid, key in session_keys.items():
            if self.trusted_keys.get(cid) != key:
                raise PolicyViolation(f"client {cid} in the session group is not enrolled with "
                                      "that identity key: only the trusted registry counts")
        n = len(session_keys)
        if cfg.num_clients != n:
            raise PolicyViolation(f"num_clients={cfg.num_clients} but the session group has {n} "
                                  "clients")
        if n < self.min_clients:
            raise PolicyViolation(f"a group of {n} is below this client's minimum of "
                                  f"{self.min_clients}")
        if cfg.neighbors is None or cfg.neighbors >= n - 1:
            low = self.min_threshold(n)
            if cfg.threshold < low:
                raise PolicyViolation(f"threshold {cfg.threshold} of {n}: this client requires "
                                      f"t >= {low} ({self._rule(n)})")
            return
        if not self.allow_secagg_plus:
            raise PolicyViolation("this client accepts only the complete graph, not SecAgg+")
        k, t = cfg.neighbors, cfg.threshold
        low = self.min_threshold(k + 1)
        if t < low:
            raise PolicyViolation(f"SecAgg+ threshold {t} of k+1={k + 1}: this client requires "
                                  f"t >= {low} ({self._rule(k + 1)})")
        if not secagg_plus_is_secure(n, k, t, self.corruption_rate, self.security_bits):
            raise PolicyViolation(
                f"SecAgg+ with k={k}, t={t} over {n} clients misses this client's target of "
                f"2^-{self.security_bits} at corruption rate {self.corruption_rate:g}: raise k "
                "or t")


@dataclass
class SessionLedger:
    """The session ids a client has started. A client runs each session id at most once: a
    server that starts a second session under a used id is refused before any key is made.

    Keep one ledger per client identity for as long as the identity lives (the in-process
    runner: per run; Flower: in the node's Context.state)."""

    started: set[bytes] = field(default_factory=set)

    def claim(self, session_id: bytes) -> None:
        if session_id in self.started:
            raise PolicyViolation(f"session id {session_id.hex()[:16]}... was used before: a "
                                  "client joins each session id once")
        self.started.add(bytes(session_id))

    @classmethod
    def of(cls, ids: Iterable[bytes]) -> SessionLedger:
        return cls({bytes(i) for i in ids})
