"""One federated round in process: the pipeline's round plan and close
(:mod:`gptfl_secure.pipeline.rounds`) around local training of every sampled client in this
process and an in-process aggregator (:mod:`gptfl_secure.pipeline.aggregation`).

plan (cohort, simulated dropouts) → each surviving client trains and encodes → aggregate with
the round's dropouts → close (decode, server step, evaluate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..learning.data import Dataset
from ..learning.local import LocalTrainingConfig
from ..learning.server_opt import ServerOptimizer
from ..pipeline import rounds as pipeline_rounds
from ..pipeline.aggregation import Aggregator
from ..pipeline.canaries import CanaryInsertion, join_canaries
from ..pipeline.codecs import RoundCodec
from ..pipeline.rounds import (
    LocalTrainer,
    RoundOutcome,
    close_round,
    plain_local_training,
    plan_round,
    skip_round,
    train_client,
)
from ..pipeline.sampling import CohortSampling
from ..pipeline.skips import doomed, skip_rule
from ..protocols import SecAggAbort
from ..protocols.config import Step, uploads_input


@dataclass
class RoundContext:
    """What every round needs and does not change between rounds."""

    train_parts: list[Dataset]
    test: Dataset
    global_model: nn.Module  # evaluated after each step
    scratch_model: nn.Module  # reused by every client's local training
    codec: RoundCodec
    local: LocalTrainingConfig
    aggregate: Aggregator
    cohort: int | CohortSampling  # the run's sampler (an int: exactly that many)
    dropout: float
    seed: int
    train: LocalTrainer = plain_local_training  # DP-SGD swaps in its own
    canaries: CanaryInsertion | None = None  # --dp-audit-canaries

    def evaluate(self, vector: np.ndarray) -> float:
        return pipeline_rounds.accuracy(self.global_model, self.test, vector)


def run_round(ctx: RoundContext, r: int, global_vector: np.ndarray,
              optimizer: ServerOptimizer) -> RoundOutcome:
    """Play round ``r`` from ``global_vector``; returns the new global vector and the metrics
    (a round whose masked sum aborts is skipped: see :func:`~gptfl_secure.pipeline.rounds.
    skip_round`)."""
    plan = plan_round(r, clients=len(ctx.train_parts), cohort=ctx.cohort, seed=ctx.seed,
                      dropout=ctx.dropout)
    if plan.skip is not None:  # a Poisson cohort out of range: nobody trains
        return skip_round(plan, plan.skip, 0.0, global_vector, ctx.evaluate)
    dropouts = dict(plan.dropouts)
    length = ctx.codec.vector_length
    contributions = {}
    rule = skip_rule(ctx.aggregate, len(plan.sampled))  # the dropouts may doom the round: the
    aborts = rule is not None and doomed(plan.dropouts, rule)  # sum aborts, whatever the vectors
    for cid in plan.sampled:
        if aborts or not uploads_input(dropouts.get(cid)):
            # never uploads, or the sum aborts: its vector is never read, so do not train it
            contributions[cid] = np.zeros(length, dtype=np.uint64)
            continue
        data = ctx.train_parts[cid]
        at = plan.at.for_client(cid)
        delta = train_client(ctx.train, ctx.scratch_model, global_vector, data, ctx.local, at)
        if not np.all(np.isfinite(delta)):
            # local training diverged (e.g. under heavy DP noise): the client has nothing
            # meaningful to send, so it drops before its masked input, as a real one would
            dropouts[cid] = Step.MASKED_INPUT
            contributions[cid] = np.zeros(length, dtype=np.uint64)
            continue
        contributions[cid] = ctx.codec.encode(delta, len(data), at)

    aggregate = join_canaries(ctx.canaries, plan, ctx.aggregate)
    start = time.perf_counter()
    try:
        session = aggregate(contributions, ctx.codec.modulus, dropouts)
    except SecAggAbort as abort:
        return skip_round(plan, abort, time.perf_counter() - start, global_vector, ctx.evaluate)
    seconds = time.perf_counter() - start
    return close_round(plan, session, seconds, global_vector, ctx.codec, optimizer,
                       ctx.evaluate)
