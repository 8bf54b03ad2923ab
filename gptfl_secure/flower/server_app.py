"""The Flower ``ServerApp``: the GPT-FL pipeline with every sum computed by our masked-sum
protocol, Flower carrying the bytes.

enroll (identity keys, partition ids; each node learns its label names) → label discovery (IBLT
sketches summed by one protocol session over every node) → synthetic pretraining (on the server,
as in the sim) → rounds: sample the cohort with the sim's seeds; one protocol session per round
sums the encoded updates; decode, server optimizer step, evaluate.

The sessions are pipelined (:func:`run_pipeline`): an exchange (one message to each node and its
reply, :meth:`FlowerTransport.exchange`) can carry one round of each of several sessions
(:func:`exchange_steps`), so round r+1's key advertisement and sharing ride in round r's
consistency-check and unmasking exchanges, and training rides with the masked input: three
exchanges per steady round. Each exchange is bounded by ``step-timeout`` (``train-timeout`` for
the training one): a node whose reply has not arrived (a crashed SuperNode, a lost message, an
error reply) is a dropout of every session it was asked about, and each :class:`SecAggServer`
goes on as the protocol allows (dropout recovery from the Shamir shares, or an abort below the
threshold, which skips the round exactly as the sim does). Outputs are the sim's
(``metrics.json``, with ``setup_exchanges`` and each round's ``exchanges``; ``metrics.csv``,
plots, ``transcript_summary.json``, ``checkpoint.npz``) plus ``flower.json`` (nodes, per-exchange
wall times) and ``sums.npz`` (each session's sum and included ids, and the global model at the
start of each round, for checking the run against the in-process sim).

Every reply is untrusted input. Each field the server reads from a node (enroll: partition-id,
identity; a protocol step: payload, abort, seconds; plain: payload; train: ok, seconds) is type-
and size-checked before use (:func:`read_enroll`, :func:`read_step_reply`, :func:`read_plain`,
:func:`read_train`): bytes must be bytes within the step's bound
(:func:`~gptfl_secure.protocols.server.max_message_bytes`), numbers finite, strings bounded. A
malformed reply makes its node a dropout for that session, with the reason logged and kept in the
session's ``server_rejected``; it never raises out of the run. A session that aborts skips its
round; label discovery retries with a fresh session and stops the run with
:class:`~gptfl_secure.pipeline.discovery.LabelDiscoveryFailed` if every attempt aborts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from ..pipeline.aggregation import AggregateResult, SecureAggregator, plain_sum
from ..pipeline.config import SimConfig
from ..protocols import STEPS, SecAggAbort, SecAggConfig, SecAggServer
from ..protocols.config import Step
from ..protocols.crypto import KEY_BYTES
from ..protocols.runner import SessionStats, session_id_for
from ..protocols.server import max_message_bytes
from . import wire
from .options import FlowerOptions, parse_run_config

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


MAX_REASON_CHARS = 500
"""A node's abort reason is kept (and logged) up to this many characters."""
MAX_SECONDS = 1e7


class MalformedReply(ValueError):
    """A node's reply does not have the fields, types or sizes its step requires."""


def _bytes(rec: Mapping, name: str, limit: int, exact: int | None = None) -> bytes:
    value = rec.get(name)
    if not isinstance(value, bytes):
        what = "missing" if value is None else f"a {type(value).__name__}"
        raise MalformedReply(f"{name} is {what}, not bytes")
    if len(value) > limit or (exact is not None and len(value) != exact):
        want = f"exactly {exact}" if exact is not None else f"at most {limit}"
        raise MalformedReply(f"{name} has {len(value)} bytes, {want} expected")
    return value


def _seconds(rec: Mapping) -> float:
    value = rec.get("seconds", 0.0)
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not (math.isfinite(value) and 0.0 <= value <= MAX_SECONDS)):
        raise MalformedReply(f"seconds={str(value)[:40]!r}: must be a finite number in "
                             f"[0, {MAX_SECONDS:g}]")
    return float(value)


def _reason(value: object) -> str:
    if isinstance(value, str):
        return value[:MAX_REASON_CHARS] + ("..." if len(value) > MAX_REASON_CHARS else "")
    return f"(an abort reason of type {type(value).__name__})"


