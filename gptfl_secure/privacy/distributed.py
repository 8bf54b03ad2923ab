"""Distributed DP for model updates: clip, rotate, scale, round, add a noise share, wrap into
Z_2^k. The masked sum of the cohort's vectors then carries the full noise, and no party ever sees
an unnoised sum or another party's noise.

Client i, for its update Δ_i (float, ``dim`` entries), in this order:

    x_i = Δ_i · min(1, c/||Δ_i||)                      L2 clip to c
    y_i = H·D·pad(x_i)                                  optional randomized Hadamard rotation
                                                        (public per-round signs D; N entries,
                                                        N = 2^ceil(log2 d))
    z_i = CondRound(y_i / γ, Δ2)                        scale by 1/γ, stochastic rounding re-drawn
                                                        until ||z_i|| <= Δ2 = Δ(c/γ, N, β)
    v_i = z_i + ξ_i  mod 2^k                            ξ_i: the client's noise share (Skellam
                                                        variance V/n, or N_Z(0, V/n)), V = (z·c/γ)²

The server receives Σ v_i mod 2^k for the m <= n included clients, reads it centred (values
>= 2^(k-1) are negative), multiplies by γ and un-rotates: Σ x_i + γ·(rounding error) + γ·Σ ξ_i.
The summed noise has standard deviation z·c·sqrt(m/n) in update units: with all n clients in,
exactly the Gaussian mechanism's z·c (z = ``noise_multiplier``).

Modulus: k is chosen so that, per round, P(any coordinate of the noisy sum leaves
[-2^(k-1), 2^(k-1))) <= δ_w (``delta_wrap``, default 1e-4). Bound on |coordinate j of the sum|
for m <= n clients, each term holding with probability >= 1 - δ_w/2 over all N coordinates:

    signal    |Σ_i y_ij/γ| <= t_s = n·s·min(1, sqrt(2·ln(4N/δ_w)/N))    (s = c/γ)
              rotated: Σ_i y_i = H·D·Σ_i x_i has norm <= n·s, and for random signs each
              coordinate is a Rademacher sum, P(|.| >= t) <= 2·exp(-t²·N/(2(n·s)²)) (Hoeffding);
              unrotated: a coordinate is at most the norm, n·s
    rounding  |Σ_i (z_ij - y_ij/γ)| < n                                   (each term below 1)
    noise     P(|Σ_i ξ_ij| >= t_ξ) <= δ_w/(2N), from the Chernoff bound of the summed noise:
              Skellam(V):  P(X >= t) <= exp(-(t·asinh(t/V) - V·(sqrt(1 + (t/V)²) - 1)))
              (MGF exp(V(cosh λ - 1))); the sum of discrete Gaussians is V-subgaussian
              (Canonne-Kamath-Steinke 2020): P(X >= t) <= exp(-t²/(2V)), t_ξ = sqrt(2V·ln(4N/δ_w))

so with T(γ) = t_s + n + t_ξ, the ring Z_2^k with 2^(k-1) > T(γ) wraps with probability <= δ_w.
All three terms grow with m, so they are evaluated at m = ``max_clients`` (default: the cohort),
the most clients whose vectors may be summed; with Poisson client sampling the sampled count
varies, and ``max_clients`` above ``cohort`` keeps the ring wide enough (the noise then has
variance V·m/n, more than the nominal V).

Granularity γ:
* ``bits`` given: γ is the finest granularity with T(γ) < 2^(bits-1) (bisection; T decreases in
  γ). Coarser γ inflates the rounded norm Δ2 relative to c/γ, which the accountant charges for.
* ``bits`` None: γ is the coarsest granularity whose rounding inflation Δ2·γ/c - 1 is at most
  ``rounding_inflation`` (default 1%) and, for 'dgauss', whose per-client σ = z·c/(γ·sqrt(n))
  is at least 2 (the τ term of the accountant then vanishes); k is the smallest with
  2^(k-1) > T(γ).
Either way k <= 62 (the masked sum's limit), else ValueError.

What the server learns: only the noisy sum (and the number of included clients, which the
masked-sum protocol reveals anyway). Weighting: every included client has weight 1 (the privacy
unit is the client, so FedAvg weights by example count would have to be clipped into c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .accounting import DEFAULT_ORDERS, PrivacyAccountant
from .hadamard import padded_dim, rotate, unrotate
from .mechanisms import MECHANISMS, client_noise
from .rounding import DEFAULT_BETA, conditional_rounding_bound, conditional_stochastic_round

MAX_MODULUS_BITS = 62
DGAUSS_MIN_CLIENT_SIGMA = 2.0  # with bits=None: exp(-2π²σ²/2) ~ 1e-17 makes τ·d negligible
DEFAULT_DELTA_WRAP = 1e-4
DEFAULT_ROUNDING_INFLATION = 0.01


@dataclass(frozen=True)
class DecodedDPSum:
    """The server's view of one round: the noisy sum of clipped updates."""

    update_sum: np.ndarray  # Σ clip(Δ_i) + noise, float64 (dim,)
    num_included: int
    noise_std: float  # per-coordinate std of the summed DP noise, update units
    rounding_std_bound: float  # per-coordinate std bound of the summed rounding error

    def mean_update(self, denominator: float | None = None) -> np.ndarray:
        """update_sum / denominator (default: the number of included clients). DP-FedAvg divides
        by a fixed public expected cohort size instead; pass it as ``denominator``."""
        den = float(self.num_included if denominator is None else denominator)
        if not den > 0:
            raise ValueError(f"denominator={den}: must be > 0")
        return self.update_sum / den


