"""In-process driver: enrolls clients, runs one session of the masked-sum protocol with scripted
dropouts, and measures seconds and bytes per party and per round.

The runner only moves bytes between :class:`SecAggClient` and :class:`SecAggServer`, through the
session driver :func:`~gptfl_secure.protocols.session.run_session`, which any other transport
(Flower) shares.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

import numpy as np

from . import crypto
from .client import SecAggClient
from .config import STEPS, SecAggConfig, Step
from .errors import ProtocolViolation
from .policy import ClientPolicy
from .server import SecAggServer
from .session import MaskedSumResult, SessionStats, run_session

__all__ = ["MaskedSumResult", "SessionStats", "Tamper", "run_masked_sum", "session_id_for",
           "validate_inputs"]


def session_id_for(seed: int | None) -> bytes:
    """A public session id: fresh random bytes, or derived from ``seed`` for reproducible runs.
    The seed fixes nothing secret: keys, self-mask seeds and Shamir coefficients always come
    from the OS CSPRNG."""
    if seed is None:
        return crypto.random_bytes(32)
    return hashlib.sha256(b"gptfl-secure/session/" + str(seed).encode()).digest()


def validate_inputs(cfg: SecAggConfig, inputs: Mapping[int, np.ndarray],
                    dropouts: Mapping[int, str]) -> None:
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must map client id -> vector, got {type(inputs).__name__}")
    if len(inputs) != cfg.num_clients:
        raise ValueError(f"{len(inputs)} inputs for num_clients={cfg.num_clients}: give one "
                         "vector per enrolled client")
    for cid, x in inputs.items():
        if not isinstance(cid, int) or not 0 <= cid < 2**32 - 1:
            raise ValueError(f"client id {cid!r}: must be an int in [0, 2^32 - 1)")
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "ui":
            raise TypeError(f"input of client {cid} must be an integer numpy array")
        if x.shape != (cfg.vector_length,):
            raise ValueError(f"input of client {cid} has shape {x.shape}; vector_length="
                             f"{cfg.vector_length}")
        if x.size and (int(x.min()) < 0 or int(x.max()) >= cfg.modulus):
            raise ValueError(f"input of client {cid} has entries outside [0, {cfg.modulus})")
    for cid, step in dropouts.items():
        if cid not in inputs:
            raise ValueError(f"dropout for unknown client {cid}")
        if step not in STEPS:
            raise ValueError(f"dropout step {step!r} for client {cid}: one of {', '.join(STEPS)}")


Tamper = Callable[[str, int, bytes], bytes | None]


def run_masked_sum(cfg: SecAggConfig, inputs: Mapping[int, np.ndarray],
                   dropouts: Mapping[int, str] | None = None,
                   seed: int | None = None, *, tamper: Tamper | None = None,
                   policies: Mapping[int, ClientPolicy] | None = None) -> MaskedSumResult:
    """Sum ``inputs`` mod ``cfg.modulus`` with the masked-sum protocol, in process.

    ``dropouts[cid] = step`` makes client ``cid`` go silent from ``step`` on. ``tamper(step,
    sender, data)``, for testing, stands in for a hostile network: it returns the bytes the
    server receives instead of ``data``, or None to lose the message. ``policies[cid]``: what
    client ``cid`` trusts (default: the enrolled group as given, see :class:`SecAggClient`); a
    client whose policy refuses the session stays silent and is listed in
    ``stats.client_aborts``. Returns the sum over the
    included clients (U3); raises :class:`SecAggAbort` below threshold.
    """
    dropouts = dict(dropouts or {})
    validate_inputs(cfg, inputs, dropouts)
    session_id = session_id_for(seed)
    identities = {cid: crypto.IdentityKey() for cid in inputs}
    public = {cid: key.public for cid, key in identities.items()}
    server = SecAggServer(cfg, public, session_id)
    stats = SessionStats()
    clients = {}
    for cid in inputs:
        try:
            clients[cid] = SecAggClient(cfg, cid, identities[cid], public, session_id,
                                        policy=policies.get(cid) if policies else None)
        except ProtocolViolation as exc:  # the client's policy refuses the session: it is silent
            stats.client_aborts[cid] = str(exc)

    def speaks(cid: int, step: Step) -> bool:
        silent_from = dropouts.get(cid)
        return cid not in stats.client_aborts and (
            silent_from is None or STEPS.index(step) < STEPS.index(silent_from))

    def client_round(step: Step, to_clients: Mapping[int, bytes] | None) -> dict[int, bytes]:
        replies = {}
        recipients = sorted(inputs) if to_clients is None else sorted(to_clients)
        for cid in recipients:
            if not speaks(cid, step):
                continue
            client = clients[cid]
            message = None if to_clients is None else to_clients[cid]
            x = inputs[cid] if step is Step.MASKED_INPUT else None
            start = time.perf_counter()
            try:
                reply = client.respond(step, message, x)
            except ProtocolViolation as exc:
                stats.client_aborts[cid] = str(exc)
                continue
            finally:
                stats.client_seconds[step][cid] = time.perf_counter() - start
            stats.client_upload_bytes[step][cid] = len(reply)
            if tamper is not None:
                reply = tamper(step, cid, reply)
            if reply is not None:
                replies[cid] = reply
        return replies

    return run_session(server, public, client_round, stats)
