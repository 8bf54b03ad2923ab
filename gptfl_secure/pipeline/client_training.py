"""What one client needs to train its round's update, and nothing of the server's: the model,
the local-training settings, the thread limits and the training seed.

A Flower node handles each training message in a fresh process, so everything imported here is
paid on every node in every round. This module and what it imports need torch and numpy, not
scipy, scikit-learn or the server's outputs; ``tests/flower/test_light_nodes.py`` checks the
modules a training step loads. The in-process driver (:mod:`.rounds`) and the sim's worker pool
train through the same functions, so every driver trains a client identically.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..learning.data import Dataset
from ..learning.local import LocalTrainingConfig, train_locally
from ..learning.models import build_model
from .codecs import CodecRound
from .config import RunConfig
from .seeds import training_seed

LocalTrainer = Callable[[nn.Module, np.ndarray, Dataset, LocalTrainingConfig, int, int],
                        np.ndarray]
"""``train(model, global_vector, data, config, seed, client_id) -> Δ``."""


def plain_local_training(model, global_vector, data, config, seed, _client_id):
    return train_locally(model, global_vector, data, config, seed=seed)


def train_client(train: LocalTrainer, model: nn.Module, global_vector: np.ndarray,
                 data: Dataset, local: LocalTrainingConfig, at: CodecRound) -> np.ndarray:
    """Client ``at.client``'s update Δ in round ``at.round``, from its training seed (the
    in-process driver and the Flower ClientApp both train through here)."""
    return train(model, global_vector, data, local,
                 training_seed(at.seed, at.round, at.client), at.client)


def new_model(config: RunConfig, data: Dataset) -> nn.Module:
    """The downstream model for ``data``, initialised from the run's seed."""
    torch.manual_seed(config.seed)
    name = config.effective_model
    if config.model == "auto" and data.x.shape[-2] != data.x.shape[-1]:
        name = "audio"  # (n, 1, n_mels, frames): a spectrogram
    return build_model(name, in_channels=data.x.shape[1], num_classes=len(data.label_names),
                       image_size=data.x.shape[-2])


def local_training(config: RunConfig) -> LocalTrainingConfig:
    """Each client's local-training settings."""
    return LocalTrainingConfig(config.local_epochs, config.batch_size, config.lr,
                               config.momentum, config.weight_decay, config.prox_mu)


def limit_threads(threads: int) -> None:
    """torch's intra-op pool and numpy's BLAS pool both default to every core; two pools of
    spinning workers on a small machine slow the tiny per-client steps many times over
    (benches/rounds_bench.py measures it)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
