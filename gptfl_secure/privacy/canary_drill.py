"""A drill of the canary audit on the aggregation layer alone: synthetic clients, the run's
distributed-DP codec, a plain modular sum and FedAvg at server rate 1, so that the estimate can be
compared with the accountant in seconds (tests and ``benches/canary_bench.py``; a full run does
the same through :mod:`gptfl_secure.pipeline.canaries`).

Round r: every real client takes part with probability q (Poisson) and sends a clipped update
(a shared drift direction plus its own spread, both public streams of ``seed``), every inserted
canary that :meth:`CanaryDesign.participants` picks sends its canary update (:func:`encode_canary`);
the server decodes the sum with the real clients' count (their noise shares are the noise) and
adds the mean to the model. After ``rounds`` rounds, the model delta's cosines with the canaries
give :func:`estimate_epsilon`, and the rounds, each accounted with its own number of noise shares,
give the accountant's ε.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .accounting import RdpLedger
from .canary import CanaryDesign, EmpiricalEpsilon, encode_canary, estimate_epsilon
from .distributed import DistributedDPCodec
from .hadamard import round_seed
from .rng import noise_generator, public_generator

DRILL_STREAM = 0x6472696C  # b"dril"
DRIFT_NORM, SPREAD_NORM = 0.7, 0.7  # a real update before clipping: drift + own spread


@dataclass(frozen=True)
class DrillResult:
    accountant_epsilon: float
    estimate: EmpiricalEpsilon
    rounds_aggregated: int
    real_included: tuple[int, ...]  # per aggregated round
    canaries_included: tuple[int, ...]  # per aggregated round


def _private(seed: int, *labels: int) -> np.random.Generator:
    """A reproducible stand-in for a client's private generator (a drill, not a deployment)."""
    data = repr((seed, labels)).encode()
    return noise_generator(hashlib.sha256(b"gptfl-secure/drill/" + data).digest())


def run_drill(codec: DistributedDPCodec, design: CanaryDesign, *, clients: int, rounds: int,
              delta: float, seed: int = 0, resamples: int = 100) -> DrillResult:
    """Play ``rounds`` drill rounds (see the module docstring) with ``clients`` real clients
    sampled at ``design.sampling_rate``; ``codec.max_clients`` must hold every real client and
    every canary of a round (ValueError otherwise, from the codec)."""
    if codec.dim != design.dim:
        raise ValueError(f"codec has dim {codec.dim}, the canary design {design.dim}")
    q, d = design.sampling_rate, design.dim
    drift = public_generator(seed, DRILL_STREAM, 0).standard_normal(d)
    drift *= DRIFT_NORM * codec.l2_clip / np.linalg.norm(drift)
    model = np.zeros(d)
    modulus = np.uint64(codec.modulus - 1)
    real_counts, canary_counts = [], []
    for r in range(1, rounds + 1):
        g = public_generator(seed, DRILL_STREAM, 1, r)
        real = np.flatnonzero(g.random(clients) < q)
        if real.size == 0:
            continue  # nobody to hide the canaries: the round is skipped, as an abort would be
        rs = round_seed(seed, r)
        total = np.zeros(codec.vector_length, dtype=np.uint64)
        for c in real:
            spread = public_generator(seed, DRILL_STREAM, 2, r, int(c)).standard_normal(d)
            update = drift + spread * (SPREAD_NORM * codec.l2_clip / np.sqrt(d))
            total = (total + codec.encode(update, _private(seed, r, int(c)), rs)) & modulus
        inserted = design.participants(r)
        for j in inserted:
            total = (total + encode_canary(codec, design, int(j), r, rs)) & modulus
        model += codec.decode(total, int(real.size), rs).mean_update()
        real_counts.append(int(real.size))
        canary_counts.append(int(inserted.size))
    ledger = RdpLedger()
    for m, count in sorted(Counter(real_counts).items()):
        ledger.add(codec.round_accountant(clients, m), rounds=count)  # as the sim accounts
    cos_in, cos_out = design.cosines(model)
    estimate = estimate_epsilon(cos_in, cos_out, delta, d, resamples=resamples, seed=seed)
    return DrillResult(ledger.epsilon(delta), estimate, len(real_counts), tuple(real_counts),
                       tuple(canary_counts))
