"""Sessions to audit: honest clients and an honest server driven as ``runner.run_masked_sum`` does,
but with the identities, the session id and every message in reach, so that tests can record
them, tamper with them, or show clients different views.

Every key, self-mask seed and the session id come from a ``random.Random(seed)`` (the tests'
only patch of the library), so a session's masked inputs, and hence its uniformity p-values,
are the same on every run: the audits of fixed sessions cannot be flaky.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gptfl_secure.protocols import (
    STEPS,
    IdentityKey,
    ProtocolViolation,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    TranscriptEntry,
    crypto,
)
from gptfl_secure.protocols import messages as m
from gptfl_secure.protocols.recording import read_record, record_session

D = 2000
Q = 2**32
INPUT_MAX = 100  # small integers: what a plain (unmasked) input looks like
STEP_TYPES = {"advertise_keys": m.MsgType.ADVERTISE, "share_keys": m.MsgType.SHARES,
              "masked_input": m.MsgType.MASKED_INPUT,
              "consistency_check": m.MsgType.CONSISTENCY, "unmasking": m.MsgType.UNMASK}
SERVER_TYPES = {"share_keys": m.MsgType.KEY_LIST, "masked_input": m.MsgType.SHARE_RELAY,
                "consistency_check": m.MsgType.SURVIVORS, "unmasking": m.MsgType.SIGNATURES}


def config(n: int, t: int, k: int | None = None, q: int = Q, d: int = D) -> SecAggConfig:
    return SecAggConfig(num_clients=n, threshold=t, vector_length=d, modulus=q, neighbors=k)


@contextmanager
def seeded(rng: random.Random) -> Iterator[None]:
    """Clients' X25519 keys and self-mask seeds drawn from ``rng``."""

    class Seeded(crypto.AgreementKey):
        def __init__(self, private=None):
            if private is None:
                private = X25519PrivateKey.from_private_bytes(rng.randbytes(32))
            super().__init__(private)

    with mock.patch.object(crypto, "AgreementKey", Seeded), \
            mock.patch.object(crypto, "random_bytes", lambda n=32: rng.randbytes(n)):
        yield


@dataclass
class Driver:
    """One session in progress: ``received[step][cid]`` is what the server sent ``cid`` for
    ``step``, ``replies[step][cid]`` what ``cid`` answered."""

    cfg: SecAggConfig
    session_id: bytes
    identities: dict[int, IdentityKey]
    inputs: dict[int, np.ndarray]
    clients: dict[int, SecAggClient]
    server: SecAggServer
    rng: random.Random
    received: dict[str, dict[int, bytes]] = field(default_factory=dict)
    replies: dict[str, dict[int, bytes]] = field(default_factory=dict)
    client_aborts: dict[int, str] = field(default_factory=dict)
    extra: list[TranscriptEntry] = field(default_factory=list)  # messages past the server

    @property
    def public(self) -> dict[int, bytes]:
        return {c: k.public for c, k in self.identities.items()}

    @property
    def ids(self) -> list[int]:
        return sorted(self.clients)

    def call(self, cid: int, step: str, message: bytes | None = None) -> bytes:
        client = self.clients[cid]
        with seeded(self.rng):
            if step == "advertise_keys":
                return client.advertise_keys()
            if step == "masked_input":
                return client.masked_input(message, self.inputs[cid])
            return getattr(client, step)(message)

    def run(self, dropouts: Mapping[int, str] | None = None, until: str | None = None):
        """Honest rounds (all, or those before ``until``); ``dropouts[cid] = step`` silences
        ``cid`` from ``step`` on; a client that raises ProtocolViolation stays silent, as in
        run_masked_sum. Returns the server's output of the last round run."""
        dropouts = dict(dropouts or {})
        outgoing = None
        for step in STEPS[: STEPS.index(until)] if until else STEPS:
            replies = {}
            for cid in self.ids if outgoing is None else sorted(outgoing):
                if cid in self.client_aborts or (
                        cid in dropouts and STEPS.index(step) >= STEPS.index(dropouts[cid])):
                    continue
                try:
                    replies[cid] = self.call(cid, step, None if outgoing is None
                                             else outgoing[cid])
                except ProtocolViolation as exc:
                    self.client_aborts[cid] = str(exc)
            self.replies[step] = replies
            outgoing = getattr(self.server, step)(replies)
            if step != "unmasking":
                self.received[STEPS[STEPS.index(step) + 1]] = outgoing
        return outgoing

    def transcript(self) -> list[TranscriptEntry]:
        return [*self.server.transcript, *self.extra]

    def sign(self, cid: int, step: str, body: bytes, session_id: bytes | None = None,
             context: bytes | None = None) -> bytes:
        """A message ``cid`` never sent, signed with its real identity key under the session
        context (the server's, unless given; none for ADVERTISE)."""
        if context is None:
            context = b"" if step == "advertise_keys" else self.server.context
        return m.seal(STEP_TYPES[step], session_id or self.session_id, cid, body,
                      self.identities[cid], context)

    def from_server(self, step: str, body: bytes) -> bytes:
        return m.seal(SERVER_TYPES[step], self.session_id, m.SERVER, body)

    def record(self, directory: Path, name: str = "s", transcript=None, included=None,
               aborted: str | None = None) -> Path:
        transcript = self.transcript() if transcript is None else transcript
        if included is None:
            included = frozenset() if aborted else self.server.u3
        return record_session(directory, name, self.cfg, self.session_id, self.public,
                              transcript, included, aborted=aborted)


def start(cfg: SecAggConfig, seed: int = 0, *, ids=None, identities=None,
          session_id: bytes | None = None) -> Driver:
    """A fresh session; pass ``identities`` (and a ``session_id``) to re-enroll the same clients."""
    rng = random.Random(seed)
    if identities is None:
        identities = {c: IdentityKey(rng.randbytes(32))
                      for c in (ids if ids is not None else range(cfg.num_clients))}
    session_id = session_id or rng.randbytes(m.SESSION_ID_BYTES)
    data = np.random.default_rng(seed)
    inputs = {c: data.integers(0, min(INPUT_MAX, cfg.modulus), cfg.vector_length, dtype=np.uint64)
              for c in sorted(identities)}
    public = {c: k.public for c, k in identities.items()}
    with seeded(rng):
        clients = {c: SecAggClient(cfg, c, identities[c], public, session_id)
                   for c in sorted(identities)}
    return Driver(cfg, session_id, dict(identities), inputs, clients,
                  SecAggServer(cfg, public, session_id), rng)


def honest(cfg: SecAggConfig, seed: int = 0, dropouts=None, **kw) -> Driver:
    driver = start(cfg, seed, **kw)
    driver.run(dropouts)
    return driver


def roundtrip(driver: Driver, directory: Path, transcript=None, included=None, name: str = "s"):
    """Record, then read back: what the auditor sees."""
    return read_record(driver.record(directory, name, transcript, included))


def index_of(transcript, step: str, sender: int) -> int:
    return next(i for i, e in enumerate(transcript) if e.step == step and e.sender == sender)


def replace(transcript, i: int, *, step=None, sender=None, data=None) -> list[TranscriptEntry]:
    out = list(transcript)
    e = out[i]
    out[i] = TranscriptEntry(step or e.step, e.sender if sender is None else sender,
                             e.data if data is None else data)
    return out


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    pos %= len(data)
    return data[:pos] + bytes([data[pos] ^ (1 << bit)]) + data[pos + 1:]