def read_enroll(rec: Mapping, clients: int) -> tuple[int, bytes]:
    """(partition id, identity public key) of an enroll reply, or MalformedReply."""
    cid = rec.get("partition-id")
    if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid < clients:
        raise MalformedReply(f"partition-id {str(cid)[:40]!r}: must be an int in "
                             f"[0, {clients})")
    return cid, _bytes(rec, "identity", KEY_BYTES, KEY_BYTES)


def read_step_reply(rec: Mapping, cfg: SecAggConfig, step: str) -> tuple[bytes | None, str | None,
                                                                         float]:
    """(payload, abort reason, seconds) of a protocol-step reply: exactly one of payload and
    abort is not None. The payload is bytes of at most ``max_message_bytes(cfg, step)``."""
    seconds = _seconds(rec)
    if "abort" in rec:
        return None, _reason(rec["abort"]), seconds
    return _bytes(rec, "payload", max_message_bytes(cfg, step)), None, seconds


def read_plain(rec: Mapping, cfg: SecAggConfig) -> np.ndarray:
    """The vector of a ``secagg=off`` reply: exactly ``vector_length`` uint64 entries."""
    data = _bytes(rec, "payload", 8 * cfg.vector_length, 8 * cfg.vector_length)
    return np.frombuffer(data, dtype=np.uint64)


def read_train(rec: Mapping) -> float:
    """Seconds of a train reply that reports success (``ok`` is True)."""
    if rec.get("ok") is not True:
        raise MalformedReply(f"ok={str(rec.get('ok'))[:40]!r}: training did not report success")
    return _seconds(rec)


@dataclass
class FlowerTransport:
    """Sends one message per node and collects the replies that arrive within a timeout.

    ``nodes`` maps client id (the node's partition id) to Flower node id. ``step_seconds``
    records the wall time of every exchange, ``progress`` (a JSON-lines file) a line before
    each exchange is sent, which tests use to interrupt a run at a chosen step.
    """

    grid: Grid
    log: Log = _print
    progress: Path | None = None
    nodes: dict[int, int] = field(default_factory=dict)
    step_seconds: list[dict] = field(default_factory=list)
    poll_interval: float = 0.1

    def mark(self, **event) -> None:
        if self.progress is not None:
            with self.progress.open("a") as f:
                f.write(json.dumps({"time": time.time(), **event}) + "\n")

    def wait_for_nodes(self, wanted: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            ids = sorted(self.grid.get_node_ids())
            if len(ids) >= wanted or time.monotonic() >= deadline:
                return ids
            time.sleep(0.5)

    def _send_and_receive(self, messages: list[Message], timeout: float) -> list[Message]:
        """``Grid.send_and_receive`` polling every ``poll_interval`` seconds instead of its
        fixed 3 s (the deployment grid's pull loop), which would add up to 3 s to every step."""
        pending = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            got = list(self.grid.pull_messages(pending))
            replies.extend(got)
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval)
        return replies

    def exchange(self, message_type: str, contents: Mapping[int, RecordDict], timeout: float,
                 group: str, *, by_node: bool = False) -> dict[int, RecordDict]:
        """Send ``contents[cid]`` to each client's node (one exchange: every message out, every
        reply back); return ``{cid: reply content}`` for the replies that arrived in
        ``timeout`` seconds and are not errors."""
        self.mark(group=group, phase="send", recipients=sorted(contents))
        dst = (lambda key: key) if by_node else self.nodes.__getitem__
        messages = [Message(content, dst_node_id=dst(key), message_type=message_type,
                            group_id=group, ttl=timeout + 30.0)
                    for key, content in contents.items()]
        start = time.perf_counter()
        replies = self._send_and_receive(messages, timeout)
        seconds = time.perf_counter() - start
        back = {node: key for key, node in ((k, dst(k)) for k in contents)}
        out = {}
        for reply in replies:
            key = back.get(reply.metadata.src_node_id)
            if key is None or reply.has_error():
                continue
            out[key] = reply.content
        self.step_seconds.append({"group": group, "seconds": round(seconds, 4),
                                  "sent": len(contents), "answered": len(out)})
        missing = sorted(set(contents) - set(out))
        if missing:
            self.log(f"      {group}: no reply from {missing} within {timeout:g} s: dropouts")
        return out

    @property
    def count(self) -> int:
        """Exchanges made so far."""
        return len(self.step_seconds)


