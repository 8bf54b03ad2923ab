"""What each exchange costs a node that starts cold: Flower (1.42) handles every message in a
fresh ``flwr-clientapp`` process, so a step's price is the interpreter's start, the imports and
the handling itself.

``python -m gptfl_secure.flower.coldstart`` runs the app's real schedule in process (enrolment,
label discovery with round 1's key set-up riding along, round 1, round 2's set-up) over in-process
nodes, keeps node 0's message and state before each exchange, then replays each one in a fresh
Python process that imports the ClientApp and handles it through ``ClientApp.__call__``, as
``flwr-clientapp`` does. Per exchange it prints the wall time of that process (start to exit),
the time of the imports and of the handling, and whether torch or scikit-learn (the data set
loader) were imported. Flower's own per-process overhead (reinstalling the app, the SuperNode's
polling) comes on top and is the same for every exchange.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from flwr.app import Context, Message, Metadata, RecordDict

from . import wire

HEAVY = ("torch", "torch._dynamo", "scipy", "sklearn")
"""Modules whose import a step must not pay unless it needs them: a protocol-only step needs
none; a training step needs torch alone (not ``torch._dynamo``, which ``torch.optim`` pulls in,
nor scipy or the data set loader scikit-learn), about 1 s of CPU each."""


def node_message(content: RecordDict, message_type: str, node: int) -> Message:
    """A message as a SuperNode hands it to its ClientApp."""
    return Message(content, metadata=Metadata(
        run_id=1, message_id=f"m{time.monotonic_ns()}", src_node_id=1, dst_node_id=node,
        reply_to_message_id="", group_id="g", created_at=time.time(), ttl=600.0,
        message_type=message_type))


class CapturingNodes:
    """An in-process stand-in for :class:`~.server_app.FlowerTransport`: every message goes to
    ``client_app.app`` with its node's Context; node ``watch``'s message and state before each
    exchange are kept in ``captured`` as pickled bytes, by the exchange's group."""

    def __init__(self, n: int, run_config: Mapping, cache: Path, watch: int = 0) -> None:
        self.contexts = {c: Context(run_id=1, node_id=100 + c, node_config={
            "partition-id": c, "partition-cache": str(cache)}, state=RecordDict(),
            run_config=dict(run_config)) for c in range(n)}
        self.nodes = {c: 100 + c for c in range(n)}
        self.watch = watch
        self.captured: dict[str, bytes] = {}
        self.step_seconds: list[dict] = []
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    @property
    def count(self) -> int:
        return len(self.step_seconds)

    def exchange(self, message_type, contents, timeout, group, *, by_node=False):
        from .client_app import app

        out = {}
        for key, content in contents.items():
            cid = key - 100 if by_node else key
            message = node_message(content, message_type, 100 + cid)
            if cid == self.watch:
                self.captured[group] = pickle.dumps((message, self.contexts[cid]))
            out[key] = app(message, self.contexts[cid]).content
        self.step_seconds.append({"group": group})
        return out


def capture(run_config: Mapping, work: Path) -> dict[str, bytes]:
    """Node 0's (message, context) before each exchange of the set-up, round 1 and round 2's
    key set-up, by exchange group (``enroll``, ``labels-1/advertise_keys+round1/...``)."""
    from ..learning.local import model_to_vector
    from ..pipeline.codecs import make_update_codec
    from ..pipeline.discovery import label_params
    from ..pipeline.setup import new_model, prepare_data
    from .options import parse_run_config
    from .server_app import (
        FlowerSession,
        enroll,
        exchange_steps,
        masked_sum,
        session_header,
        train_records,
    )

    config, _ = parse_run_config(dict(run_config))
    nodes = CapturingNodes(config.clients, run_config, work / "cache")
    keys = enroll(nodes, sorted(nodes.nodes.values()), config.clients, 60.0)
    setup = prepare_data(config)
    vector = model_to_vector(new_model(config, setup.train))
    codec = make_update_codec(config, len(vector))

    def round_session(r: int) -> FlowerSession:
        header = session_header(config, keys, codec.vector_length, codec.modulus,
                                purpose=wire.PURPOSE_ROUND, round=r)
        return FlowerSession(nodes.log, f"round{r}", header, set(keys))

    first, second = round_session(1), round_session(2)
    params = label_params(config)
    masked_sum(nodes, "labels-1", session_header(
        config, keys, params.vector_length, params.modulus, purpose=wire.PURPOSE_LABELS,
        iblt_capacity=params.capacity, iblt_seed=params.seed), set(keys), 60.0, (first,))
    exchange_steps(nodes, [first], 600.0, message_type=wire.TRAIN,
                   extra=train_records(first.steps.outgoing, 1, vector))
    for _ in range(2):
        exchange_steps(nodes, [first, second], 60.0)
    first.result()
    return nodes.captured


