"""The peer's ServerApp: Flower's ``DefaultWorkflow`` with ``SecAggPlusWorkflow`` as the fit
workflow and FedAvg over every node each round, the global model one flat float32 vector (as the
gptfl-secure app sends it). After each round the server evaluates the model on the test split
and prints ``round R: accuracy A`` (the line the bench timestamps). Writes ``peer.json`` in
``out-dir``: for each round the time it finished, the exchanges (``send_and_receive`` calls)
and the payload bytes the clients sent back (bytes values and array data of their replies)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow


def payload_bytes(content: RecordDict) -> int:
    """Bytes a reply carries as data: every bytes value (alone or in a list) of its config
    records and the data of every array of its array records."""
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            total += sum(len(array.data) for array in record.values())
        elif isinstance(record, ConfigRecord):
            for value in record.values():
                items = value if isinstance(value, list) else [value]
                total += sum(len(v) for v in items if isinstance(v, bytes))
    return total


class CountingGrid:
    """The run's Grid, counting exchanges and reply payload bytes per sending node."""

    def __init__(self, grid) -> None:
        self._grid = grid
        self.exchanges = 0
        self.uploads: dict[int, int] = {}

    def send_and_receive(self, messages, *, timeout=None):
        self.exchanges += 1
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if reply.has_content():
                node = reply.metadata.src_node_id
                self.uploads[node] = self.uploads.get(node, 0) + payload_bytes(reply.content)
        return replies

    def take(self) -> tuple[int, dict[int, int]]:
        out = (self.exchanges, self.uploads)
        self.exchanges, self.uploads = 0, {}
        return out

    def __getattr__(self, name):
        return getattr(self._grid, name)


app = ServerApp()


@app.main()
def main(grid, context: Context) -> None:
    from gptfl_secure.learning.local import evaluate, model_to_vector, vector_to_model

    from .task import load

    run_config = context.run_config
    config, setup, model = load(run_config)
    n = config.clients
    out = Path(str(run_config["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    counting = CountingGrid(grid)
    rounds: list[dict] = []

    def on_round(server_round, parameters, _config):
        vector = np.asarray(parameters[0], dtype=np.float32)
        vector_to_model(model, vector)
        acc = evaluate(model, setup.test)
        exchanges, uploads = counting.take()
        if server_round > 0:
            rounds.append({"round": server_round, "done": time.time(), "exchanges": exchanges,
                           "upload_bytes_per_client": (sum(uploads.values()) / len(uploads)
                                                       if uploads else 0),
                           "clients": len(uploads), "test_accuracy": acc})
            print(f"      round {server_round}: accuracy {acc:.4f}, exchanges {exchanges}",
                  flush=True)
        return 0.0, {"accuracy": acc}

    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
        initial_parameters=ndarrays_to_parameters([model_to_vector(model)]),
        evaluate_fn=on_round,
        on_fit_config_fn=lambda r: {"round": r})
    shares = int(run_config["num-shares"]) or n
    threshold = int(run_config["reconstruction-threshold"]) or (2 * n) // 3 + 1
    legacy = LegacyContext(context=context, config=ServerConfig(
        num_rounds=int(run_config["rounds"])), strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=shares, reconstruction_threshold=threshold,
        timeout=float(run_config["timeout"])))
    workflow(counting, legacy)
    (out / "peer.json").write_text(json.dumps({"clients": n, "num_shares": shares,
                                               "threshold": threshold, "rounds": rounds},
                                              indent=1))
    print(f"wrote {out / 'peer.json'}", flush=True)
