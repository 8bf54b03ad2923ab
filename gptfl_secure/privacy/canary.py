"""One-run empirical privacy estimation with random canary clients (Andrew, Kairouz, Oh, Oprea,
McMahan, Suriyakumar, "One-shot Empirical Privacy Estimation for Federated Learning", ICLR 2024,
Sec. 3-4).

``k`` canary clients each own a fixed random unit direction u_j in model space (``dim``
coordinates), drawn from a public seed stream; ``k`` more directions are drawn the same way and
never inserted (held out). In every round each canary takes part independently with the
client sampling rate q (Poisson, like a client under DP) and submits
``CANARY_NORM_FACTOR · clip · u_j`` as its update: well beyond the clip, so that the real
mechanism clips it to norm ``clip`` exactly, and a mechanism that skipped clipping would let it
count tenfold. Its contribution goes through the run's codec (clip, rotation, conditional
rounding) without a noise share of its own (:func:`encode_canary`): the summed noise is then
exactly the real clients' shares, the mechanism the accountant describes.

After training, the statistic of canary j is the cosine between the final model delta
(final - initial) and u_j. A held-out direction is independent of the run, so its cosine follows
the null distribution (mean 0, variance exactly 1/dim, Gaussian for large dim); an inserted one
is shifted by its own contributions. The estimate (:func:`estimate_epsilon`) fits a Gaussian to
the inserted canaries' cosines and reports the ε, at the run's δ, of that Gaussian against the
null N(0, 1/dim) (:func:`gaussian_pair_epsilon`, computed exactly from the privacy loss of two
Gaussians, both directions), with a bootstrap percentile interval over canaries. The held-out
canaries check the null: their fitted Gaussian is reported, and the ε against it
(``epsilon_fitted_null``), which carries their sampling error too.

What it is: an estimate of what the final model reveals about one client, measured in the run
that produced it; not a bound. Below the accountant's ε is what a sound mechanism gives (the
final model reveals at most what all rounds do); above it means a bug in clipping, noise or
accounting, or too few canaries (the interval says how precise the estimate is).

Everything here is public: directions, participation and the rounding of canaries come from
seed streams that any party can replay; canaries hold no data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from .distributed import DistributedDPCodec
from .rng import public_generator

CANARY_STREAM = 0x63616E61  # b"cana": labels of the canary streams in public_generator
DIRECTION, PARTICIPATION, ROUNDING, BOOTSTRAP = 1, 2, 3, 4
CANARY_NORM_FACTOR = 10.0
MAX_EPSILON = 1e4  # "unbounded": two fitted Gaussians this far apart are not estimated further
DEFAULT_RESAMPLES = 200
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class CanaryDesign:
    """The public parameters of a canary audit, shared by whoever inserts and whoever measures.

    Args:
        count: k canaries inserted (ids 0..k-1) and k held out (ids k..2k-1).
        dim: model coordinates d.
        seed: the run's public seed.
        sampling_rate: q, the probability that a canary takes part in a round.

    Raises ValueError on a count or dim below 1, or q outside (0, 1].
    """

    count: int
    dim: int
    seed: int
    sampling_rate: float

    def __post_init__(self) -> None:
        for name in ("count", "dim"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name}={value}: must be an int >= 1")
        if not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed={self.seed}: must be an int >= 0")
        if not 0 < self.sampling_rate <= 1:
            raise ValueError(f"sampling_rate={self.sampling_rate}: must be in (0, 1]")

    def direction(self, j: int) -> np.ndarray:
        """u_j, a uniform random unit vector of ``dim`` coordinates (j < 2k; j >= k: held
        out)."""
        if not 0 <= j < 2 * self.count:
            raise ValueError(f"canary {j}: must be in [0, {2 * self.count})")
        g = public_generator(int(self.seed), CANARY_STREAM, DIRECTION, int(j))
        u = g.standard_normal(self.dim)
        return u / np.linalg.norm(u)

    def participants(self, r: int) -> np.ndarray:
        """The inserted canaries (sorted indices in [0, k)) taking part in round ``r``."""
        g = public_generator(int(self.seed), CANARY_STREAM, PARTICIPATION, int(r))
        return np.flatnonzero(g.random(self.count) < self.sampling_rate)

    def cosines(self, model_delta: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(inserted, held_out): the cosines of ``model_delta`` with u_0..u_{k-1} and with
        u_k..u_{2k-1}. ValueError for a wrong shape, non-finite entries or a zero delta."""
        delta = np.asarray(model_delta, dtype=np.float64)
        if delta.shape != (self.dim,):
            raise ValueError(f"model delta has shape {delta.shape}; expected ({self.dim},)")
        norm = float(np.linalg.norm(delta))
        if not math.isfinite(norm) or norm == 0:
            raise ValueError("model delta is zero or not finite: nothing to measure")
        out = np.empty(2 * self.count)
        for start in range(0, 2 * self.count, chunk):  # chunks: never k × d floats at once
            stop = min(start + chunk, 2 * self.count)
            block = np.stack([self.direction(j) for j in range(start, stop)])
            out[start:stop] = block @ delta / norm
        return out[:self.count], out[self.count:]