def config_record(content: RecordDict, name: str = wire.RECORD) -> ConfigRecord:
    """The ``ConfigRecord`` named ``name`` of a reply, or MalformedReply."""
    record = content[name] if name in content else None
    if not isinstance(record, ConfigRecord):
        what = "missing" if record is None else f"a {type(record).__name__}"
        raise MalformedReply(f"record {name!r} is {what}, not a ConfigRecord")
    return record


def records(transport: FlowerTransport, group: str,
            replies: Mapping[int, RecordDict]) -> dict[int, ConfigRecord]:
    """The main ``ConfigRecord`` of each reply; a reply without one is a dropout (logged)."""
    out = {}
    for key, content in replies.items():
        try:
            out[key] = config_record(content)
        except MalformedReply as exc:
            transport.log(f"      {group}: reply of {key}: {exc}: dropout")
    return out


def enroll(transport: FlowerTransport, node_ids: list[int], clients: int,
           timeout: float) -> dict[int, bytes]:
    """Learn each node's partition id and identity public key; sets ``transport.nodes``.

    Here the key list comes from the nodes themselves at the start of the run; a real
    deployment enrolls identity keys out of band (see the README)."""
    contents = {n: RecordDict({wire.RECORD: ConfigRecord()}) for n in node_ids}
    replies = records(transport, "enroll",
                      transport.exchange(wire.ENROLL, contents, timeout, "enroll", by_node=True))
    keys: dict[int, bytes] = {}
    for node, rec in sorted(replies.items()):
        try:
            cid, key = read_enroll(rec, clients)
        except MalformedReply as exc:
            transport.log(f"      node {node}: malformed enroll reply ({exc}); left out")
            continue
        if cid in keys or key in keys.values():
            transport.log(f"      node {node}: partition-id {cid} or its identity key is taken; "
                          "left out")
            continue
        keys[cid] = key
        transport.nodes[cid] = node
    return keys


class FlowerSession:
    """One session of the masked-sum protocol whose rounds travel in Flower messages, possibly
    in the same exchanges as another session's rounds (:func:`exchange_steps`).

    ``header.identity_keys`` are the session's clients; ``speakers`` those that are asked the
    first step (a client that could not prepare its input is silent from the start). A reply
    that :func:`read_step_reply` refuses makes its client a dropout (logged, and kept in
    ``stats.server_rejected``). Below the threshold the session ends in ``abort``
    (:class:`SecAggAbort`, ``partial`` its record up to the abort), as :func:`run_masked_sum`
    does. The result carries the session id, identity keys and config, so it can be recorded
    (``record-transcript``)."""

    def __init__(self, log: Log, name: str, header: wire.SessionHeader,
                 speakers: set[int]) -> None:
        from ..protocols.session import SessionSteps

        self.log, self.name, self.header, self.speakers = log, name, header, set(speakers)
        self.session_id = session_id_for(None)
        self.stats = SessionStats()
        self.malformed: dict[int, str] = {}
        server = SecAggServer(header.cfg, header.identity_keys, self.session_id)
        self.steps = SessionSteps(server, header.identity_keys, self.stats)
        self._header_bytes = header.to_bytes()

    @property
    def step(self) -> Step | None:
        """The round this session runs next; None once it has ended (result or abort)."""
        return self.steps.step

    @property
    def abort(self) -> SecAggAbort | None:
        return self.steps.abort

    def requests(self) -> dict[int, ConfigRecord]:
        """This round's message to each of its recipients."""
        step, outgoing = self.steps.step, self.steps.outgoing
        recipients = sorted(self.speakers) if outgoing is None else sorted(outgoing)
        out = {}
        for cid in recipients:
            rec = {"session": self.session_id, "step": step.value,
                   "payload": b"" if outgoing is None else outgoing[cid]}
            if step is STEPS[0]:  # the first step carries the session header (client_app)
                rec["header"] = self._header_bytes
            out[cid] = ConfigRecord(rec)
        return out

    def deliver(self, replies: Mapping[int, object]) -> None:
        """Run this round on the clients' reply records; an abort ends the session (logged)."""
        step, got = self.steps.step, {}
        for cid, rec in sorted(replies.items()):
            try:
                if not isinstance(rec, ConfigRecord):
                    raise MalformedReply(f"the step's record is a {type(rec).__name__}")
                payload, abort, seconds = read_step_reply(rec, self.header.cfg, step)
            except MalformedReply as exc:
                self.malformed[cid] = f"{step}: malformed reply ({exc})"
                self.log(f"      {self.name}/{step}: client {cid} sent a malformed reply "
                         f"({exc}): dropout")
                continue
            self.stats.client_seconds[step][cid] = seconds
            if abort is not None:
                self.stats.client_aborts[cid] = abort
                self.log(f"      {self.name}/{step}: client {cid} aborted: {abort}")
                continue
            got[cid] = payload
            self.stats.client_upload_bytes[step][cid] = len(payload)
        try:
            self.steps.receive(got)
        except SecAggAbort as abort:
            self.log(f"      {self.name}: session aborted at {step}: {abort}")
        finally:
            self.stats.server_rejected.update(self.malformed)

    def result(self) -> AggregateResult:
        """The session's sum, or its SecAggAbort (raised)."""
        if self.abort is not None:
            raise self.abort
        if self.steps.result is None:
            raise RuntimeError(f"{self.name}: the session is at {self.step}, not ended")
        result = self.steps.result
        return AggregateResult(result.total, result.included, result)


