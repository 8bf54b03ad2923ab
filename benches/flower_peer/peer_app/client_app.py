"""The peer's ClientApp: Flower's ``secaggplus_mod`` around a NumPyClient whose ``fit`` trains the
gptfl-secure model on this node's partition (``--node-config partition-id=N``) with the
gptfl-secure local training. Only ``fit`` imports torch and reads the data; the SecAgg+ stages
are handled by the mod alone. Like the gptfl-secure node, ``fit`` reads only its own partition
from the node's ``.npy`` cache (``gptfl_secure.flower.partitions``; built by the first ``fit``)
and imports only what training needs (``gptfl_secure.pipeline.client_training``), so that a
training exchange costs both apps the same and the bench compares the protocols' exchanges."""

from __future__ import annotations

import numpy as np
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Context


class TaskClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context

    def fit(self, parameters, config):
        from gptfl_secure.learning.local import train_locally
        from gptfl_secure.pipeline.client_training import local_training

        from .task import load_partition

        pid = int(self.context.node_config["partition-id"])
        cfg, data, model = load_partition(self.context.run_config, self.context.node_config, pid)
        global_vector = np.asarray(parameters[0], dtype=np.float32)
        delta = train_locally(model, global_vector, data, local_training(cfg),
                              seed=cfg.seed * 1_000_003 + 1_009 * int(config.get("round", 0))
                              + pid)
        return [global_vector + delta], len(data), {}


def client_fn(context: Context):
    return TaskClient(context).to_client()


app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
