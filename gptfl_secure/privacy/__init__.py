"""Distributed differential privacy on top of the masked sum (numpy/scipy; opacus for the
Gaussian reference accountant).

Modules, one job each:

* :mod:`.rng`: private (CSPRNG-seeded) and public (seed-derived) generators.
* :mod:`.hadamard`: randomized Walsh–Hadamard rotation and its inverse.
* :mod:`.rounding`: unbiased and β-conditional stochastic rounding.
* :mod:`.mechanisms`: Skellam and discrete Gaussian noise, per-client shares.
* :mod:`.distributed`: :class:`DistributedDPCodec`, model updates into Z_2^k with noise.
* :mod:`.accounting`: RDP of Skellam / distributed discrete Gaussian, subsampling, (ε, δ).
* :mod:`.label_noise`: DP label discovery (IBLT presence + noised count sketch + threshold).

Typical use::

    codec = DistributedDPCodec(dim, l2_clip=1.0, noise_multiplier=1.0, cohort=20)
    v = codec.encode(delta, noise_generator(), round_seed)      # each client
    decoded = codec.decode(masked_sum_total, num_included, round_seed)   # server
    eps = codec.accountant(sampling_rate=20 / 100).epsilon(rounds, check_delta(1e-5, 100))
"""

import importlib

# Names to their modules, imported on first use (PEP 562): a client that only encodes an update
# (``privacy.distributed``) must not pay for scipy.stats, which ``label_noise`` needs.
_EXPORTS = {
    "DEFAULT_DELTA": "accounting",
    "PrivacyAccountant": "accounting",
    "RdpLedger": "accounting",
    "check_delta": "accounting",
    "noise_multiplier_for_epsilon": "accounting",
    "DecodedDPSum": "distributed",
    "DistributedDPCodec": "distributed",
    "CountSketchParams": "label_noise",
    "DPLabelCodec": "label_noise",
    "LabelGuarantee": "label_noise",
    "NoisyLabelRelease": "label_noise",
    "noisy_label_counts": "label_noise",
    "noise_generator": "rng",
    "public_generator": "rng",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