def exchange_steps(transport: FlowerTransport, sessions: list[FlowerSession], timeout: float,
                   *, message_type: str = wire.SECAGG,
                   extra: Mapping[int, Mapping[str, object]] | None = None
                   ) -> dict[int, RecordDict]:
    """ONE exchange that runs the next round of each session in ``sessions`` (each in its own
    record, ``part-i``; a session that has ended is left out); ``extra`` adds records to some
    clients' messages (``train``: the model and the round). Each session gets the replies to
    its own part only. Returns every reply's content, by client."""
    active = [s for s in sessions if s.step is not None]
    if len(active) > wire.MAX_PARTS:
        raise ValueError(f"{len(active)} sessions in one exchange; a message carries at most "
                         f"{wire.MAX_PARTS} (wire.MAX_PARTS)")
    contents: dict[int, RecordDict] = {}
    for cid, recs in (extra or {}).items():
        contents[cid] = RecordDict(dict(recs))
    for i, session in enumerate(active):
        for cid, rec in session.requests().items():
            contents.setdefault(cid, RecordDict({wire.RECORD: ConfigRecord()}))[wire.part(i)] = rec
    group = "+".join(f"{s.name}/{s.step}" for s in active) or "idle"
    if message_type == wire.TRAIN:
        group = f"{group}+train" if active else "train"
    replies = transport.exchange(message_type, contents, timeout, group) if contents else {}
    for i, session in enumerate(active):
        session.deliver({cid: content[wire.part(i)] for cid, content in replies.items()
                         if wire.part(i) in content and wire.part(i) in contents[cid]})
    return replies


def masked_sum(transport: FlowerTransport, name: str, header: wire.SessionHeader,
               speakers: set[int], timeout: float,
               riders: tuple[FlowerSession, ...] = ()) -> AggregateResult:
    """One session of the masked-sum protocol over Flower messages, one exchange per round:
    the result, or SecAggAbort (``partial`` set) below the threshold. ``riders``: other
    sessions whose key set-up (advertise, share) travels in the same exchanges."""
    session = FlowerSession(transport.log, name, header, speakers)
    while session.step is not None:
        exchange_steps(transport, [session, *(r for r in riders if r.step in SETUP_STEPS)],
                       timeout)
    return session.result()


SETUP_STEPS = (Step.ADVERTISE_KEYS, Step.SHARE_KEYS)
"""A session's key set-up: the rounds that can run before its clients have an input."""


