"""One federated round in process: the pipeline's round plan and close
(:mod:`gptfl_secure.pipeline.rounds`) around local training of every sampled client in this
process and an in-process aggregator (:mod:`gptfl_secure.pipeline.aggregation`).

plan (cohort, simulated dropouts) → every surviving client trains (one after another here, or
concurrently in a :class:`~.workers.ClientPool`: the same updates either way; or, with
``--client-batching vmap``, stacked into batches: the same updates up to float rounding) → each
encodes its update → aggregate with the round's dropouts → close (decode, server step, evaluate:
in the pool's workers, in shards, when the test split is large enough, the same accuracy either
way).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..learning.batched import train_in_batches
from ..learning.data import Dataset
from ..learning.local import LocalTrainingConfig
from ..learning.server_opt import ServerOptimizer
from ..pipeline import rounds as pipeline_rounds
from ..pipeline.aggregation import Aggregator
from ..pipeline.canaries import CanaryInsertion, join_canaries
from ..pipeline.codecs import CodecRound, RoundCodec
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
from ..pipeline.seeds import training_seed
from ..pipeline.skips import doomed, skip_rule
from ..protocols import SecAggAbort
from ..protocols.config import Step, uploads_input
from .workers import ClientPool


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
    pool: ClientPool | None = None  # trains (plain_local_training) and evaluates in workers
    batched: bool = False  # without a pool: the clients in vmap batches (--client-batching)

    def evaluate(self, vector: np.ndarray) -> float:
        """Test accuracy of ``vector``: in the pool's workers, in shards, when the pool
        evaluates (a test split of at least :data:`~.workers.EVAL_IN_POOL_FROM` examples), else
        with ``global_model`` here; the same float either way."""
        if self.pool is not None and self.pool.evaluates:
            return self.pool.accuracy(vector)
        return pipeline_rounds.accuracy(self.global_model, self.test, vector)

    def train_clients(self, global_vector: np.ndarray, clients: Sequence[CodecRound]
                      ) -> dict[int, np.ndarray]:
        """``{client: Δ}`` for ``clients`` (each a client's codec context in the round): in the
        pool when there is one (batched there when the pool is), else with ``batched`` in the
        same batches one after another (:func:`~gptfl_secure.learning.batched.
        train_in_batches` on the scratch model), else one after another with ``train`` and the
        scratch model."""
        if self.pool is not None:
            return self.pool.train(global_vector, clients)
        if self.batched:
            deltas = train_in_batches(
                self.scratch_model, global_vector, [self.train_parts[at.client] for at in clients],
                self.local, [training_seed(at.seed, at.round, at.client) for at in clients])
            return {at.client: delta for at, delta in zip(clients, deltas, strict=True)}
        return {at.client: train_client(self.train, self.scratch_model, global_vector,
                                        self.train_parts[at.client], self.local, at)
                for at in clients}


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
    rule = skip_rule(ctx.aggregate, len(plan.sampled))  # the dropouts may doom the round: the
    aborts = rule is not None and doomed(plan.dropouts, rule)  # sum aborts, whatever the vectors
    # a client that never uploads, or whose sum aborts, is not trained: its vector is never read
    deltas = ctx.train_clients(global_vector, [] if aborts else [
        plan.at.for_client(cid) for cid in plan.sampled if uploads_input(dropouts.get(cid))])
    contributions = {}
    for cid in plan.sampled:
        delta = deltas.get(cid)
        if delta is None:
            contributions[cid] = np.zeros(length, dtype=np.uint64)
            continue
        if not np.all(np.isfinite(delta)):
            # local training diverged (e.g. under heavy DP noise): the client has nothing
            # meaningful to send, so it drops before its masked input, as a real one would
            dropouts[cid] = Step.MASKED_INPUT
            contributions[cid] = np.zeros(length, dtype=np.uint64)
            continue
        contributions[cid] = ctx.codec.encode(delta, len(ctx.train_parts[cid]),
                                              plan.at.for_client(cid))

    aggregate = join_canaries(ctx.canaries, plan, ctx.aggregate)
    start = time.perf_counter()
    try:
        session = aggregate(contributions, ctx.codec.modulus, dropouts)
    except SecAggAbort as abort:
        return skip_round(plan, abort, time.perf_counter() - start, global_vector, ctx.evaluate)
    seconds = time.perf_counter() - start
    return close_round(plan, session, seconds, global_vector, ctx.codec, optimizer,
                       ctx.evaluate)
