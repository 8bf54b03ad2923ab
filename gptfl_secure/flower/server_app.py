"""The Flower ``ServerApp``: the GPT-FL pipeline with every sum computed by our masked-sum
protocol, Flower carrying the bytes.

enroll (identity keys, partition ids) → label discovery (IBLT sketches summed by one protocol
session over every node) → synthetic pretraining (on the server, as in the sim) → rounds: sample
the cohort with the sim's seeds, ``train`` messages carry the global model, then one protocol
session over the cohort sums the encoded updates; decode, server optimizer step, evaluate.

Each protocol step is one :meth:`Grid.send_and_receive` with the step's nodes, bounded by
``step-timeout``: a node whose reply has not arrived (a crashed SuperNode, a lost message, an
error reply) is a dropout, and :class:`SecAggServer` goes on as the protocol allows (dropout
recovery from the Shamir shares, or an abort below the threshold, which skips the round exactly
as the sim does). Outputs are the sim's (``metrics.json``, ``metrics.csv``, plots,
``transcript_summary.json``, ``checkpoint.npz``) plus ``flower.json`` (nodes, per-step wall
times) and ``sums.npz`` (each session's sum and included ids, and the global model at the start
of each round, for checking the run against the in-process sim).

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
from ..protocols.runner import MaskedSumResult, SessionStats, session_id_for
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
                 group: str, *, by_node: bool = False) -> dict[int, ConfigRecord]:
        """Send ``contents[cid]`` to each client's node; return ``{cid: reply record}`` for the
        replies that arrived in ``timeout`` seconds and are not errors."""
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
            if key is None or reply.has_error() or wire.RECORD not in reply.content:
                continue
            record = reply.content[wire.RECORD]
            if not isinstance(record, ConfigRecord):
                self.log(f"      {group}: reply of {key} carries a {type(record).__name__}, "
                         "not a ConfigRecord: dropout")
                continue
            out[key] = record
        self.step_seconds.append({"group": group, "seconds": round(seconds, 4),
                                  "sent": len(contents), "answered": len(out)})
        missing = sorted(set(contents) - set(out))
        if missing:
            self.log(f"      {group}: no reply from {missing} within {timeout:g} s: dropouts")
        return out


def enroll(transport: FlowerTransport, node_ids: list[int], clients: int,
           timeout: float) -> dict[int, bytes]:
    """Learn each node's partition id and identity public key; sets ``transport.nodes``.

    Here the key list comes from the nodes themselves at the start of the run; a real
    deployment enrolls identity keys out of band (see the README)."""
    contents = {n: RecordDict({wire.RECORD: ConfigRecord()}) for n in node_ids}
    replies = transport.exchange(wire.ENROLL, contents, timeout, "enroll", by_node=True)
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


def masked_sum(transport: FlowerTransport, name: str, header: wire.SessionHeader,
               speakers: set[int], timeout: float) -> AggregateResult:
    """One session of the masked-sum protocol over Flower messages.

    ``header.identity_keys`` are the session's clients; ``speakers`` those that are asked the
    first step (a client that could not prepare its input is silent from the start). A reply
    that :func:`read_step_reply` refuses makes its client a dropout (logged, and kept in
    ``stats.server_rejected``). Raises SecAggAbort below the threshold, like
    :func:`run_masked_sum`, with ``abort.partial`` the session's record up to the abort. The
    result carries the session id, identity keys and config, so it can be recorded
    (``record-transcript``)."""
    from ..protocols.session import run_session

    session_id = session_id_for(None)
    server = SecAggServer(header.cfg, header.identity_keys, session_id)
    stats = SessionStats()
    header_bytes = header.to_bytes()
    malformed: dict[int, str] = {}

    def exchange(step, outgoing: Mapping[int, bytes] | None) -> dict[int, bytes]:
        recipients = sorted(speakers) if outgoing is None else sorted(outgoing)
        contents = {}
        for cid in recipients:
            rec = {"session": session_id, "step": step.value,
                   "payload": b"" if outgoing is None else outgoing[cid]}
            if step is STEPS[0]:  # the first step carries the session header (client_app)
                rec["header"] = header_bytes
            contents[cid] = RecordDict({wire.RECORD: ConfigRecord(rec)})
        replies = transport.exchange(wire.SECAGG, contents, timeout, f"{name}/{step}")
        got = {}
        for cid, rec in sorted(replies.items()):
            try:
                payload, abort, seconds = read_step_reply(rec, header.cfg, step)
            except MalformedReply as exc:
                malformed[cid] = f"{step}: malformed reply ({exc})"
                transport.log(f"      {name}/{step}: client {cid} sent a malformed reply "
                              f"({exc}): dropout")
                continue
            stats.client_seconds[step][cid] = seconds
            if abort is not None:
                stats.client_aborts[cid] = abort
                transport.log(f"      {name}/{step}: client {cid} aborted: {abort}")
                continue
            got[cid] = payload
            stats.client_upload_bytes[step][cid] = len(payload)
        return got

    try:  # the protocol's own session driver, as run_masked_sum: a complete result or abort
        result: MaskedSumResult = run_session(server, header.identity_keys, exchange, stats)
    finally:
        stats.server_rejected.update(malformed)
    return AggregateResult(result.total, result.included, result)


def plain_exchange(transport: FlowerTransport, name: str, header: wire.SessionHeader,
                   speakers: set[int], timeout: float) -> AggregateResult:
    """``secagg=off``: each node sends its vector in the clear; the server adds them."""
    contents = {cid: RecordDict({wire.RECORD: ConfigRecord({"header": header.to_bytes()})})
                for cid in sorted(speakers)}
    replies = transport.exchange(wire.PLAIN, contents, timeout, f"{name}/plain")
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


def aggregate(transport: FlowerTransport, config: SimConfig, name: str,
              keys: Mapping[int, bytes], speakers: set[int], d: int, modulus: int,
              timeout: float, **purpose) -> AggregateResult:
    """The sum of the inputs of ``keys``' clients, the session parameters chosen as the sim's
    aggregator chooses them (complete graph or SecAgg+, t = floor(2n/3) + 1)."""
    if config.secagg == "off":
        # The threshold is unused by a plain sum; SecAggConfig requires a majority.
        cfg = SecAggConfig(len(keys), len(keys) // 2 + 1, d, modulus)
        return plain_exchange(transport, name, wire.SessionHeader(cfg, dict(keys), **purpose),
                              speakers, timeout)
    cfg = SecureAggregator(config.secagg, dropout_rate=config.dropout).config(len(keys), d,
                                                                               modulus)
    header = wire.SessionHeader(cfg, dict(keys), **purpose)
    return masked_sum(transport, name, header, speakers, timeout)


def discover(transport: FlowerTransport, config: SimConfig, keys: Mapping[int, bytes],
             options: FlowerOptions, log: Log, recorder=None):
    """GPT-FL step 1 over Flower: the pipeline's label-discovery loop
    (:func:`gptfl_secure.pipeline.discovery.discover_over`: one retry at double capacity when
    the sketch does not decode; a fresh session after an aborted one, up to
    ``ABORT_RETRIES``; :class:`LabelDiscoveryFailed` when every attempt aborts), each attempt
    one protocol session over the enrolled nodes."""
    from ..iblt import IbltParams
    from ..pipeline.discovery import discover_over

    log(f"[1/3] label discovery: {len(keys)} nodes encode their label names into IBLT "
        f"sketches, summed with secagg={config.secagg}")

    def sum_sketches(params: IbltParams, attempt: int) -> AggregateResult:
        return aggregate(transport, config, f"labels-{attempt}", keys, set(keys),
                         params.vector_length, params.modulus, options.step_timeout,
                         purpose=wire.PURPOSE_LABELS, iblt_capacity=params.capacity,
                         iblt_seed=params.seed)

    if recorder is not None:  # lists (and with record-transcript, records) every session
        sum_sketches = recorder.wrap(sum_sketches)
    return discover_over(config, sum_sketches, log)


def run_pipeline(grid: Grid, run_config: Mapping, log: Log = _print) -> dict:
    """The whole run; returns metrics.json's content. The stages are the pipeline's
    (:mod:`gptfl_secure.pipeline`); this driver adds enrolment, the ``train`` exchange and the
    protocol sessions over Flower messages."""
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

    log(f"[0/3] waiting for {config.clients} nodes (up to {options.enroll_timeout:g} s)")
    node_ids = transport.wait_for_nodes(config.clients, options.enroll_timeout)
    keys = enroll(transport, node_ids, config.clients, options.step_timeout)
    log(f"      enrolled {len(keys)} of {config.clients} clients: "
        f"{ {c: transport.nodes[c] for c in sorted(keys)} }")
    if not keys:
        raise RuntimeError("no node enrolled: start SuperNodes with --node-config partition-id=N")
    sums: dict[str, np.ndarray] = {}

    def keep(name: str, result: AggregateResult) -> None:
        sums[f"{name}_total"] = np.asarray(result.total, dtype=np.uint64)
        sums[f"{name}_included"] = np.array(sorted(result.included), dtype=np.int64)

    recorder = SessionRecorder(config, out, "label-discovery")
    try:
        found = discover(transport, config, keys, options, log, recorder)
    except Exception as exc:  # LabelDiscoveryFailed: say why in the run's log, then stop
        log(f"stopping: {exc}")
        raise
    keep("labels", found.session)
    state = initial_state(config, setup, found, recorder.sessions, log, out=out)
    save_checkpoint(out, state)

    codec = make_update_codec(config, len(state.global_vector))
    optimizer = new_optimizer(config)
    eval_model = new_model(config, setup.train)

    def evaluate(vector: np.ndarray) -> float:
        return accuracy(eval_model, setup.test, vector)

    log(f"[3/3] federated rounds: {config.rounds} x {config.cohort} of {config.clients} clients, "
        f"{config.strategy}, secagg={config.secagg}, {codec.modulus_bits}-bit ring, model of "
        f"{codec.dim} coordinates")
    for r in range(1, config.rounds + 1):
        sums[f"round{r}_global_in"] = state.global_vector.copy()
        plan = plan_round(r, clients=config.clients, cohort=config.cohort, seed=config.seed)
        cohort = {c: keys[c] for c in plan.sampled if c in keys}
        model_record = ArrayRecord({"global": Array(state.global_vector.astype(np.float32))})
        contents = {c: RecordDict({wire.MODEL: model_record,
                                   wire.RECORD: ConfigRecord({"round": r})}) for c in cohort}
        start = time.perf_counter()
        trained = {}
        for c, rec in transport.exchange(wire.TRAIN, contents, options.train_timeout,
                                         f"round{r}/train").items():
            try:
                read_train(rec)
            except MalformedReply as exc:
                log(f"      round{r}/train: client {c} sent a malformed reply ({exc}): dropout")
                continue
            trained[c] = rec
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        try:
            if not cohort:
                raise SecAggAbort(Step.ADVERTISE_KEYS, 0, 1)
            session = aggregate(transport, config, f"round{r}", cohort, set(trained),
                                codec.vector_length, codec.modulus, options.step_timeout,
                                purpose=wire.PURPOSE_ROUND, round=r)
        except SecAggAbort as abort:
            outcome = skip_round(plan, abort, time.perf_counter() - start, state.global_vector,
                                 evaluate)
            log(f"      round {r} skipped: {abort}")
        else:
            seconds = time.perf_counter() - start
            keep(f"round{r}", session)
            outcome = close_round(plan, session, seconds, state.global_vector, codec, optimizer,
                                  evaluate)
        record_round(state, outcome, optimizer, out)
        save_checkpoint(out, state)
        record = outcome.record
        log(f"      round {r}: accuracy {record.test_accuracy:.4f}, included "
            f"{record.clients_included}/{record.clients_sampled}, train {train_seconds:.2f} s, "
            f"secagg {record.secagg_seconds:.2f} s")
    metrics = write_outputs(out, state)
    np.savez(out / "sums.npz", **sums)
    write_json(out / "flower.json", {
        "nodes": {str(c): n for c, n in sorted(transport.nodes.items())},
        "exchanges": transport.step_seconds})
    log(f"wrote {out / 'metrics.json'}")
    return metrics


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
