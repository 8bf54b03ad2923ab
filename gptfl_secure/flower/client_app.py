"""The Flower ``ClientApp``: one client's private partition, local training, and the
:class:`SecAggClient` state machine.

The node's partition is ``--node-config partition-id=N`` (the simulation engine sets it for
each virtual node); its client id in every session is N. Handlers:

* ``query.enroll``: the node's Ed25519 identity public key and its partition id. The identity is
  generated at first contact and kept in ``Context.state`` (SuperNode memory) for the run. Real
  deployments enroll identity keys out of band instead: a server that hands out the key list can
  otherwise impersonate clients to each other. Enrolment also learns the node's label names
  (from its partition cache, :mod:`.partitions`; the first time from the data, which fills the
  cache), so that label discovery needs neither torch nor the data.
* ``train``: train on the partition (loaded from the node's ``.npy`` cache) from the global
  model, encode the update with the run's update codec
  (:func:`~gptfl_secure.pipeline.codecs.make_update_codec`; same seeds as the in-process sim),
  then answer the message's protocol steps: the round's masked input, which consumes the
  contribution. Nothing about it leaves the node unmasked.
* ``query.secagg``: protocol steps, each of its own session (records ``part-0``, ``part-1``:
  :mod:`.wire`). Each reply part carries the bytes ``SecAggClient`` produced. A protocol
  violation aborts the client for that session only: it answers ``abort`` for it and reveals
  nothing; the message's other sessions go on. These steps import neither torch nor the data.
* ``query.plain``: ``secagg=off`` only: the contribution itself, in the clear.

What the node trusts comes from the node, never from the server's message. The first step of a
session carries a :class:`~.wire.SessionHeader` (the proposed config and group), validated by
``SessionHeader.from_bytes`` and then checked against a
:class:`~gptfl_secure.protocols.policy.ClientPolicy` built from the node config (``--node-config``):

* ``registry``: path of a JSON file ``{"<client id>": "<Ed25519 public key hex>", ...}``, the
  out-of-band enrolment. A session group must be a subset of it. This node's own entry, if
  present, must be its own key (use ``identity-file`` to keep the key stable across restarts).
* Without ``registry``, trust on first use: the node pins in ``Context.state`` the identity key it
  first sees for each client id and refuses any later header that changes one. This only detects
  a *change*: a server that lies from the very first session can still hand out keys of its own
  and impersonate clients to this node. Use a registry where that matters.
* ``min-clients`` (default 2), ``max-colluders`` (0), ``min-threshold-fraction`` (0.0),
  ``secagg-plus`` (true), ``corruption-rate`` (0.0): the ClientPolicy fields of those names.
* ``identity-file``: path of a file holding the hex of a 32-byte Ed25519 seed; without it the
  identity is made at first contact and lives in ``Context.state`` for the run.

A :class:`~gptfl_secure.protocols.policy.SessionLedger` of the session ids started, in
``Context.state``, refuses a reused session id. A refused header (malformed, against the policy,
a changed pinned key, a reused id) makes the node answer ``abort`` with the reason, before any key
is made.

State between steps (``SecAggClient.export_state``, whose schema
:mod:`gptfl_secure.protocols.client_state` declares and checks) lives in ``Context.state`` only,
in memory, and is deleted when the session ends; the identity key is not in it (it is restored
from the node's own identity).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ..protocols import STEPS, IdentityKey, ProtocolViolation, SecAggClient, Step
from ..protocols.policy import ClientPolicy, PolicyViolation, SessionLedger
from . import partitions, wire

if TYPE_CHECKING:  # importing the run config imports torch: only the steps that need it do
    from ..pipeline.config import SimConfig

IDENTITY = "gptfl-identity"
SESSIONS = "gptfl-sessions"
INPUTS = "gptfl-inputs"
LABELS = "gptfl-labels"  # this node's distinct label names, learned at enrolment
PINNED = "gptfl-pinned"  # trust on first use: client id -> identity key first seen
LEDGER = "gptfl-ledger"  # the session ids this node has started

SESSION_ID_BYTES = 32
MAX_PAYLOAD_BYTES = 1 << 31
"""Bound on one protocol message from the server (SecAggClient checks the exact format)."""


class NodeConfigError(ValueError):
    """A ``--node-config`` value (or the registry / identity file it names) is unusable."""


def _record(context: Context, name: str) -> ConfigRecord:
    if name not in context.state:
        context.state[name] = ConfigRecord()
    return context.state[name]


def partition_id(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise ValueError("this SuperNode has no partition: start it with --node-config "
                         "'partition-id=N'") from None


def identity(context: Context) -> IdentityKey:
    """This node's Ed25519 identity: from ``identity-file`` when the node config names one,
    else created at first contact and kept for the run."""
    path = context.node_config.get("identity-file")
    if path:
        try:
            seed = bytes.fromhex(open(str(path)).read().strip())
        except (OSError, ValueError) as exc:
            raise NodeConfigError(f"identity-file {path!r}: {exc}") from None
        if len(seed) != 32:
            raise NodeConfigError(f"identity-file {path!r}: the seed must be 32 bytes of hex")
        return IdentityKey(seed)
    rec = _record(context, IDENTITY)
    if "seed" not in rec:
        from ..protocols import crypto

        rec["seed"] = crypto.random_bytes(32)
    return IdentityKey(bytes(rec["seed"]))


def _node_number(context: Context, key: str, default: float, *, integer: bool = False):
    """A numeric ``--node-config`` value (an int when ``integer``), or NodeConfigError."""
    value = context.node_config.get(key, default)
    try:
        if isinstance(value, bool) or (integer and isinstance(value, float)
                                       and not value.is_integer()):
            raise ValueError
        return int(value) if integer else float(value)
    except (TypeError, ValueError):
        what = "an integer" if integer else "a number"
        raise NodeConfigError(f"node config {key}={value!r}: must be {what}") from None


def _node_bool(context: Context, key: str, default: bool) -> bool:
    value = context.node_config.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise NodeConfigError(f"node config {key}={value!r}: must be true or false")


def load_registry(path: str) -> dict[int, bytes]:
    """The out-of-band registry: a JSON object mapping client id -> Ed25519 public key hex."""
    try:
        with open(path) as f:
            raw = json.load(f)
        if not isinstance(raw, dict):
            raise ValueError("a JSON object {\"<client id>\": \"<key hex>\"} is expected")
        keys = {int(cid): bytes.fromhex(key) for cid, key in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise NodeConfigError(f"registry {path!r}: {exc}") from None
    for cid, key in keys.items():
        if not 0 <= cid < 2**32 - 1 or len(key) != 32:
            raise NodeConfigError(f"registry {path!r}: client {cid}: ids in [0, 2^32 - 1), "
                                  "keys of 32 bytes")
    return keys


def node_policy(context: Context, pid: int, own_public: bytes,
                header: wire.SessionHeader) -> ClientPolicy:
    """The :class:`ClientPolicy` this node applies to ``header``, built from its node config and
    what it trusts (its registry, or the keys it pinned at first use), never from the server.

    Without a registry, a header that changes a pinned key raises :class:`PolicyViolation`; the
    keys it introduces are trusted on first use (pinned by :func:`_pin` once the session is
    accepted)."""
    registry = context.node_config.get("registry")
    if registry:
        trusted = load_registry(str(registry))
        if trusted.setdefault(pid, own_public) != own_public:
            raise PolicyViolation(f"the registry lists another identity key for this node "
                                  f"({pid}) than its own")
    else:
        pinned = _record(context, PINNED)
        trusted = {pid: own_public}
        for cid, key in header.identity_keys.items():
            known = trusted.get(cid, pinned.get(str(cid)))
            if known is not None and bytes(known) != key:
                raise PolicyViolation(f"client {cid}'s identity key differs from the one this "
                                      "node pinned when it first saw it (no registry: trust on "
                                      "first use)")
            trusted[cid] = key
    try:
        return ClientPolicy(
            trusted, min_clients=_node_number(context, "min-clients", 2, integer=True),
            max_colluders=_node_number(context, "max-colluders", 0, integer=True),
            min_threshold_fraction=_node_number(context, "min-threshold-fraction", 0.0),
            allow_secagg_plus=_node_bool(context, "secagg-plus", True),
            corruption_rate=_node_number(context, "corruption-rate", 0.0))
    except ValueError as exc:
        raise NodeConfigError(f"node config: {exc}") from None


def _pin(context: Context, keys: Mapping[int, bytes]) -> None:
    if context.node_config.get("registry"):
        return
    pinned = _record(context, PINNED)
    for cid, key in keys.items():
        pinned.setdefault(str(cid), key)


def _ledger(context: Context) -> SessionLedger:
    return SessionLedger.of(bytes.fromhex(k) for k in _record(context, LEDGER))


def _request(rec: object) -> tuple[ConfigRecord, bytes, Step]:
    """(record, session id, step) of one protocol step of a message, type-checked."""
    if not isinstance(rec, ConfigRecord):
        raise ProtocolViolation(STEPS[0], "server", "a protocol step is not a ConfigRecord")
    session, step = rec.get("session"), rec.get("step")
    if step not in STEPS:
        raise ProtocolViolation(STEPS[0], "server", f"unknown step {str(step)[:40]!r}")
    step = Step(step)
    if not isinstance(session, bytes) or len(session) != SESSION_ID_BYTES:
        raise ProtocolViolation(step, "server", f"the session id must be {SESSION_ID_BYTES} "
                                "bytes")
    for name in (("header",) if step == STEPS[0] else ("payload",)):
        value = rec.get(name)
        if not isinstance(value, bytes) or len(value) > MAX_PAYLOAD_BYTES:
            raise ProtocolViolation(step, "server", f"{name} must be bytes of at most "
                                    f"{MAX_PAYLOAD_BYTES}")
    return rec, session, step


@dataclass(frozen=True)
class RunSettings:
    """The run config as the node received it. ``raw`` is read without importing anything;
    :meth:`config` parses it into the run's :class:`SimConfig`, which imports torch: only a
    step that trains (or builds the partition cache) calls it."""

    raw: Mapping[str, Any]

    def config(self) -> SimConfig:
        from .options import parse_run_config

        return parse_run_config(dict(self.raw))[0]


@functools.lru_cache(maxsize=2)
def _cached_partition(root: str, key: str):
    return partitions.load(Path(root), key)


def own_partition(context: Context, run: RunSettings):
    """This node's partition: from the node's cache (``.npy``), else built from the data set
    once (:func:`~gptfl_secure.pipeline.setup.prepare_data`) and cached."""
    pid = partition_id(context)
    root, key = partitions.cache_root(context.node_config), partitions.cache_key(run.raw, pid)
    data = _cached_partition(str(root), key)
    if data is not None:
        return data
    from ..pipeline.setup import prepare_data

    setup = prepare_data(run.config())
    if not 0 <= pid < len(setup.parts):
        raise ValueError(f"partition-id={pid}: the run has clients={len(setup.parts)}")
    partitions.store(root, key, setup.parts[pid])
    _cached_partition.cache_clear()
    return setup.parts[pid]


@functools.lru_cache(maxsize=2)
def _model(config: SimConfig, in_shape: tuple[int, ...], label_names: tuple[str, ...]):
    from ..learning.data import Dataset
    from ..pipeline.client_training import limit_threads, new_model

    limit_threads(config.threads)
    shape = Dataset(np.zeros((0, *in_shape), np.float32), np.zeros(0, np.int64), label_names)
    return new_model(config, shape)


def _reply(message: Message, **values) -> Message:
    return Message(RecordDict({wire.RECORD: ConfigRecord(values)}), reply_to=message)


def contribution(config: SimConfig, data, pid: int, r: int,
                 global_vector: np.ndarray) -> np.ndarray:
    """Client ``pid``'s encoded update for round ``r`` on its partition ``data``, exactly as
    the in-process round computes it: the pipeline's
    :func:`~gptfl_secure.pipeline.rounds.train_client` and update codec (same training seed,
    same stochastic-rounding stream)."""
    from ..pipeline.client_training import local_training, plain_local_training, train_client
    from ..pipeline.codecs import CodecRound, make_update_codec

    at = CodecRound(config.seed, r, pid)
    model = _model(config, tuple(data.x.shape[1:]), tuple(data.label_names))
    delta = train_client(plain_local_training, model, global_vector, data,
                         local_training(config), at)
    return make_update_codec(config, len(global_vector)).encode(delta, len(data), at)


def label_sketch(labels: list[str], capacity: int, seed: int) -> np.ndarray:
    """The IBLT sketch of this client's distinct label names (GPT-FL step 1)."""
    from ..iblt import IbltParams, IbltSketch

    return IbltSketch.from_keys(IbltParams(capacity=capacity, seed=seed),
                                sorted(labels)).to_vector()