def handle(paths: list[str], started: float) -> list[dict]:
    """Handle the captured messages in ``paths``, in order, in this (fresh) process: for each,
    the seconds from ``started`` (the interpreter's first line) to the handler and of the
    handling, the protocol aborts or error of the reply, and which heavy modules are imported
    by then."""
    rows = []
    for path in paths:
        with open(path, "rb") as f:
            message, context = pickle.load(f)
        from gptfl_secure.flower.client_app import app

        ready = time.perf_counter()
        reply = app(message, context)
        done = time.perf_counter()
        aborts = [str(rec["abort"]) for _, rec in reply.content.items()
                  if hasattr(rec, "get") and rec.get("abort") is not None]
        rows.append({"start_seconds": ready - started, "handle_seconds": done - ready,
                     "aborts": aborts, "error": reply.has_error(),
                     "imported": {m: m in sys.modules for m in HEAVY}})
        started = done
    return rows


def replay(blobs: Mapping[str, bytes], work: Path) -> list[dict]:
    """Run :func:`handle` on ``blobs`` (by name) in one fresh Python process, in order; the
    process's wall seconds are in each row's ``process_seconds``."""
    paths = []
    for i, blob in enumerate(blobs.values()):
        paths.append(work / f"x{i}.pkl")
        paths[-1].write_bytes(blob)
    code = ("import time; started = time.perf_counter(); import json, sys; "
            "from gptfl_secure.flower.coldstart import handle; "
            "print(json.dumps(handle(sys.argv[1:], started)))")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{list(blobs)}: the fresh process failed:\n{proc.stderr[-3000:]}")
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    return [{"exchange": name, "process_seconds": wall, **row}
            for name, row in zip(blobs, rows, strict=True)]


def without_cache(blob: bytes, cache: Path) -> bytes:
    """A captured (message, context) whose node keeps its partitions in ``cache`` instead."""
    message, context = pickle.loads(blob)
    context.node_config["partition-cache"] = str(cache)
    return pickle.dumps((message, context))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-config", default="",
                        help="space-separated key=value overrides (the app's keys)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per exchange")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    run_config = {"label-capacity": 50, "local-epochs": 5}
    for pair in args.run_config.split():
        key, _, value = pair.partition("=")
        try:
            run_config[key] = json.loads(value)
        except ValueError:  # a bare string: secagg=plus
            run_config[key] = value
    with tempfile.TemporaryDirectory(prefix="gptfl-coldstart-") as tmp:
        work = Path(tmp)
        captured = capture(run_config, work)
        rows = []
        cold = "enroll (no partition cache yet)"
        for group in [cold, *captured]:
            if group == cold:  # each repeat starts from its own empty cache
                runs = [replay({group: without_cache(captured["enroll"], work / f"empty-{i}")},
                               work)[0] for i in range(args.repeats)]
            else:
                runs = [replay({group: captured[group]}, work)[0] for _ in range(args.repeats)]
            best = min(runs, key=lambda row: row["process_seconds"])
            rows.append({**best, "process_seconds_all": [round(r["process_seconds"], 3)
                                                         for r in runs]})
    print(f"{'exchange (node 0, fresh process)':<50} {'process s':>9} {'to handler':>10} "
          f"{'handle s':>8}  imported  ok")
    for row in rows:
        ok = not row["error"] and not row["aborts"]
        heavy = ", ".join(m for m in HEAVY if row["imported"][m]) or "-"
        print(f"{row['exchange'][:50]:<50} {row['process_seconds']:9.2f} "
              f"{row['start_seconds']:10.2f} {row['handle_seconds']:8.2f}  {heavy:<8}  {ok}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
