"""Local training on one client's data, model <-> flat vector, and evaluation.

The federated model state is every floating-point tensor of the model's ``state_dict`` (weights
and, for BatchNorm, the running statistics), flattened in ``state_dict`` order. Integer buffers
(BatchNorm's ``num_batches_tracked``) stay local and are not aggregated.

Training and evaluation run on the device the model is on (its first parameter's); the flat
vector is always a CPU numpy array, so each call crosses between host and device once each way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Dataset
from .sgd import MomentumSgd


def float_state_keys(model: nn.Module) -> list[str]:
    return [k for k, v in model.state_dict().items() if v.is_floating_point()]


def model_to_vector(model: nn.Module) -> np.ndarray:
    """The model's floating-point state as one float32 CPU vector (a copy: ``torch.cat``
    allocates, and a GPU model's state is copied to the host once, after the concatenation)."""
    state = model.state_dict()
    return torch.cat([state[k].detach().reshape(-1).float() for k in float_state_keys(model)]
                     ).cpu().numpy()


def vector_to_model(model: nn.Module, vector: np.ndarray) -> None:
    """Load ``vector`` (as produced by :func:`model_to_vector`) into ``model`` in place."""
    state = model.state_dict()
    flat = torch.as_tensor(np.asarray(vector, dtype=np.float32)).to(model_device(model))
    keys = float_state_keys(model)
    expected = sum(state[k].numel() for k in keys)
    if flat.numel() != expected:
        raise ValueError(f"vector has {flat.numel()} entries; the model has {expected}")
    offset = 0
    with torch.no_grad():
        for k in keys:
            n = state[k].numel()
            state[k].copy_(flat[offset:offset + n].reshape(state[k].shape))
            offset += n


@dataclass(frozen=True)
class LocalTrainingConfig:
    """SGD with momentum and weight decay; ``prox_mu`` > 0 adds FedProx's (mu/2)·||w - w_g||²."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs}: must be an int >= 1")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be an int >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr}: must be a finite number > 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum}: must be in [0, 1)")
        if self.weight_decay < 0 or self.prox_mu < 0:
            raise ValueError("weight_decay and prox_mu must be >= 0")


def train_locally(model: nn.Module, global_vector: np.ndarray, data: Dataset,
                  config: LocalTrainingConfig, seed: int) -> np.ndarray:
    """Start ``model`` from ``global_vector``, train on ``data``, return Δ = new - global.

    Deterministic in ``seed`` (batch order and any randomness in the model). ``model`` is a
    scratch module reused across clients; its previous contents are overwritten.
    """
    if len(data) == 0:
        raise ValueError("a client with no examples cannot train")
    vector_to_model(model, global_vector)
    device = model_device(model)
    if device.type == "cpu":  # the same CPU generator state, without torch.manual_seed's
        torch.default_generator.manual_seed(seed)  # per-call CUDA bookkeeping (~1 ms)
    else:
        torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    anchor = ([p.detach().clone() for p in model.parameters()] if config.prox_mu > 0 else None)
    opt = MomentumSgd(model.parameters(), lr=config.lr, momentum=config.momentum,
                      weight_decay=config.weight_decay)
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    model.train()
    for _ in range(config.epochs):
        order = torch.from_numpy(rng.permutation(len(data))).to(device)
        for start in range(0, len(data), config.batch_size):
            idx = order[start:start + config.batch_size]
            if len(idx) < 2 and _has_batchnorm(model):
                continue  # BatchNorm cannot normalise a batch of one
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor,
                                                                strict=True))
                loss = loss + 0.5 * config.prox_mu * prox
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model_to_vector(model) - np.asarray(global_vector, dtype=np.float32)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a stateless model."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


EVAL_BATCH = 512
"""Examples per forward pass of :func:`evaluate` and :func:`count_correct`."""


def evaluate(model: nn.Module, data: Dataset, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty data set")
    return count_correct(model, data, batch_size=batch_size) / len(data)


@torch.no_grad()
def count_correct(model: nn.Module, data: Dataset, start: int = 0, stop: int | None = None,
                  batch_size: int = EVAL_BATCH) -> int:
    """How many of ``data[start:stop]`` ``model`` classifies right, in forward passes of
    ``batch_size`` examples from ``start``. A shard that starts at a multiple of ``batch_size``
    makes the same passes, hence the same logits, as the whole set does, so the counts of
    shards cut there (:func:`eval_shards`) add up to the whole set's count exactly."""
    stop = len(data) if stop is None else stop
    model.eval()
    device = model_device(model)
    correct = 0
    for begin in range(start, stop, batch_size):
        end = min(begin + batch_size, stop)
        xb = torch.from_numpy(data.x[begin:end]).to(device)
        pred = model(xb).argmax(dim=1).cpu().numpy()
        correct += int((pred == data.y[begin:end]).sum())
    return correct


def eval_shards(n: int, shards: int, batch_size: int = EVAL_BATCH) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges that cover ``range(n)`` in at most ``shards`` pieces of whole
    forward passes of ``batch_size`` (the last pass may be short), as even as the passes allow."""
    passes = -(-n // batch_size)
    shards = max(1, min(shards, passes))
    bounds = [min(n, (i * passes // shards) * batch_size) for i in range(shards + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
