"""Differential privacy of a run, set-up and accounting: DP-SGD local training (each client's
spend recorded in the run state), the (ε, δ) of the distributed-DP updates composed over the
rounds so far, and ``metrics.json``'s ``privacy`` section."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ..privacy.accounting import RdpLedger
from ..privacy.distributed import DistributedDPCodec
from ..privacy.dpsgd import DpSgdConfig, DpSgdSpend, dpsgd_epsilon, train_locally_dp
from .codecs import make_dp_codec
from .config import RunConfig

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


def update_privacy(config: RunConfig, dim: int, rounds: list[dict],
                   codec: DistributedDPCodec | None = None) -> dict | None:
    """(ε, δ) of the model updates so far: the RDP of every aggregated round (each with its own
    number of included noise shares) composed, with client sampling rate cohort/clients.
    ``codec``: the run's DP codec when the caller has it (else built from ``config``)."""
    codec = codec or make_dp_codec(config, dim)
    if codec is None:
        return None
    rate = config.cohort / config.clients
    ledger = RdpLedger()
    included = Counter(row["clients_included"] for row in rounds if not row["skipped"])
    for m, count in sorted(included.items()):  # rounds with equal noise compose as one term
        ledger.add(codec.accountant(rate, num_included=m), rounds=count)
    return {"epsilon": ledger.epsilon(config.dp_delta), "delta": config.dp_delta,
            "mechanism": config.dp_mechanism, "noise_multiplier": config.dp_noise_multiplier,
            "l2_clip": config.dp_clip, "sampling_rate": rate, "rounds": ledger.releases,
            "modulus_bits": codec.modulus_bits,
            "unit": "client-level: one client's whole update in every round it joins"}


def privacy_report(state: RunState) -> dict | None:
    """``metrics.json``'s ``privacy``: the distributed-DP (ε, δ) of the updates when enabled,
    else DP-SGD's; the other (and DP label discovery) alongside. None when no DP is on."""
    updates = update_privacy(state.config, len(state.global_vector), state.rounds)
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