def canary_update(design: CanaryDesign, j: int, clip: float) -> np.ndarray:
    """Canary j's submitted update: ``CANARY_NORM_FACTOR · clip · u_j``."""
    return design.direction(j) * (CANARY_NORM_FACTOR * float(clip))


def encode_canary(codec: DistributedDPCodec, design: CanaryDesign, j: int, r: int,
                  round_seed: bytes | int | None) -> np.ndarray:
    """Canary j's contribution to round ``r``: its update through ``codec`` (clip, rotation,
    conditional rounding from a public stream) with no noise share, as a ring vector."""
    rounding = public_generator(int(design.seed), CANARY_STREAM, ROUNDING, int(r), int(j))
    return codec.encode(canary_update(design, j, codec.l2_clip), rounding, round_seed,
                        noise_share=False)


# ---------------------------------------------------------------------- the estimator
def _mass(lo: float, hi: float, mean: float, std: float) -> float:
    """P(lo < X < hi) for X ~ N(mean, std²), without cancellation in either tail."""
    a, b = (lo - mean) / std, (hi - mean) / std
    if a >= 0:
        return float(special.ndtr(-a) - special.ndtr(-b))
    return float(special.ndtr(b) - special.ndtr(a))


def hockey_stick(mean_p: float, std_p: float, mean_q: float, std_q: float, eps: float) -> float:
    """δ(ε) = E_P[(1 - e^ε q/p)_+] for P = N(mean_p, std_p²), Q = N(mean_q, std_q²): the mass
    where the privacy loss log(p/q) exceeds ε, a region bounded by the roots of a quadratic."""
    a = 0.5 / std_q**2 - 0.5 / std_p**2
    b = mean_p / std_p**2 - mean_q / std_q**2
    c = 0.5 * (mean_q / std_q) ** 2 - 0.5 * (mean_p / std_p) ** 2 + math.log(std_q / std_p) - eps
    if abs(a) <= 1e-12 * (1.0 / std_p**2 + 1.0 / std_q**2):  # equal variances: a half-line
        if b == 0:
            return max(0.0, 1.0 - math.exp(eps)) if c > 0 else 0.0
        cut = -c / b
        region = [(cut, math.inf)] if b > 0 else [(-math.inf, cut)]
    else:
        disc = b * b - 4.0 * a * c
        if disc <= 0:
            region = [(-math.inf, math.inf)] if a > 0 else []
        else:
            r1, r2 = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))
            region = [(-math.inf, r1), (r2, math.inf)] if a > 0 else [(r1, r2)]
    p = sum(_mass(lo, hi, mean_p, std_p) for lo, hi in region)
    q = sum(_mass(lo, hi, mean_q, std_q) for lo, hi in region)
    if p <= 0 or q <= 0:
        return max(p, 0.0)
    log_ratio = eps + math.log(q) - math.log(p)  # p - e^ε·q = p·(1 - e^log_ratio), no overflow
    return 0.0 if log_ratio >= 0 else -p * math.expm1(log_ratio)