@dataclass(frozen=True)
class DistributedDPCodec:
    """Encoding of DP round contributions into Z_2^k, shared by the server and every client.

    Args:
        dim: model coordinates d.
        l2_clip: c > 0, the L2 clip (``--dp-clip``).
        noise_multiplier: z > 0; the noise summed over ``cohort`` clients has std z·c.
        cohort: n, the number of clients whose noise shares make up the full noise (the expected
            number included in a round); each adds 1/n of the variance.
        max_clients: the most clients whose vectors may be summed (sizes the modulus; default
            ``cohort``). ``decode`` refuses sums of more.
        mechanism: 'skellam' or 'dgauss'.
        rotate: apply the randomized Hadamard rotation (then vectors have N = 2^ceil(log2 d)
            entries, and ``round_seed`` is required to encode and decode).
        bits: modulus bits k, or None to derive k from ``rounding_inflation``.
        delta_wrap: per-round bound on the probability that the modular sum wraps.
        beta: conditional rounding parameter in [0, 1).
        rounding_inflation: with bits=None, the allowed relative growth of the sensitivity
            through rounding.

    Raises ValueError when the parameters need more than 62 bits, when ``bits`` cannot hold a
    sum of ``cohort`` clients, or (dgauss) when a client's σ falls below 1/2.
    """

    dim: int
    l2_clip: float
    noise_multiplier: float
    cohort: int
    mechanism: str = "skellam"
    rotate: bool = True
    bits: int | None = None
    delta_wrap: float = DEFAULT_DELTA_WRAP
    beta: float = DEFAULT_BETA
    rounding_inflation: float = DEFAULT_ROUNDING_INFLATION
    max_clients: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int | np.integer) or self.dim < 1:
            raise ValueError(f"dim={self.dim}: must be a positive int")
        for name in ("l2_clip", "noise_multiplier"):
            value = getattr(self, name)
            if not (isinstance(value, float | int) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value}: must be a finite number > 0")
        if not isinstance(self.cohort, int | np.integer) or self.cohort < 1:
            raise ValueError(f"cohort={self.cohort}: must be a positive int")
        if self.max_clients is None:
            object.__setattr__(self, "max_clients", int(self.cohort))
        if not isinstance(self.max_clients, int | np.integer) or self.max_clients < self.cohort:
            raise ValueError(f"max_clients={self.max_clients}: must be an int >= cohort")
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"mechanism={self.mechanism!r}: one of {MECHANISMS}")
        if not 0 < self.delta_wrap < 1:
            raise ValueError(f"delta_wrap={self.delta_wrap}: must be in (0, 1)")
        if not 0 <= self.beta < 1:
            raise ValueError(f"beta={self.beta}: must be in [0, 1)")
        if not self.rounding_inflation > 0:
            raise ValueError(f"rounding_inflation={self.rounding_inflation}: must be > 0")
        if self.bits is None:
            scaled = self._scaled_clip_for_inflation()
            if self.mechanism == "dgauss":  # per-client σ >= 2 keeps KLS21's τ·d negligible
                scaled = max(scaled, DGAUSS_MIN_CLIENT_SIGMA * math.sqrt(self.cohort)
                             / self.noise_multiplier)
            gamma = self.l2_clip / scaled
            bits = _bits_for(self._range_bound(gamma))
            if bits > MAX_MODULUS_BITS:
                raise ValueError(
                    f"the noisy sum needs a {bits}-bit modulus (> {MAX_MODULUS_BITS}, the masked "
                    f"sum's limit): lower the cohort, the noise multiplier or raise "
                    f"rounding_inflation")
        else:
            bits = self.bits
            if not isinstance(bits, int | np.integer) or not 2 <= bits <= MAX_MODULUS_BITS:
                raise ValueError(f"bits={bits}: must be an int in [2, {MAX_MODULUS_BITS}]")
            gamma = self._granularity_for_bits(int(bits))
        object.__setattr__(self, "_gamma", float(gamma))
        object.__setattr__(self, "_bits", int(bits))
        if self.mechanism == "dgauss" and self.client_sigma < 0.5:
            raise ValueError(
                f"per-client discrete Gaussian sigma = {self.client_sigma:.3g} < 1/2 (integer "
                "units): raise bits or the noise multiplier, or use fewer clients per cohort")

    # ------------------------------------------------------------------ parameters
    @property
    def vector_length(self) -> int:
        """N: padded dimension when rotating, else ``dim``."""
        return padded_dim(self.dim) if self.rotate else int(self.dim)

    @property
    def granularity(self) -> float:
        """γ: one integer step in update units."""
        return self._gamma  # type: ignore[attr-defined]

    @property
    def modulus_bits(self) -> int:
        """k: vectors and sums live in Z_2^k."""
        return self._bits  # type: ignore[attr-defined]

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    @property
    def scaled_clip(self) -> float:
        """s = c/γ: the clip norm in integer units."""
        return self.l2_clip / self.granularity

    @property
    def l2_bound(self) -> float:
        """Δ2: L2 norm bound of a client's rounded vector (integer units), the sensitivity."""
        return conditional_rounding_bound(self.scaled_clip, self.vector_length, self.beta)

    @property
    def rounding_inflation_actual(self) -> float:
        """Δ2/s - 1: how much rounding inflates the sensitivity at this granularity."""
        return self.l2_bound / self.scaled_clip - 1.0

    @property
    def total_variance(self) -> float:
        """V = (z·c/γ)²: the noise variance summed over ``cohort`` clients, integer units."""
        return (self.noise_multiplier * self.scaled_clip) ** 2

    @property
    def client_sigma(self) -> float:
        """A client's noise share: std (Skellam) or parameter (dgauss) sqrt(V/n)."""
        return math.sqrt(self.total_variance / self.cohort)

    @property
    def range_bound(self) -> float:
        """T(γ): the bound on |coordinate| of the noisy sum (module docstring)."""
        return self._range_bound(self.granularity)

    def noise_std(self, num_included: int | None = None) -> float:
        """Per-coordinate std of the summed noise in update units: z·c·sqrt(m/n)."""
        m = self.cohort if num_included is None else int(num_included)
        return self.noise_multiplier * self.l2_clip * math.sqrt(m / self.cohort)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, update: np.ndarray, rng: np.random.Generator,
               round_seed: bytes | int | None = None, *, noise_share: bool = True) -> np.ndarray:
        """One client's contribution: uint64 vector of ``vector_length`` entries in [0, 2^k).

        ``rng`` is the client's private generator (:func:`rng.noise_generator`): it draws the
        rounding and the noise. ``round_seed`` is the public per-round seed of the rotation
        (required when ``rotate``). ``noise_share=False`` leaves out the noise share: only for
        a data-free probe such as an audit canary (:mod:`.canary`), never for a client.
        Raises ValueError on a wrong shape or non-finite entries.
        """
        x = np.asarray(update, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"update has shape {x.shape}; the codec expects ({self.dim},)")
        if not np.all(np.isfinite(x)):
            raise ValueError("update has NaN or infinite entries: local training diverged")
        norm = float(np.linalg.norm(x))
        if norm > self.l2_clip:
            x = x * (self.l2_clip / norm)
        if self.rotate:
            if round_seed is None:
                raise ValueError("rotate=True: encode needs the round's public round_seed")
            x = rotate(x, round_seed)
        z = conditional_stochastic_round(x / self.granularity, self.l2_bound, rng)
        noisy = z + client_noise(rng, self.mechanism, self.total_variance, self.cohort,
                                 z.size) if noise_share else z
        return noisy.view(np.uint64) & np.uint64(self.modulus - 1)

    def decode(self, total: np.ndarray, num_included: int,
               round_seed: bytes | int | None = None) -> DecodedDPSum:
        """The server's view of a sum of ``num_included`` contributions (``total`` mod 2^k)."""
        total = np.asarray(total)
        if total.shape != (self.vector_length,):
            raise ValueError(f"sum has shape {total.shape}; expected ({self.vector_length},)")
        if not isinstance(num_included, int | np.integer) or num_included < 1:
            raise ValueError(f"num_included={num_included}: must be an int >= 1")
        if num_included > self.max_clients:  # type: ignore[operator]
            raise ValueError(f"num_included={num_included} > max_clients={self.max_clients}: "
                             "the codec's modulus was sized for at most max_clients clients")
        values = total.astype(np.uint64) & np.uint64(self.modulus - 1)
        centred = values.astype(np.int64)
        centred[values >= np.uint64(self.modulus >> 1)] -= np.int64(self.modulus)
        summed = centred.astype(np.float64) * self.granularity
        if self.rotate:
            if round_seed is None:
                raise ValueError("rotate=True: decode needs the round's public round_seed")
            summed = unrotate(summed, round_seed, self.dim)
        return DecodedDPSum(summed, int(num_included), self.noise_std(num_included),
                            self.granularity * math.sqrt(num_included) / 2.0)

    # ------------------------------------------------------------------ accounting
    def round_accountant(self, clients: int, included: int) -> PrivacyAccountant:
        """The accountant of one aggregated round in which ``included`` of ``clients`` clients'
        noise shares were summed, those clients taken as a uniform subset drawn without
        replacement (replace-one neighbours, Wang, Balle and Kasiviswanathan 2019): valid for
        fixed-size and, given the data-independent count, for Poisson cohorts."""
        return self.accountant(included / clients, num_included=included,
                               sampling="without_replacement")

    def accountant(self, sampling_rate: float, num_included: int | None = None, *,
                   subsampling: str = "general", sampling: str = "poisson",
                   orders: tuple[int, ...] = DEFAULT_ORDERS) -> PrivacyAccountant:
        """The accountant of this codec's rounds at client sampling rate q (``sampling``:
        'poisson' or 'without_replacement', see :class:`PrivacyAccountant`).

        ``num_included`` = m accounts a round in which m clients' noise shares were summed
        (variance V·m/n); the default assumes exactly the cohort. For a guarantee that holds
        whatever the dropouts, account each round with its own m in an ``RdpLedger``.
        """
        m = self.cohort if num_included is None else int(num_included)
        if not 1 <= m <= self.max_clients:  # type: ignore[operator]
            raise ValueError(f"num_included={m}: must be in [1, {self.max_clients}]")
        return PrivacyAccountant(
            mechanism=self.mechanism,
            noise_multiplier=self.noise_multiplier * math.sqrt(m / self.cohort),
            sampling_rate=sampling_rate,
            scaled_clip=self.scaled_clip,
            dim=self.vector_length,
            cohort=m,
            beta=self.beta,
            l2_sensitivity=self.l2_bound,
            orders=orders,
            subsampling=subsampling,
            sampling=sampling,
        )

    # ------------------------------------------------------------------ internals
    def _range_bound(self, gamma: float) -> float:
        n, big_n = int(self.max_clients), self.vector_length  # type: ignore[arg-type]
        s = self.l2_clip / gamma
        log_term = math.log(4.0 * big_n / self.delta_wrap)
        spread = min(1.0, math.sqrt(2.0 * log_term / big_n)) if self.rotate else 1.0
        signal = n * s * spread
        variance = (self.noise_multiplier * s) ** 2 * n / self.cohort
        if self.mechanism == "dgauss":
            noise = math.sqrt(2.0 * variance * log_term)
        else:
            noise = _skellam_quantile(variance, log_term)
        return signal + n + noise

    def _scaled_clip_for_inflation(self) -> float:
        """Smallest s with Δ(s, N, β) <= (1 + rounding_inflation)·s (ratio decreases in s)."""
        big_n, target = self.vector_length, 1.0 + self.rounding_inflation

        def ok(s: float) -> bool:
            return conditional_rounding_bound(s, big_n, self.beta) <= target * s

        lo, hi = 1e-3, 1.0
        while not ok(hi):
            lo, hi = hi, hi * 2.0
        for _ in range(100):
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
            if hi / lo < 1 + 1e-9:
                break
        return hi

    def _granularity_for_bits(self, bits: int) -> float:
        """Finest γ with T(γ) < 2^(bits-1) (T decreases in γ, towards n as γ → ∞)."""
        limit = float(1 << (bits - 1)) - 1.0
        if self.max_clients + 1.0 >= limit:  # type: ignore[operator]
            raise ValueError(f"bits={bits}: 2^{bits - 1} cannot hold the rounding error of "
                             f"{self.max_clients} clients, let alone the update and the noise")
        lo = hi = self.l2_clip
        while self._range_bound(hi) >= limit:
            lo, hi = hi, hi * 2.0
        while self._range_bound(lo) < limit:
            lo, hi = lo / 2.0, lo
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if self._range_bound(mid) >= limit else (lo, mid)
            if hi / lo < 1 + 1e-9:
                break
        return hi


def _bits_for(bound: float) -> int:
    """The smallest k >= 2 with 2^(k-1) > bound."""
    return max(2, int(math.ceil(bound)).bit_length() + 1)


def _skellam_quantile(variance: float, log_term: float) -> float:
    """Smallest t with Chernoff exponent t·asinh(t/V) - V(sqrt(1+(t/V)²) - 1) >= log_term."""
    if variance <= 0:
        return 0.0

    def exponent(t: float) -> float:
        u = t / variance
        # sqrt(1+u²) - 1 written without cancellation for small u
        return t * math.asinh(u) - variance * (u * u / (math.sqrt(1.0 + u * u) + 1.0))

    lo, hi = 0.0, max(1.0, math.sqrt(2.0 * variance * log_term))
    while exponent(hi) < log_term:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if exponent(mid) < log_term else (lo, mid)
        if hi - lo < 1e-9 * hi:
            break
    return hi