def set_labels(context: Context, labels: list[str]) -> None:
    """Keep this node's distinct label names for its label-discovery sessions."""
    context.state[LABELS] = ConfigRecord({"names": sorted(labels)})


def enroll(message: Message, context: Context, run: RunSettings) -> Message:
    """Identity key and partition id. Also learns the node's label names (from its partition
    cache; the first time, from the data, which builds the cache), so that label discovery's
    steps need neither torch nor the data."""
    pid = partition_id(context)
    root, key = partitions.cache_root(context.node_config), partitions.cache_key(run.raw, pid)
    labels = partitions.present_labels(root, key)
    if labels is None:
        data = own_partition(context, run)
        labels = [data.label_names[int(y)] for y in np.unique(data.y)]
    set_labels(context, labels)
    return _reply(message, **{"partition-id": pid, "identity": identity(context).public})


def train(message: Message, context: Context, run: RunSettings) -> Message:
    """Train on the partition from the global model and keep the encoded contribution for the
    round's session; then answer the message's protocol steps (its session's masked input)."""
    start = time.perf_counter()
    config = run.config()
    r = int(message.content[wire.RECORD]["round"])
    global_vector = message.content[wire.MODEL]["global"].numpy().astype(np.float32)
    vector = contribution(config, own_partition(context, run), partition_id(context), r,
                          global_vector)
    _record(context, INPUTS)[f"round-{r}"] = vector.astype(np.uint64).tobytes()
    content = RecordDict({wire.RECORD: ConfigRecord(
        {"ok": True, "seconds": time.perf_counter() - start})})
    _answer_parts(message, context, content)
    return Message(content, reply_to=message)


