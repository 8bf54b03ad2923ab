"""One federated round through the masked sum.

sample the cohort → local training → encode (clip, weight, quantize into Z_2^k) → masked sum
with the round's dropouts → decode the sum → server optimizer step → evaluate on the server's
test split.

All randomness of round r is derived from ``(seed, r)``, so a round replays identically, which is
what makes ``--resume`` give the same metrics as an uninterrupted run. The protocol's keys and
masks are not derived from the seed: they come from the OS CSPRNG, and since the masked sum is
exact they do not change the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..learning.data import Dataset
from ..learning.local import LocalTrainingConfig, evaluate, train_locally, vector_to_model
from ..learning.partition import sample_clients
from ..learning.quantize import UpdateCodec
from ..learning.server_opt import ServerOptimizer
from ..privacy.distributed import DistributedDPCodec
from ..privacy.hadamard import round_seed
from ..privacy.rng import noise_generator
from ..protocols import STEPS, MaskedSumResult, SecAggAbort
from ..protocols.config import uploads_input
from .aggregation import AggregateResult, Aggregator
from .seeds import dropout_rng, rounding_rng, sampling_rng, training_seed

LocalTrainer = Callable[[nn.Module, np.ndarray, Dataset, LocalTrainingConfig, int, int],
                        np.ndarray]
"""``train(model, global_vector, data, config, seed, client_id) -> Δ``."""


def plain_local_training(model, global_vector, data, config, seed, _client_id):
    return train_locally(model, global_vector, data, config, seed=seed)


def sample_dropouts(cohort: Sequence[int], rate: float, rng: np.random.Generator) -> dict[int, str]:
    """Each client independently drops with probability ``rate``, at a uniformly chosen step."""
    drops = rng.random(len(cohort)) < rate
    steps = rng.integers(0, len(STEPS), size=len(cohort))
    return {int(c): STEPS[int(s)] for c, d, s in zip(cohort, drops, steps, strict=True) if d}


@dataclass(frozen=True)
class RoundRecord:
    """One row of ``metrics.json``'s ``rounds``, plus ``skipped`` and its reason."""

    round: int
    test_accuracy: float
    clients_sampled: int
    clients_included: int
    upload_bytes_per_client: int
    secagg_seconds: float
    gradient_diversity: float | None
    skipped: bool = False
    skip_reason: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RoundOutcome:
    record: RoundRecord
    global_vector: np.ndarray
    session: AggregateResult | None
    partial: MaskedSumResult | None = None  # an aborted session's record (SecAggAbort.partial)


@dataclass
class RoundContext:
    """What every round needs and does not change between rounds."""

    train_parts: list[Dataset]
    test: Dataset
    global_model: nn.Module  # evaluated after each step
    scratch_model: nn.Module  # reused by every client's local training
    codec: UpdateCodec
    local: LocalTrainingConfig
    aggregate: Aggregator
    cohort: int
    dropout: float
    seed: int
    dp_codec: DistributedDPCodec | None = None  # distributed DP replaces ``codec`` when set
    train: LocalTrainer = plain_local_training  # DP-SGD swaps in its own


def run_round(ctx: RoundContext, r: int, global_vector: np.ndarray,
              optimizer: ServerOptimizer) -> RoundOutcome:
    """Play round ``r`` from ``global_vector``; returns the new global vector and the metrics.

    A round whose masked sum aborts (fewer survivors than the threshold) is skipped and logged:
    the global model and the optimizer state stay as they were; the outcome's ``partial`` holds
    the aborted session's record, for ``--record-transcript``.
    """
    sampled = sample_clients(len(ctx.train_parts), ctx.cohort, sampling_rng(ctx.seed, r))
    dropouts = sample_dropouts(sampled, ctx.dropout, dropout_rng(ctx.seed, r))
    dp = ctx.dp_codec
    length = dp.vector_length if dp else ctx.codec.vector_length
    rotation = round_seed(ctx.seed, r)  # public: every party derives the same one
    contributions = {}
    for cid in map(int, sampled):
        if not uploads_input(dropouts.get(cid)):
            # never uploads: its vector is never read, so do not spend time training it
            contributions[cid] = np.zeros(length, dtype=np.uint64)
            continue
        data = ctx.train_parts[cid]
        delta = ctx.train(ctx.scratch_model, global_vector, data, ctx.local,
                          training_seed(ctx.seed, r, cid), cid)
        if not np.all(np.isfinite(delta)):
            # local training diverged (e.g. under heavy DP noise): the client has nothing
            # meaningful to send, so it drops before its masked input, as a real one would
            dropouts[cid] = "masked_input"
            contributions[cid] = np.zeros(length, dtype=np.uint64)
            continue
        if dp:  # rounding and noise from the client's private CSPRNG-seeded generator
            contributions[cid] = dp.encode(delta, noise_generator(), rotation)
        else:
            contributions[cid] = ctx.codec.encode(delta, len(data),
                                                  rounding_rng(ctx.seed, r, cid))

    start = time.perf_counter()
    try:
        session = ctx.aggregate(contributions, dp.modulus if dp else ctx.codec.modulus, dropouts)
    except SecAggAbort as abort:
        seconds = time.perf_counter() - start
        record = RoundRecord(r, _accuracy(ctx, global_vector), len(sampled), 0, 0, seconds, None,
                             skipped=True, skip_reason=str(abort))
        return RoundOutcome(record, global_vector, None, abort.partial)
    seconds = time.perf_counter() - start

    if dp:  # unweighted mean of clipped updates plus the summed noise; no per-client norms
        mean = dp.decode(session.total, len(session.included), rotation).mean_update()
        diversity = float("nan")
    else:
        decoded = ctx.codec.decode(session.total, len(session.included))
        mean = decoded.mean_update()
        diversity = decoded.gradient_diversity()
    new_vector = optimizer.step(global_vector, mean).astype(np.float32)
    record = RoundRecord(
        round=r,
        test_accuracy=_accuracy(ctx, new_vector),
        clients_sampled=len(sampled),
        clients_included=len(session.included),
        upload_bytes_per_client=session.upload_bytes_per_client(
            length, dp.modulus if dp else ctx.codec.modulus),
        secagg_seconds=seconds,
        gradient_diversity=None if np.isnan(diversity) else float(diversity),
    )
    return RoundOutcome(record, new_vector, session)


def _accuracy(ctx: RoundContext, vector: np.ndarray) -> float:
    vector_to_model(ctx.global_model, vector)
    return evaluate(ctx.global_model, ctx.test)
