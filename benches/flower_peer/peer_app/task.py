"""The task both apps share: the run config's task keys as a gptfl_secure SimConfig, its data
(partitions from the same seed), model and local training. Imports torch: call only where
training or evaluation happens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TASK_KEYS = ("dataset", "clients", "alpha", "min-client-size", "test-fraction", "lr",
             "local-epochs", "batch-size", "momentum", "weight-decay", "seed", "threads")


def sim_config(run_config: Mapping[str, Any]):
    """The gptfl_secure run configuration of the task keys (random init: pretraining is not
    part of a round)."""
    from gptfl_secure.pipeline.config import SimConfig

    return SimConfig.from_mapping({k: run_config[k] for k in TASK_KEYS if k in run_config}
                                  | {"init": "random", "cohort": int(run_config["clients"])},
                                  source="peer run config")


def load(run_config: Mapping[str, Any]):
    """(config, data set-up, model) of the task, threads limited as the gptfl-secure app does."""
    from gptfl_secure.pipeline.setup import limit_threads, new_model, prepare_data

    config = sim_config(run_config)
    limit_threads(config.threads)
    setup = prepare_data(config)
    return config, setup, new_model(config, setup.train)


def load_partition(run_config: Mapping[str, Any], node_config: Mapping[str, Any], pid: int):
    """(config, partition ``pid``, model) for a node's ``fit``: the partition from the node's
    ``.npy`` cache, built from the data set (:func:`load`) the first time."""
    from gptfl_secure.flower import partitions
    from gptfl_secure.pipeline.client_training import limit_threads, new_model

    config = sim_config(run_config)
    root, key = partitions.cache_root(node_config), partitions.cache_key(run_config, pid)
    data = partitions.load(root, key)
    if data is None:
        _, setup, _ = load(run_config)
        data = setup.parts[pid]
        partitions.store(root, key, data)
    limit_threads(config.threads)
    return config, data, new_model(config, data)