def _input_for(context: Context, header: wire.SessionHeader) -> np.ndarray:
    if header.purpose == wire.PURPOSE_LABELS:
        if LABELS not in context.state:
            raise ProtocolViolation(Step.MASKED_INPUT, "server", "this node has not enrolled: "
                                    "it knows no label names to sketch")
        names = [str(n) for n in context.state[LABELS]["names"]]
        return label_sketch(names, header.iblt_capacity, header.iblt_seed)
    inputs = _record(context, INPUTS)
    key = f"round-{header.round}"
    if key not in inputs:
        raise ProtocolViolation(Step.MASKED_INPUT, "server", f"no contribution trained for round "
                                f"{header.round}")
    vector = np.frombuffer(bytes(inputs[key]), dtype=np.uint64).copy()
    del inputs[key]
    return vector


def run_step(rec: object, context: Context) -> dict:
    """One step of one session of the masked-sum protocol: ``{payload, seconds}``, or
    ``{abort, seconds}`` when the node refuses (it then reveals nothing for that session). The
    first step carries the session header, which the node validates and checks against its own
    policy and ledger before it makes any key; a refused first step leaves every other session
    of the node as it was (a reused id cannot wipe the session that owns it)."""
    start = time.perf_counter()
    sessions = _record(context, SESSIONS)
    key = step = None
    try:
        rec, session, step = _request(rec)
        key = session.hex()
        pid = partition_id(context)
        if step == STEPS[0]:
            header = wire.SessionHeader.from_bytes(bytes(rec["header"]))
            me = identity(context)
            policy = node_policy(context, pid, me.public, header)
            client = SecAggClient(header.cfg, pid, me, header.identity_keys, session,
                                  policy=policy, ledger=_ledger(context))
            _record(context, LEDGER)[key] = True
            _pin(context, header.identity_keys)
            sessions[key + ":header"] = bytes(rec["header"])
            payload = None
        else:
            if key not in sessions:
                raise ProtocolViolation(step, "server", "no such session on this node")
            client = SecAggClient.restore_state(bytes(sessions[key]), identity(context))
            payload = bytes(rec["payload"])
        x = None
        if step is Step.MASKED_INPUT:
            x = _input_for(context, wire.SessionHeader.from_bytes(
                bytes(sessions[key + ":header"])))
        out = client.respond(step, payload, x)
    except (ProtocolViolation, ValueError) as exc:
        if key is not None and step is not None and step != STEPS[0]:
            _forget(sessions, key)
        return {"abort": str(exc), "seconds": time.perf_counter() - start}
    if step == STEPS[-1]:
        _forget(sessions, key)
    else:
        sessions[key] = client.export_state()
    return {"payload": out, "seconds": time.perf_counter() - start}


