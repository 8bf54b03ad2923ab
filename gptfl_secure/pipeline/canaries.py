"""The canary audit of a run (``--dp-audit-canaries N``, with ``--dp-noise-multiplier``): N
canary clients join the rounds' masked sums, and ``metrics.json``'s ``privacy`` reports the
empirical ε measured from the final model beside the accountant's (:mod:`gptfl_secure.privacy.
canary` has the method and the estimator).

How canaries join a round (:func:`join_canaries`, the driver's one hook):

* who: each of the N inserted canaries takes part independently with probability
  q = cohort/clients, the rate the accountant composes with, from a public stream of (seed, r);
* ids: canary j is masked-sum client ``clients + j``, beyond every real client's id; canaries
  never drop;
* what: its update (10 × ``--dp-clip`` along its direction) through the run's codec, clipped,
  rotated and rounded like a client's, with no noise share: the sum's noise is the real
  clients' shares alone, so the mechanism audited is exactly the one accounted;
* weight: 1, like every client under DP (DP-FedAvg is unweighted); the server's mean divides
  by the number of real clients included, as it would without canaries;
* accounting: ``clients_included`` (the noise shares summed, what the accountant uses) counts
  real clients only; canaries do not inflate the cohort, the noise or ε. A round in which no
  real client is included is skipped like an aborted one.
* the ring: the codec is sized for ``cohort + N`` summed vectors (``max_clients``), so the
  canaries cannot make the modular sum wrap; the granularity and the noise do not change.

What it costs: canaries are honest, data-free protocol parties here. In a deployment they must
be run by a party that does not collude with the server, since a party holding canaries holds
their shares of every real client's secrets and counts toward the protocol's corruption
budget; they also shift the model by at most their clipped updates (far below the DP noise when
N is small against z²·dim).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..privacy.canary import (
    CANARY_NORM_FACTOR,
    CanaryDesign,
    encode_canary,
    estimate_epsilon,
)
from ..privacy.distributed import DistributedDPCodec
from ..privacy.hadamard import round_seed
from ..protocols import SecAggAbort
from ..protocols.config import Step
from .aggregation import AggregateResult, Aggregator
from .codecs import DistributedDPUpdates, RoundCodec
from .config import ConfigError, RunConfig
from .state import RunState

if TYPE_CHECKING:
    from .rounds import RoundPlan

METHOD = ("one-shot canary audit (Andrew et al., ICLR 2024): cosines of the final model delta "
          "with inserted random canary directions, ε at δ of their fitted Gaussian against the "
          "null N(0, 1/dim); held-out directions check the null")


def canary_design(config: RunConfig, dim: int) -> CanaryDesign | None:
    """The run's canary design (None without ``--dp-audit-canaries``)."""
    if not config.dp_audit_canaries:
        return None
    return CanaryDesign(config.dp_audit_canaries, dim, config.seed,
                        config.cohort / config.clients)


@dataclass(frozen=True)
class CanaryInsertion:
    """Inserts a run's canaries into its rounds (see the module docstring)."""

    design: CanaryDesign
    codec: DistributedDPCodec
    first_id: int  # canary j is masked-sum client first_id + j

    def contributions(self, plan: RoundPlan) -> dict[int, np.ndarray]:
        """{masked-sum id: ring vector} of the canaries taking part in ``plan``'s round."""
        rs = round_seed(plan.seed, plan.round)
        return {self.first_id + int(j): encode_canary(self.codec, self.design, int(j),
                                                      plan.round, rs)
                for j in self.design.participants(plan.round)}

    def aggregator(self, plan: RoundPlan, aggregate: Aggregator) -> Aggregator:
        """``aggregate`` with the round's canaries among the vectors; the result's ``total``
        holds them, its ``included`` lists the real clients only."""
        canaries = self.contributions(plan)

        def with_canaries(vectors: Mapping[int, np.ndarray], modulus: int,
                          dropouts: Mapping[int, str] | None = None) -> AggregateResult:
            clash = set(canaries) & set(vectors)
            if clash:
                raise ValueError(f"client ids {sorted(clash)[:3]} are used by canaries: canary "
                                 f"ids start at {self.first_id}")
            result = aggregate({**vectors, **canaries}, modulus, dropouts)
            real = frozenset(c for c in result.included if c not in canaries)
            if not real:  # the canaries alone: no noise share at all, nothing may be released
                raise SecAggAbort(Step.MASKED_INPUT, 0, 1, "only canaries were included")
            return AggregateResult(result.total, real, result.session)

        return with_canaries


def start_canaries(config: RunConfig, codec: RoundCodec,
                   state: RunState) -> CanaryInsertion | None:
    """The run's canary insertion (None without ``--dp-audit-canaries``). Before round 1 it
    records the initial model in ``state.initial_vector`` (checkpointed): the estimate measures
    the final model against it. ConfigError when the codec is not the distributed-DP one."""
    design = canary_design(config, len(state.global_vector))
    if design is None:
        return None
    if not isinstance(codec, DistributedDPUpdates):
        raise ConfigError("--dp-audit-canaries needs --dp-noise-multiplier (distributed DP)")
    if state.initial_vector is None and state.next_round == 1:
        state.initial_vector = np.array(state.global_vector, dtype=np.float64, copy=True)
    return CanaryInsertion(design, codec.codec, config.clients)


def join_canaries(insertion: CanaryInsertion | None, plan: RoundPlan,
                  aggregate: Aggregator) -> Aggregator:
    """The round's aggregator: ``aggregate`` itself, or with the canaries when auditing."""
    return aggregate if insertion is None else insertion.aggregator(plan, aggregate)


def empirical_privacy(state: RunState) -> dict | None:
    """``privacy``'s empirical part: ``{"empirical_epsilon": ε or None, "empirical": {...}}``;
    None without ``--dp-audit-canaries``. ε is None (with the reason) when no canary was ever
    inserted (the driver does not insert them) or the model did not move."""
    config = state.config
    design = canary_design(config, len(state.global_vector))
    if design is None:
        return None
    details = {"method": METHOD, "canaries": design.count, "held_out": design.count,
               "sampling_rate": design.sampling_rate,
               "canary_update_norm": CANARY_NORM_FACTOR * config.dp_clip}
    if state.initial_vector is None:
        return {"empirical_epsilon": None, "empirical": {
            **details, "error": "no canaries were inserted in this run (only the in-process "
                                "simulator inserts them)"}}
    played = [row["round"] for row in state.rounds if not row["skipped"]]
    details["canary_inclusions"] = int(sum(design.participants(r).size for r in played))
    delta = np.asarray(state.global_vector, dtype=np.float64) - state.initial_vector
    try:
        cos_in, cos_out = design.cosines(delta)
        estimate = estimate_epsilon(cos_in, cos_out, config.dp_delta, design.dim,
                                    seed=config.seed)
    except ValueError as exc:
        return {"empirical_epsilon": None, "empirical": {**details, "error": str(exc)}}
    return {"empirical_epsilon": estimate.epsilon, "empirical": {**details,
                                                                 **estimate.to_json()}}


def with_empirical_privacy(privacy: dict | None, state: RunState) -> dict | None:
    """``privacy`` (metrics.json's section) with the empirical ε beside ``epsilon`` when the run
    audits with canaries."""
    empirical = empirical_privacy(state)
    if empirical is None:
        return privacy
    return {**(privacy or {}), **empirical}