def gaussian_pair_epsilon(mean_0: float, std_0: float, mean_1: float, std_1: float,
                          delta: float) -> float:
    """The smallest ε >= 0 such that N(mean_0, std_0²) and N(mean_1, std_1²) are (ε, δ)-
    indistinguishable in both directions; equal stds give the Gaussian mechanism's ε for
    μ = |mean_1 - mean_0|/std. MAX_EPSILON when even that is not enough."""
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta}: must be in (0, 1)")
    for name, value in (("std_0", std_0), ("std_1", std_1)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value}: must be finite and > 0")
    if not (math.isfinite(mean_0) and math.isfinite(mean_1)):
        raise ValueError("means must be finite")

    def excess(eps: float) -> float:
        worst = max(hockey_stick(mean_0, std_0, mean_1, std_1, eps),
                    hockey_stick(mean_1, std_1, mean_0, std_0, eps))
        return math.log(max(worst, 1e-300)) - math.log(delta)

    if excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0:
        if hi >= MAX_EPSILON:
            return MAX_EPSILON
        lo, hi = hi, min(hi * 4.0, MAX_EPSILON)
    return float(optimize.brentq(excess, lo, hi, xtol=1e-6))


@dataclass(frozen=True)
class EmpiricalEpsilon:
    """The estimate and what it was computed from. ``epsilon``: the inserted canaries' fitted
    Gaussian against the exact null N(0, 1/dim); ``interval``: its bootstrap percentile interval
    at ``confidence`` (resampling inserted canaries); ``epsilon_fitted_null``: the same with the
    null fitted to the held-out canaries instead (noisier: it adds the held-out sampling
    error)."""

    epsilon: float
    delta: float
    interval: tuple[float, float]
    confidence: float
    epsilon_fitted_null: float
    inserted: int
    held_out: int
    dim: int
    inserted_mean: float
    inserted_std: float
    held_out_mean: float
    held_out_std: float
    resamples: int

    def to_json(self) -> dict:
        return {"epsilon": self.epsilon, "delta": self.delta,
                "interval": list(self.interval), "confidence": self.confidence,
                "epsilon_fitted_held_out": self.epsilon_fitted_null,
                "canaries": self.inserted, "held_out": self.held_out,
                "cosine_inserted": {"mean": self.inserted_mean, "std": self.inserted_std},
                "cosine_held_out": {"mean": self.held_out_mean, "std": self.held_out_std},
                "cosine_null": {"mean": 0.0, "std": self.dim ** -0.5},
                "bootstrap_resamples": self.resamples}


def _fit(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1))


def estimate_epsilon(inserted: np.ndarray, held_out: np.ndarray, delta: float, dim: int, *,
                     confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> EmpiricalEpsilon:
    """ε at ``delta`` of the null N(0, 1/dim) (the exact mean and variance of the cosine of a
    uniform random direction with any fixed vector, Sec. 4 of the paper) against the Gaussian
    fitted to ``inserted``, with a bootstrap interval (``resamples`` resamplings from the public
    stream ``seed``; 0: no interval, the point estimate twice); and the same against the
    Gaussian fitted to ``held_out``. ValueError for fewer than 2 statistics in a set, non-finite
    ones, a constant set, dim < 1, or a confidence outside (0, 1)."""
    ins = np.asarray(inserted, dtype=np.float64).ravel()
    out = np.asarray(held_out, dtype=np.float64).ravel()
    for name, values in (("inserted", ins), ("held_out", out)):
        if values.size < 2 or not np.all(np.isfinite(values)):
            raise ValueError(f"{name}: need at least 2 finite statistics, got {values.size}")
        if float(values.std()) == 0:
            raise ValueError(f"{name}: every statistic is equal; no Gaussian fits")
    if not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"dim={dim}: must be an int >= 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must be in (0, 1)")
    if not isinstance(resamples, int) or resamples < 0:
        raise ValueError(f"resamples={resamples}: must be an int >= 0")
    null_std = float(dim) ** -0.5

    def against_null(values: np.ndarray) -> float:
        return gaussian_pair_epsilon(0.0, null_std, *_fit(values), delta)

    point = against_null(ins)
    interval = (point, point)
    if resamples:
        g = public_generator(int(seed), CANARY_STREAM, BOOTSTRAP)
        draws = [against_null(ins[g.integers(0, ins.size, ins.size)]) for _ in range(resamples)]
        tail = (1.0 - confidence) / 2.0
        lo, hi = np.quantile(draws, [tail, 1.0 - tail])
        interval = (float(lo), float(hi))
    fitted_null = gaussian_pair_epsilon(*_fit(out), *_fit(ins), delta)
    return EmpiricalEpsilon(point, float(delta), interval, float(confidence), fitted_null,
                            int(ins.size), int(out.size), int(dim), *_fit(ins), *_fit(out),
                            resamples)
