"""How long a run will take: a rough estimate before any work (:func:`rough_estimate`, from the
time of a few training steps on the task's model) and a measured one after the first round
(:func:`after_first_round`). Both are printed for a person; nothing depends on them."""

from __future__ import annotations

import math
import time

import numpy as np

from ..learning.pretrain import PretrainConfig
from .config import RunConfig


def format_duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3.5 min``, ``2.1 h``: two significant figures at most, for a
    person."""
    if seconds < 0.05:
        return "under 0.1 s"
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plural(count: int, noun: str) -> str:
    """``1 round``, ``2 rounds``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def after_first_round(r: int, seconds: float, remaining: int) -> str:
    """The line printed after the first round that trained (a skipped round costs less): its
    time and the remaining rounds' at the same pace."""
    line = f"      round {r} took {format_duration(seconds)}"
    if remaining > 0:
        line += (f"; about {format_duration(seconds * remaining)} for the remaining "
                 f"{plural(remaining, 'round')}")
    return line


def seconds_per_example(model, x: np.ndarray, y: np.ndarray, batch_size: int,
                        steps: int = 5) -> float:
    """Time of one SGD step per example on ``model`` (the best of ``steps`` steps after a
    warm-up), on a batch of ``x``/``y``. Trains ``model`` (with a zero learning rate)."""
    import torch
    from torch import nn

    from ..learning.sgd import MomentumSgd

    batch = min(batch_size, len(x))
    xb = torch.from_numpy(np.ascontiguousarray(x[:batch], dtype=np.float32))
    yb = torch.from_numpy(np.ascontiguousarray(y[:batch], dtype=np.int64))
    opt = MomentumSgd(model.parameters(), lr=0.0)  # no torch.optim: see learning/sgd.py
    best = math.inf
    model.train()
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            best = min(best, time.perf_counter() - start)
    return best / batch


def rough_estimate(config: RunConfig, setup) -> str:
    """A rough length of the run's training before it starts: pretraining on the synthetic set
    (every class x ``--synthetic-per-label`` examples, ``--pretrain-epochs``) and the rounds'
    local training (cohort x mean client size x ``--local-epochs``, less the expected dropouts),
    timed from a few training steps of the task's model in this process (torch's RNG is left as
    it was). Generation, label discovery, evaluation and the masked sums are not included."""
    import torch

    from .setup import limit_threads, new_model

    limit_threads(config.threads)  # as the run will train
    with torch.random.fork_rng():
        model = new_model(config, setup.train)
        per_example = seconds_per_example(model, setup.train.x, setup.train.y,
                                          config.batch_size)
        per_synthetic = seconds_per_example(model, setup.train.x, setup.train.y,
                                            PretrainConfig().batch_size)
    labels = len(setup.train.label_names)
    mean_size = float(np.mean([len(p) for p in setup.parts]))
    local = (config.rounds * config.cohort * (1 - config.dropout) * config.local_epochs
             * mean_size * per_example)
    parts = [f"local training over {plural(config.rounds, 'round')} about "
             f"{format_duration(local)}"]
    if config.init == "synthetic":
        pretrain = config.pretrain_epochs * labels * config.synthetic_per_label * per_synthetic
        parts.insert(0, f"pretraining about {format_duration(pretrain)}")
    return ("      rough estimate (timed from a few training steps; generation, evaluation and "
            f"the masked sums not included): {' and '.join(parts)}")