def _answer_parts(message: Message, context: Context, content: RecordDict) -> None:
    """Answer each protocol step of ``message`` (records ``part-0`` ...) under its own name."""
    for i in range(wire.MAX_PARTS):
        name = wire.part(i)
        if name in message.content:
            content[name] = ConfigRecord(run_step(message.content[name], context))


def secagg(message: Message, context: Context, run: RunSettings) -> Message:
    """The protocol steps of ``message``, each of its own session (see :mod:`.wire`)."""
    content = RecordDict({wire.RECORD: ConfigRecord()})
    _answer_parts(message, context, content)
    return Message(content, reply_to=message)


def _forget(sessions: ConfigRecord, key: str) -> None:
    for k in (key, key + ":header"):
        if k in sessions:
            del sessions[k]


def plain(message: Message, context: Context, run: RunSettings) -> Message:
    """``secagg=off``: send the vector itself (the server sees it: not private)."""
    rec = message.content[wire.RECORD]
    try:
        header = wire.SessionHeader.from_bytes(rec.get("header"))
        vector = _input_for(context, header)
    except (ProtocolViolation, ValueError) as exc:
        return _reply(message, abort=str(exc))
    return _reply(message, payload=vector.astype(np.uint64).tobytes())


def build_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; ``overrides`` are laid over the run config (for
    ``flwr.simulation.run_simulation``, which passes none)."""
    client_app = ClientApp()
    extra = dict(overrides or {})

    def bind(handler):
        def call(message: Message, context: Context) -> Message:
            return handler(message, context, RunSettings({**context.run_config, **extra}))
        return call

    client_app.query("enroll")(bind(enroll))
    client_app.train()(bind(train))
    client_app.query("secagg")(bind(secagg))
    client_app.query("plain")(bind(plain))
    return client_app


app = build_client_app()
