"""One federated round, without its transport: the plan and the close.

plan (:func:`plan_round`): sample the cohort and the simulated dropouts from the run's public
seed streams → each client trains and encodes (:func:`train_client`, then the run's
:class:`~.codecs.RoundCodec`) → the driver sums the contributions (in process, or over Flower)
→ close (:func:`close_round`, or :func:`skip_round` when the sum aborted): decode the sum, server
optimizer step, evaluate on the server's test split → :func:`record_round`: the metrics row, the
transcript summary and (with ``record-transcript``) the session's record in the run state.

All randomness of round r is derived from ``(seed, r)``, so a round replays identically, which is
what makes ``--resume`` give the same metrics as an uninterrupted run. The protocol's keys and
masks are not derived from the seed: they come from the OS CSPRNG, and since the masked sum is
exact they do not change the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from ..learning.data import Dataset
from ..learning.local import evaluate, vector_to_model
from ..learning.server_opt import ServerOptimizer
from ..protocols import STEPS, MaskedSumResult, SecAggAbort
from .aggregation import AggregateResult
from .client_training import LocalTrainer, plain_local_training, train_client  # noqa: F401
from .codecs import CodecRound, RoundCodec
from .outputs import record_transcript, summarize_session
from .sampling import CohortOutOfRange, CohortSampling
from .seeds import dropout_rng
from .state import RunState


def sample_dropouts(cohort: Sequence[int], rate: float, rng: np.random.Generator) -> dict[int, str]:
    """Each client independently drops with probability ``rate``, at a uniformly chosen step."""
    drops = rng.random(len(cohort)) < rate
    steps = rng.integers(0, len(STEPS), size=len(cohort))
    return {int(c): STEPS[int(s)] for c, d, s in zip(cohort, drops, steps, strict=True) if d}


@dataclass(frozen=True)
class RoundPlan:
    """Who takes part in round ``round``: the sampled cohort and, in the in-process driver, the
    simulated dropouts (client id -> the protocol step it drops at). ``skip`` is set when a
    Poisson cohort is out of range: the driver then skips the round (:func:`skip_round`)
    without training anyone."""

    round: int
    seed: int
    sampled: list[int]
    dropouts: dict[int, str] = field(default_factory=dict)
    skip: CohortOutOfRange | None = None

    @property
    def at(self) -> CodecRound:
        """The round's codec context (the server's: no client)."""
        return CodecRound(self.seed, self.round)


def plan_round(r: int, *, clients: int, cohort: int | CohortSampling, seed: int,
               dropout: float = 0.0) -> RoundPlan:
    """Sample round ``r``'s cohort (and, with ``dropout`` > 0, its simulated dropouts) from the
    public stream :func:`~.seeds.sampling_rng` of (seed, r). ``cohort``: an int (exactly that
    many, without replacement) or the run's :class:`~.sampling.CohortSampling`."""
    sampler = cohort if isinstance(cohort, CohortSampling) else CohortSampling(clients, cohort)
    if sampler.clients != clients:
        raise ValueError(f"the sampler draws from {sampler.clients} clients, the round has "
                         f"{clients}")
    sampled, skip = sampler.round_cohort(seed, r)
    if skip is not None:
        return RoundPlan(r, seed, [int(c) for c in sampled], {}, skip)
    dropouts = sample_dropouts(sampled, dropout, dropout_rng(seed, r)) if dropout else {}
    return RoundPlan(r, seed, [int(c) for c in sampled], dropouts)




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


def accuracy(model: nn.Module, test: Dataset, vector: np.ndarray) -> float:
    """Test accuracy of the global model ``vector`` (loaded into ``model``)."""
    vector_to_model(model, vector)
    return evaluate(model, test)


Evaluate = Callable[[np.ndarray], float]


def skip_round(plan: RoundPlan, abort: SecAggAbort | CohortOutOfRange, seconds: float,
               global_vector: np.ndarray, evaluate_: Evaluate) -> RoundOutcome:
    """A round whose masked sum aborted (fewer survivors than the threshold), or whose Poisson
    cohort was out of range (``plan.skip``): the global model and the optimizer state stay as
    they were; ``partial`` holds an aborted session's record, for ``record-transcript``."""
    record = RoundRecord(plan.round, evaluate_(global_vector), len(plan.sampled), 0, 0, seconds,
                         None, skipped=True, skip_reason=str(abort))
    return RoundOutcome(record, global_vector, None, abort.partial)


def close_round(plan: RoundPlan, session: AggregateResult, seconds: float,
                global_vector: np.ndarray, codec: RoundCodec, optimizer: ServerOptimizer,
                evaluate_: Evaluate) -> RoundOutcome:
    """Decode the sum, take the server optimizer's step, evaluate the new global model."""
    decoded = codec.decode(session.total, len(session.included), plan.at)
    new_vector = optimizer.step(global_vector, decoded.mean_update).astype(np.float32)
    record = RoundRecord(
        round=plan.round,
        test_accuracy=evaluate_(new_vector),
        clients_sampled=len(plan.sampled),
        clients_included=len(session.included),
        upload_bytes_per_client=session.upload_bytes_per_client(codec.vector_length,
                                                                codec.modulus),
        secagg_seconds=seconds,
        gradient_diversity=decoded.gradient_diversity,
    )
    return RoundOutcome(record, new_vector, session)


def record_round(state: RunState, outcome: RoundOutcome, optimizer: ServerOptimizer,
                 out: Path | None) -> None:
    """Fold a played round into the run state: the new global model and optimizer state, the
    metrics row, the transcript summary and (with ``record-transcript``) the session's record
    under ``out/transcripts/``."""
    r = outcome.record.round
    state.global_vector = outcome.global_vector
    state.optimizer_state = optimizer.state_dict()
    state.rounds.append(outcome.record.to_json())
    summary = summarize_session(f"round {r}", outcome.session)
    recorded = record_transcript(state.config, out, f"round-{r:04d}",
                                 outcome.session or outcome.partial)
    summary["sessions"] = [recorded] if recorded else []
    state.transcript.append(summary)
