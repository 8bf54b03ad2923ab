"""Differential privacy of a run, set-up and accounting: DP-SGD local training (each client's
spend recorded in the run state), the (ε, δ) of the distributed-DP updates composed over the
rounds so far, and ``metrics.json``'s ``privacy`` section."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from ..privacy.accounting import BOUNDS, RdpLedger, rdp_to_epsilon
from ..privacy.distributed import DistributedDPCodec
from ..privacy.dpsgd import DpSgdConfig, DpSgdSpend, dpsgd_epsilon, train_locally_dp
from .codecs import make_dp_codec
from .config import RunConfig
from .sampling import cohort_sampling

if TYPE_CHECKING:
    from .state import RunState


def dp_sgd_trainer(config: RunConfig, state: RunState):
    """Local training with opacus DP-SGD; each client's spend goes to ``state.dpsgd_history``
    (checkpointed), from which its record-level ε is computed."""
    dp = DpSgdConfig(config.dp_sgd_noise_multiplier, config.dp_sgd_clip)

    def train(model, global_vector, data, local, seed, client_id):
        delta, spend = train_locally_dp(model, global_vector, data, local, dp, seed)
        state.dpsgd_history.setdefault(str(client_id), []).append(
            [spend.noise_multiplier, spend.sample_rate, spend.steps])
        return delta

    return train


def dp_sgd_privacy(config: RunConfig, history: dict[str, list[list[float]]]) -> dict | None:
    """Record-level ε of DP-SGD: the largest over clients, each composed over its rounds."""
    if not config.dp_sgd:
        return None
    worst = max((dpsgd_epsilon([DpSgdSpend(n, r, int(k)) for n, r, k in spends],
                               config.dp_delta) for spends in history.values()), default=0.0)
    return {"epsilon": worst, "delta": config.dp_delta,
            "noise_multiplier": config.dp_sgd_noise_multiplier, "clip": config.dp_sgd_clip,
            "clients_trained": len(history),
            "unit": "record-level: one example of one client (the worst client)"}


SAMPLING_NAMES = {"poisson": "poisson", "fixed": "fixed_without_replacement"}
NEIGHBOURING = ("replace_one: one client's data replaced by any other's; the population, every "
                "round's cohort and its count are unchanged")
ADVERSARY = ("anyone who sees the released global models and each round's count of included "
             "clients, but not which clients were sampled (the run's seed, which determines "
             "the cohorts, must be withheld from them)")


def update_privacy(config: RunConfig, dim: int, rounds: list[dict],
                   codec: DistributedDPCodec | None = None) -> dict | None:
    """(ε, δ) of the model updates so far, against :data:`ADVERSARY`.

    Every aggregated round with m included clients is accounted as the mechanism run on m of
    the ``clients`` drawn uniformly without replacement (q = m/N), under the replace-one
    relation, with the noise of those m shares (Wang-Balle-Kasiviswanathan's bound); rounds
    compose in an :class:`RdpLedger`. This holds for both ``--client-sampling`` modes: a
    Poisson cohort given its size m is such a draw, and m (public, revealed by the protocol)
    has the same distribution for neighbouring data sets (proofs/dp-guarantees.md).
    ``codec``: the run's DP codec when the caller has it (else built from ``config``)."""
    codec = codec or make_dp_codec(config, dim)
    if codec is None:
        return None
    sampler = cohort_sampling(config)
    ledger = RdpLedger()
    included = Counter(row["clients_included"] for row in rounds if not row["skipped"])
    for m, count in sorted(included.items()):  # rounds with equal noise compose as one term
        ledger.add(codec.round_accountant(config.clients, m), rounds=count)
    return {"epsilon": ledger.epsilon(config.dp_delta), "delta": config.dp_delta,
            "adversary": ADVERSARY,
            "sampling": SAMPLING_NAMES[sampler.mode], "neighbouring": NEIGHBOURING,
            "accountant": "RDP at integer orders, rounds composed, converted with Balle et al. "
                          "2020 (Thm. 21); per round q = included/clients",
            "bound": dict(BOUNDS["without_replacement"]),
            "mechanism": config.dp_mechanism, "noise_multiplier": config.dp_noise_multiplier,
            "l2_clip": config.dp_clip, "sampling_rate": sampler.rate,
            "cohort_cap": sampler.cap, "rounds": ledger.releases,
            "modulus_bits": codec.modulus_bits,
            "unit": "client-level: one client's whole update in every round it joins"}


def cohorts_known_privacy(config: RunConfig, dim: int, rounds: list[dict],
                          codec: DistributedDPCodec | None = None) -> dict | None:
    """(ε, δ) against a party that knows every round's cohort (the server does: it runs the
    protocol with them): no amplification by sampling. For each client, the unsampled
    replace-one RDP of every aggregated round it was sampled in (replayed from the public plan;
    a superset of the rounds it was included in) is composed; the worst client's ε is reported.
    With ``--secagg off`` the server sees every client's vector with only its own noise share,
    for which no bound is computed here: ε is then None, with the reason."""
    codec = codec or make_dp_codec(config, dim)
    if codec is None:
        return None
    report_ = {"delta": config.dp_delta, "adversary": "the server, or anyone who knows the "
               "cohorts (the run's seed)", "neighbouring": NEIGHBOURING,
               "bound": "none: the unsampled per-round RDP, composed over the rounds each "
                        "client was sampled in (worst client)"}
    if config.secagg == "off":
        return {"epsilon": None, **report_, "reason": "--secagg off: the server sees each "
                "client's vector with only that client's noise share, not the summed noise"}
    sampler = cohort_sampling(config)
    played = [row for row in rounds if not row["skipped"]]
    sizes = sorted({row["clients_included"] for row in played})
    column = {m: i for i, m in enumerate(sizes)}
    counts = np.zeros((config.clients, len(sizes)))  # client x distinct m: rounds sampled in
    for row in played:
        sampled, _ = sampler.round_cohort(config.seed, row["round"])
        counts[sampled, column[row["clients_included"]]] += 1
    ledger = RdpLedger()  # only for its orders
    base = np.array([codec.round_accountant(config.clients, m).base_rdp(ledger.orders)
                     for m in sizes]).reshape(len(sizes), len(ledger.orders))
    worst = 0.0
    for row_counts in np.unique(counts, axis=0):
        if row_counts.any():
            worst = max(worst, rdp_to_epsilon(ledger.orders, row_counts @ base,
                                              config.dp_delta)[0])
    most = int(counts.sum(axis=1).max()) if played else 0
    return {"epsilon": worst, **report_, "most_rounds_one_client_was_sampled_in": most}


def privacy_report(state: RunState) -> dict | None:
    """``metrics.json``'s ``privacy``: the distributed-DP (ε, δ) of the updates when enabled,
    else DP-SGD's; the other (and DP label discovery) alongside. None when no DP is on."""
    updates = update_privacy(state.config, len(state.global_vector), state.rounds)
    if updates is not None:
        updates["cohorts_known"] = cohorts_known_privacy(state.config, len(state.global_vector),
                                                         state.rounds)
    records = dp_sgd_privacy(state.config, state.dpsgd_history)
    labels = state.label_discovery.get("dp")
    main = updates or records
    if main is None:
        return {"epsilon": None, "delta": None, "label_discovery": labels} if labels else None
    report_ = dict(main)
    if updates is not None and records is not None:
        report_["dp_sgd"] = records
    if labels is not None:
        report_["label_discovery"] = labels
    return report_
