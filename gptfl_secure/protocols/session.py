"""One session of the masked-sum protocol, whatever carries the bytes.

:func:`run_session` drives a :class:`SecAggServer` through the five rounds; a transport supplies
``exchange(step, messages)``, which delivers the server's messages of a round to their clients
and returns the replies that arrived. The in-process runner (:func:`run_masked_sum`) and the
Flower ServerApp both drive their sessions through it, so both return the same complete
:class:`MaskedSumResult` (total, included clients, transcript, stats, session id, identity keys,
config) and both attach the partial record to a :class:`SecAggAbort`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .config import STEPS, SecAggConfig, Step
from .errors import SecAggAbort
from .server import SecAggServer, TranscriptEntry

Exchange = Callable[[Step, Mapping[int, bytes] | None], Mapping[int, bytes]]
"""``exchange(step, messages)``: deliver ``messages`` ({client id: bytes}; None at the first
round, which the transport opens itself) and return {client id: reply} for the replies that
arrived. A client that does not answer is a dropout."""


def _per_client_totals(per_step: Mapping[Step, Mapping[int, float]]) -> dict[int, float]:
    out: dict[int, float] = defaultdict(float)
    for per_client in per_step.values():
        for cid, value in per_client.items():
            out[cid] += value
    return dict(out)


@dataclass
class SessionStats:
    """Seconds and bytes per party and per round.

    ``client_seconds[step][cid]`` and ``client_upload_bytes[step][cid]`` for each client that
    spoke at ``step``; ``server_seconds[step]``; ``server_download_bytes[step]`` sent to clients.
    """

    client_seconds: dict[Step, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    client_upload_bytes: dict[Step, dict[int, int]] = field(
        default_factory=lambda: defaultdict(dict))
    server_seconds: dict[Step, float] = field(default_factory=dict)
    server_download_bytes: dict[Step, int] = field(default_factory=dict)
    client_aborts: dict[int, str] = field(default_factory=dict)
    server_rejected: dict[int, str] = field(default_factory=dict)

    def client_total_seconds(self) -> dict[int, float]:
        return _per_client_totals(self.client_seconds)

    def client_total_upload(self) -> dict[int, int]:
        return {cid: int(b) for cid, b in _per_client_totals(self.client_upload_bytes).items()}


@dataclass(frozen=True)
class MaskedSumResult:
    """``total`` over ``included``; ``transcript``: every client message the server received;
    ``session_id`` and the enrolled ``identity_keys`` (Ed25519 public keys by client id) are
    what an auditor needs to check the transcript without any client secret."""

    total: np.ndarray
    included: frozenset[int]
    transcript: tuple[TranscriptEntry, ...]
    stats: SessionStats
    session_id: bytes = b""
    identity_keys: Mapping[int, bytes] = field(default_factory=dict)
    config: SecAggConfig | None = None
    abort_reason: str | None = None  # set on the partial record of an aborted session

    @classmethod
    def aborted(cls, abort: SecAggAbort, server: SecAggServer, stats: SessionStats,
                identity_keys: Mapping[int, bytes]) -> MaskedSumResult:
        """The record of a session that ended in ``abort``: no total, nobody included, the
        transcript up to the abort and why it ended."""
        return cls(np.zeros(0, dtype=np.uint64), frozenset(), tuple(server.transcript), stats,
                   server.session_id, dict(identity_keys), server.cfg, str(abort))


class SessionSteps:
    """A session driven one round at a time, for transports that interleave several sessions
    (the Flower ServerApp sends round r+1's first rounds with round r's last ones).

    ``step`` is the round to run next (None once the session has ended), ``outgoing`` the
    server's messages for it ({client id: bytes}; None at the first round, which the transport
    opens itself). :meth:`receive` runs the round on the replies that arrived; it raises
    :class:`SecAggAbort` with ``partial`` set, as :func:`run_session` does, and the abort is
    also kept in ``abort``. ``result`` is the complete result once the last round has run."""

    def __init__(self, server: SecAggServer, identity_keys: Mapping[int, bytes],
                 stats: SessionStats | None = None) -> None:
        self.server, self.identity_keys = server, dict(identity_keys)
        self.stats = stats if stats is not None else SessionStats()
        self.step: Step | None = STEPS[0]
        self.outgoing: Mapping[int, bytes] | None = None
        self.abort: SecAggAbort | None = None
        self.result: MaskedSumResult | None = None

    def receive(self, replies: Mapping[int, bytes]) -> None:
        """Run round ``step`` on ``replies`` and move to the next round."""
        step = self.step
        if step is None:
            raise RuntimeError("the session has ended: no round left to receive")
        stats, server = self.stats, self.server
        try:
            start = time.perf_counter()
            outgoing = server.receive(step, replies)
            stats.server_seconds[step] = time.perf_counter() - start
        except SecAggAbort as abort:  # the record shares ``stats``, which ``finally`` completes
            abort.partial = MaskedSumResult.aborted(abort, server, stats, self.identity_keys)
            self.step, self.abort = None, abort
            raise
        finally:
            stats.server_rejected.update(server.rejected)
        if step is Step.UNMASKING:
            self.step, self.outgoing = None, None
            self.result = MaskedSumResult(outgoing.total, outgoing.included, outgoing.transcript,
                                          stats, server.session_id, self.identity_keys,
                                          server.cfg)
            return
        stats.server_download_bytes[step] = sum(len(b) for b in outgoing.values())
        self.step, self.outgoing = STEPS[STEPS.index(step) + 1], outgoing


def run_session(server: SecAggServer, identity_keys: Mapping[int, bytes], exchange: Exchange,
                stats: SessionStats | None = None) -> MaskedSumResult:
    """Run ``server``'s session over ``exchange`` to its end: the complete result, or
    :class:`SecAggAbort` with ``partial`` set to the record up to the abort. ``stats`` (the
    transport fills in the clients' part) gets the server's seconds, download bytes and
    rejections."""
    session = SessionSteps(server, identity_keys, stats)
    while session.step is not None:
        session.receive(exchange(session.step, session.outgoing))
    return session.result