def plain_exchange(transport: FlowerTransport, name: str, header: wire.SessionHeader,
                   speakers: set[int], timeout: float) -> AggregateResult:
    """``secagg=off``: each node sends its vector in the clear; the server adds them."""
    contents = {cid: RecordDict({wire.RECORD: ConfigRecord({"header": header.to_bytes()})})
                for cid in sorted(speakers)}
    replies = records(transport, f"{name}/plain",
                      transport.exchange(wire.PLAIN, contents, timeout, f"{name}/plain"))
    vectors = {}
    for cid, rec in sorted(replies.items()):
        try:
            vectors[cid] = read_plain(rec, header.cfg)
        except MalformedReply as exc:
            transport.log(f"      {name}/plain: client {cid} sent a malformed reply ({exc}): "
                          "dropout")
    if not vectors:
        raise SecAggAbort(Step.MASKED_INPUT, 0, 1)
    return plain_sum(vectors, header.cfg.modulus)


def session_header(config: SimConfig, keys: Mapping[int, bytes], d: int, modulus: int,
                   **purpose) -> wire.SessionHeader:
    """The header of a session summing ``keys``' inputs, the parameters chosen as the sim's
    aggregator chooses them (complete graph or SecAgg+, t = floor(2n/3) + 1)."""
    if config.secagg == "off":
        # The threshold is unused by a plain sum; SecAggConfig requires a majority.
        cfg = SecAggConfig(len(keys), len(keys) // 2 + 1, d, modulus)
    else:
        cfg = SecureAggregator(config.secagg, dropout_rate=config.dropout).config(len(keys), d,
                                                                                   modulus)
    return wire.SessionHeader(cfg, dict(keys), **purpose)


def aggregate(transport: FlowerTransport, config: SimConfig, name: str,
              keys: Mapping[int, bytes], speakers: set[int], d: int, modulus: int,
              timeout: float, riders: tuple[FlowerSession, ...] = (),
              **purpose) -> AggregateResult:
    """The sum of the inputs of ``keys``' clients (:func:`session_header`); ``riders`` as in
    :func:`masked_sum`."""
    header = session_header(config, keys, d, modulus, **purpose)
    if config.secagg == "off":
        return plain_exchange(transport, name, header, speakers, timeout)
    return masked_sum(transport, name, header, speakers, timeout, riders)


def discover(transport: FlowerTransport, config: SimConfig, keys: Mapping[int, bytes],
             options: FlowerOptions, log: Log, recorder=None,
             riders: tuple[FlowerSession, ...] = ()):
    """GPT-FL step 1 over Flower: the pipeline's label-discovery loop
    (:func:`gptfl_secure.pipeline.discovery.discover_over`: a fresh-seed retry when the
    sketch does not decode; a fresh session after an aborted one, up to
    ``ABORT_RETRIES``; :class:`LabelDiscoveryFailed` when every attempt aborts), each attempt
    one protocol session over the enrolled nodes. ``riders`` (round 1's session) advertise and
    share their keys in the same exchanges."""
    from ..iblt import IbltParams
    from ..pipeline.discovery import discover_over

    log(f"[1/3] label discovery: {len(keys)} nodes encode their label names into IBLT "
        f"sketches, summed with secagg={config.secagg}")

    def sum_sketches(params: IbltParams, attempt: int) -> AggregateResult:
        return aggregate(transport, config, f"labels-{attempt}", keys, set(keys),
                         params.vector_length, params.modulus, options.step_timeout,
                         riders, purpose=wire.PURPOSE_LABELS, iblt_capacity=params.capacity,
                         iblt_seed=params.seed)

    if recorder is not None:  # lists (and with record-transcript, records) every session
        sum_sketches = recorder.wrap(sum_sketches)
    return discover_over(config, sum_sketches, log)


@dataclass
class RoundSession:
    """Round ``plan.round``'s session, opened a round early (its cohort comes from the public
    seed) so that its key set-up rides in the previous round's exchanges. ``session`` is None
    when no enrolled client was sampled, or under ``secagg=off``."""

    plan: object
    cohort: dict[int, bytes]
    session: FlowerSession | None


def train_records(cohort, r: int, global_vector: np.ndarray) -> dict[int, dict]:
    """The ``train`` message's own records for each client of ``cohort``: model and round."""
    model = ArrayRecord({"global": Array(global_vector.astype(np.float32))})
    return {c: {wire.MODEL: model, wire.RECORD: ConfigRecord({"round": r})} for c in cohort}


def check_trained(transport: FlowerTransport, r: int, replies: Mapping[int, RecordDict]
                  ) -> set[int]:
    """The clients whose ``train`` reply reports success (a malformed one is logged)."""
    trained = set()
    for c, rec in records(transport, f"round{r}/train", replies).items():
        try:
            read_train(rec)
        except MalformedReply as exc:
            transport.log(f"      round{r}/train: client {c} sent a malformed reply ({exc}): "
                          "dropout")
            continue
        trained.add(c)
    return trained


def run_pipeline(grid: Grid, run_config: Mapping, log: Log = _print) -> dict:
    """The whole run; returns metrics.json's content. The stages are the pipeline's
    (:mod:`gptfl_secure.pipeline`); this driver adds enrolment, training and the protocol
    sessions over Flower messages, pipelined so that a steady round is three exchanges:

    1. ``train``: round r's model; each node trains, then sends round r's masked input;
    2. round r's consistency check + round r+1's key advertisement;
    3. round r's unmasking + round r+1's key sharing.

    Set-up: enrolment (which also gives each node its label names), then label discovery's
    session with round 1's advertisement and sharing in its first two exchanges. Every session
    has its own id, keys and client state; a dropout or an abort in one leaves the other as the
    protocol leaves any session whose client vanished. ``metrics.json`` reports
    ``setup_exchanges`` and each round's ``exchanges``."""
    from ..learning.local import model_to_vector
    from ..pipeline.codecs import make_update_codec
    from ..pipeline.outputs import SessionRecorder, write_json, write_outputs
    from ..pipeline.pretraining import initial_state
    from ..pipeline.rounds import accuracy, close_round, plan_round, record_round, skip_round
    from ..pipeline.setup import (
        check_buildable,
        limit_threads,
        new_model,
        new_optimizer,
        prepare_data,
    )
    from ..pipeline.state import save_checkpoint

    config, options = parse_run_config(dict(run_config))
    limit_threads(config.threads)
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "progress.jsonl").unlink(missing_ok=True)
    transport = FlowerTransport(grid, log, out / "progress.jsonl")
    setup = prepare_data(config)  # the server uses the test split and the data's shape only
    check_buildable(config, setup)
    eval_model = new_model(config, setup.train)
    codec = make_update_codec(config, len(model_to_vector(eval_model)))

    log(f"[0/3] waiting for {config.clients} nodes (up to {options.enroll_timeout:g} s)")
    node_ids = transport.wait_for_nodes(config.clients, options.enroll_timeout)
    # a node without a partition cache loads its data set at enrolment: the training bound
    keys = enroll(transport, node_ids, config.clients, options.train_timeout)
    log(f"      enrolled {len(keys)} of {config.clients} clients: "
        f"{ {c: transport.nodes[c] for c in sorted(keys)} }")
    if not keys:
        raise RuntimeError("no node enrolled: start SuperNodes with --node-config partition-id=N")
    sums: dict[str, np.ndarray] = {}

    def keep(name: str, result: AggregateResult) -> None:
        sums[f"{name}_total"] = np.asarray(result.total, dtype=np.uint64)
        sums[f"{name}_included"] = np.array(sorted(result.included), dtype=np.int64)

    def open_round(r: int) -> RoundSession | None:
        if r > config.rounds:
            return None
        plan = plan_round(r, clients=config.clients, cohort=config.cohort, seed=config.seed)
        cohort = {c: keys[c] for c in plan.sampled if c in keys}
        session = None
        if cohort and config.secagg != "off":
            header = session_header(config, cohort, codec.vector_length, codec.modulus,
                                    purpose=wire.PURPOSE_ROUND, round=r)
            session = FlowerSession(log, f"round{r}", header, set(cohort))
        return RoundSession(plan, cohort, session)

    upcoming = open_round(1)
    riders = (upcoming.session,) if upcoming and upcoming.session else ()
    recorder = SessionRecorder(config, out, "label-discovery")
    try:
        found = discover(transport, config, keys, options, log, recorder, riders)
    except Exception as exc:  # LabelDiscoveryFailed: say why in the run's log, then stop
        log(f"stopping: {exc}")
        raise
    keep("labels", found.session)
    setup_exchanges = transport.count
    state = initial_state(config, setup, found, recorder.sessions, log, out=out)
    save_checkpoint(out, state)
    optimizer = new_optimizer(config)

    def evaluate(vector: np.ndarray) -> float:
        return accuracy(eval_model, setup.test, vector)

    log(f"[3/3] federated rounds: {config.rounds} x {config.cohort} of {config.clients} clients, "
        f"{config.strategy}, secagg={config.secagg}, {codec.modulus_bits}-bit ring, model of "
        f"{codec.dim} coordinates")
    for r in range(1, config.rounds + 1):
        sums[f"round{r}_global_in"] = state.global_vector.copy()
        current, upcoming = upcoming, None
        first = transport.count
        start = time.perf_counter()
        session = current.session
        while session is not None and session.step in SETUP_STEPS:  # its set-up did not ride
            exchange_steps(transport, [session], options.step_timeout)
        upcoming = open_round(r + 1)
        following = [upcoming.session] if upcoming and upcoming.session else []
        train_seconds = 0.0
        try:
            if config.secagg == "off":
                result = plain_round(transport, config, current, r, state.global_vector, codec,
                                     options)
            else:
                if session is not None and session.step is Step.MASKED_INPUT:
                    train_start = time.perf_counter()
                    extra = train_records(session.steps.outgoing, r, state.global_vector)
                    replies = exchange_steps(transport, [session], options.train_timeout,
                                             message_type=wire.TRAIN, extra=extra)
                    check_trained(transport, r, replies)
                    train_seconds = time.perf_counter() - train_start
                for _ in range(2):  # round r's last two steps, round r+1's first two
                    exchange_steps(transport, [s for s in (session, *following) if s],
                                   options.step_timeout)
                if session is None:
                    raise SecAggAbort(Step.ADVERTISE_KEYS, 0, 1)
                result = session.result()
        except SecAggAbort as abort:
            outcome = skip_round(current.plan, abort, time.perf_counter() - start,
                                 state.global_vector, evaluate)
            log(f"      round {r} skipped: {abort}")
        else:
            seconds = time.perf_counter() - start
            keep(f"round{r}", result)
            outcome = close_round(current.plan, result, seconds, state.global_vector, codec,
                                  optimizer, evaluate)
        record_round(state, outcome, optimizer, out)
        state.rounds[-1]["exchanges"] = transport.count - first
        save_checkpoint(out, state)
        record = outcome.record
        log(f"      round {r}: accuracy {record.test_accuracy:.4f}, included "
            f"{record.clients_included}/{record.clients_sampled}, train+masked input "
            f"{train_seconds:.2f} s, round {record.secagg_seconds:.2f} s, "
            f"{state.rounds[-1]['exchanges']} exchanges")
    metrics = write_outputs(out, state)
    metrics["setup_exchanges"] = setup_exchanges
    write_json(out / "metrics.json", metrics)
    np.savez(out / "sums.npz", **sums)
    write_json(out / "flower.json", {
        "nodes": {str(c): n for c, n in sorted(transport.nodes.items())},
        "setup_exchanges": setup_exchanges,
        "round_exchanges": [row["exchanges"] for row in state.rounds],
        "exchanges": transport.step_seconds})
    log(f"wrote {out / 'metrics.json'}")
    return metrics


def plain_round(transport: FlowerTransport, config: SimConfig, current: RoundSession, r: int,
                global_vector: np.ndarray, codec, options: FlowerOptions) -> AggregateResult:
    """``secagg=off``: train, then each trained node sends its vector in the clear."""
    if not current.cohort:
        raise SecAggAbort(Step.ADVERTISE_KEYS, 0, 1)
    replies = transport.exchange(wire.TRAIN, {
        c: RecordDict(recs) for c, recs in train_records(current.cohort, r,
                                                         global_vector).items()},
        options.train_timeout, f"round{r}/train")
    trained = check_trained(transport, r, replies)
    return aggregate(transport, config, f"round{r}", current.cohort, trained,
                     codec.vector_length, codec.modulus, options.step_timeout,
                     purpose=wire.PURPOSE_ROUND, round=r)


def build_server_app(overrides: Mapping | None = None, log: Log = _print) -> ServerApp:
    """The ServerApp; ``overrides`` are laid over the run config (for
    ``flwr.simulation.run_simulation``, which passes none)."""
    server_app = ServerApp()
    extra = dict(overrides or {})

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_pipeline(grid, {**context.run_config, **extra}, log)

    return server_app


app = build_server_app()
