"""Centralized pretraining on the synthetic set (GPT-FL step 2): the server trains the downstream
model on generated data only, then hands it to the federated rounds as the initial global model.

AdamW with a large weight decay and cosine learning-rate decay to zero, batch 32, as in the
paper's centralized training on synthetic data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Dataset


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 0.1
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}: must be an int >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr}: must be a finite number > 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay}: must be >= 0")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be an int >= 1")


EpochHook = Callable[[int, float, float], None]
"""``on_epoch(epoch, mean training loss, training accuracy)``, epochs counted from 1."""


def pretrain(model: nn.Module, synthetic: Dataset, config: PretrainConfig, seed: int,
             on_epoch: EpochHook | None = None) -> nn.Module:
    """Train ``model`` in place on ``synthetic``; deterministic in ``seed``. Returns the model.
    ``on_epoch`` sees each epoch's mean loss and accuracy over its batches (as trained: the
    model changes during the epoch); the weights do not depend on it."""
    if len(synthetic) == 0:
        raise ValueError("the synthetic set is empty: nothing to pretrain on")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device  # the model's device trains the model
    x = torch.from_numpy(np.ascontiguousarray(synthetic.x, dtype=np.float32)).to(device)
    y = torch.from_numpy(np.ascontiguousarray(synthetic.y, dtype=np.int64)).to(device)
    steps_per_epoch = math.ceil(len(synthetic) / config.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs *
                                                          steps_per_epoch)
    model.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.from_numpy(rng.permutation(len(synthetic))).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, len(synthetic), config.batch_size):
            idx = order[start:start + config.batch_size]
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            if on_epoch is not None:
                loss_sum += loss.detach() * len(idx)
                correct += (logits.detach().argmax(1) == y[idx]).sum()
        if on_epoch is not None:
            n = len(synthetic)
            on_epoch(epoch, loss_sum.item() / n, correct.item() / n)
    model.eval()
    return model
