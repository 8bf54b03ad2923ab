"""RDP accounting for distributed DP: Skellam and distributed discrete Gaussian, subsampled,
composed over rounds and converted to (ε, δ).

Privacy unit: one client. Two neighbouring relations, one per sampling scheme: add/remove (a
client's whole contribution present or absent; ``sampling="poisson"``) and replace-one (one
client's data replaced by another's; ``sampling="without_replacement"``, the one a federated
run's rounds are accounted with, proofs/dp-guarantees.md). Every quantity below is in the
integer domain the noise is added in: a client's rounded vector has L2 norm <= Δ2 and L1 norm
<= Δ1, and the noise summed over the cohort has variance V.

Per-round RDP ε(α) of the unsampled mechanism at sensitivities Δ2, Δ1 (replace-one: 2·Δ2, 2·Δ1),
for integer orders α >= 2:

* Skellam, total variance V (Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for
  Differentially Private Federated Learning", NeurIPS; the multi-dimensional Skellam RDP theorem
  of arXiv:2110.04995, written there with Poisson means μ = V/2):

      ε(α) = α·Δ2²/(2V) + min( ((2α - 1)·Δ2² + 6·Δ1) / (4V²),  3·Δ1/(2V) ).

  As V → ∞ with Δ2²/V fixed the extra term vanishes and ε(α) → α/(2z²), the Gaussian's RDP with
  noise multiplier z = sqrt(V)/Δ2.

* Distributed discrete Gaussian: n clients each add N_Z(0, σ²)^d (Kairouz, Liu, Steinke 2021,
  "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation",
  ICML; Thm. 1 and Prop. 14 / Eq. 17 of arXiv:2102.06387), valid for σ >= 1/2:

      τ    = 10 · Σ_{k=1}^{n-1} exp(-2π²σ² · k/(k+1))
      a2   = Δ2 / sqrt(n σ²),   a1 = Δ1 / sqrt(n σ²)
      ε(α) = min( α/2 · a2² + τ·d,
                  α/2 · (a2² + 2·a1·τ + τ²·d),
                  α/2 · (a2 + sqrt(d)·τ)² ).

  With n = 1, τ = 0 and this is the discrete Gaussian's exact RDP α·Δ2²/(2σ²) (Canonne, Kamath,
  Steinke 2020).

* Gaussian (the continuous reference): opacus's ``compute_rdp`` for the sampled Gaussian
  mechanism (Mironov, Talwar, Zhang 2019), exact for Poisson sampling.

Poisson subsampling at rate q (each client takes part in a round independently with probability
q): for Skellam and discrete Gaussian, the general upper bound of Zhu & Wang 2019 ("Poisson
Subsampled Rényi Differential Privacy", ICML; the bound for an arbitrary mechanism, which needs no
property beyond RDP at integer orders):

      ε_q(α) <= 1/(α-1) · log( (1-q)^{α-1}·(αq - q + 1)
                              + C(α,2)·q²·(1-q)^{α-2}·e^{ε(2)}
                              + 3·Σ_{l=3}^{α} C(α,l)·q^l·(1-q)^{α-l}·e^{(l-1)·ε(l)} ),

taking the minimum with the unsampled ε(α) (subsampling never hurts). It is within log(3)/(α-1)
of optimal; for the Gaussian it is slightly above the exact value opacus computes (their factor
is 1, not 3), which the tests measure. No Gaussian approximation of the discrete mechanisms is
used anywhere.

Composition over rounds adds RDP at every order. Conversion to (ε, δ): the improved conversion
of Balle et al. 2020 (Thm. 21 of arXiv:1905.09982), identical to opacus's ``get_privacy_spent``
and Canonne-Kamath-Steinke 2020's Prop. 12:

      ε = min_α  ε_RDP(α) + log((α-1)/α) - (log δ + log α)/(α - 1).

Sampling without replacement (``sampling="without_replacement"``): a subset of exactly m of the N
clients drawn uniformly, q = m/N, under the replace-one (substitution) neighbouring relation: one
client's data is replaced by any other, the population and every count stay the same. The base
curve is then the mechanism's RDP at the replace-one sensitivities 2·Δ2 and 2·Δ1 (the sum moves by
x - x', both clipped), and Wang, Balle and Kasiviswanathan 2019 ("Subsampled Rényi Differential
Privacy and Analytical Moments Accountant", AISTATS; Thm. 9 of arXiv:1808.00087), with
ε(∞) = ∞ (none of these mechanisms has a bounded privacy loss), give for integer α >= 2:

      ε_q(α) <= 1/(α-1) · log( 1 + q²·C(α,2)·min(4·(e^{ε(2)} - 1), 2·e^{ε(2)})
                              + 2·Σ_{j=3}^{α} q^j·C(α,j)·e^{(j-1)·ε(j)} ),

again min'ed with the unsampled ε(α) (quasi-convexity of the Rényi divergence: a subsample of D
and of D' either coincide or are replace-one neighbours).

Not covered: dropouts and variable cohorts change the noise actually added; the accountant takes
the clients whose noise shares are summed. A round in which m clients' noise shares arrive has
variance V·m/n: account it with ``num_included``-adjusted parameters (see
:meth:`DistributedDPCodec.accountant`) in an :class:`RdpLedger`. Which sampling and relation a
run's rounds satisfy is argued in proofs/dp-guarantees.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .mechanisms import MECHANISMS
from .rounding import DEFAULT_BETA, conditional_rounding_bound

DEFAULT_DELTA = 1e-5
DEFAULT_ORDERS: tuple[int, ...] = tuple(range(2, 257)) + (320, 384, 448, 512)
ACCOUNTED_MECHANISMS = (*MECHANISMS, "gaussian")
SUBSAMPLING_BOUNDS = ("general", "gaussian-approx")
SAMPLING_SCHEMES = ("poisson", "without_replacement")
NEIGHBOURING = {"poisson": "add_remove", "without_replacement": "replace_one"}
BOUNDS = {
    "poisson": {"name": "Poisson-subsampled RDP, general upper bound (Zhu and Wang 2019)",
                "reference": "Zhu, Wang. Poisson Subsampled Renyi Differential Privacy. "
                             "ICML 2019"},
    "without_replacement": {
        "name": "RDP of sampling without replacement (Wang, Balle, Kasiviswanathan 2019, Thm. 9)",
        "reference": "Wang, Balle, Kasiviswanathan. Subsampled Renyi Differential Privacy and "
                     "Analytical Moments Accountant. AISTATS 2019, arXiv:1808.00087"},
}


# ------------------------------------------------------------------------------------- δ
def check_delta(delta: float, num_clients: int) -> float:
    """Validate δ for a population of ``num_clients``: 0 < δ < 1 and δ <= 1/num_clients.

    A δ above 1/n allows mechanisms that publish one client's data outright with probability δ
    and still claim (ε, δ)-DP, so it is refused. Returns ``delta``; raises ValueError.
    """
    if not isinstance(num_clients, int | np.integer) or num_clients < 1:
        raise ValueError(f"num_clients={num_clients}: must be a positive int")
    if not (isinstance(delta, float | int) and 0 < delta < 1):
        raise ValueError(f"delta={delta}: must be in (0, 1)")
    if delta > 1.0 / num_clients:
        raise ValueError(f"delta={delta} exceeds 1/num_clients = {1.0 / num_clients:.3g}: "
                         f"use --dp-delta <= 1/{num_clients}")
    return float(delta)


# --------------------------------------------------------------------- unsampled RDP
def _orders_array(orders: Sequence[int] | np.ndarray) -> np.ndarray:
    a = np.asarray(orders)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("orders must be a non-empty 1-D sequence")
    if not np.all(np.equal(np.mod(a, 1), 0)) or np.any(a < 2):
        raise ValueError("orders must be integers >= 2 (the subsampling bound needs them)")
    return a.astype(np.int64)


def skellam_rdp(orders: Sequence[int] | np.ndarray, l2_sensitivity: float,
                l1_sensitivity: float, variance: float) -> np.ndarray:
    """RDP ε(α) of the Skellam mechanism with total ``variance`` V (see module docstring)."""
    a = _orders_array(orders).astype(np.float64)
    if not variance > 0:
        return np.full(a.shape, np.inf)
    d2, d1, v = float(l2_sensitivity), float(l1_sensitivity), float(variance)
    extra = np.minimum(((2 * a - 1) * d2 * d2 + 6 * d1) / (4 * v * v), 3 * d1 / (2 * v))
    return a * d2 * d2 / (2 * v) + extra


def distributed_dgauss_tau(sigma: float, num_clients: int) -> float:
    """τ = 10·Σ_{k=1}^{n-1} exp(-2π²σ²·k/(k+1)) (KLS21 Thm. 1); 0 for a single client."""
    k = np.arange(1, int(num_clients), dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * sigma * sigma * k / (k + 1))))


def distributed_dgauss_rdp(orders: Sequence[int] | np.ndarray, l2_sensitivity: float,
                           l1_sensitivity: float, sigma: float, num_clients: int,
                           dim: int) -> np.ndarray:
    """RDP of the sum of ``num_clients`` independent N_Z(0, sigma²)^dim (KLS21 Prop. 14).

    ``sigma`` is each client's discrete Gaussian parameter; raises ValueError if sigma < 1/2
    (outside the theorem's range).
    """
    a = _orders_array(orders).astype(np.float64)
    if sigma < 0.5:
        raise ValueError(f"per-client discrete Gaussian sigma={sigma:.4g} < 1/2: the distributed "
                         "discrete Gaussian bound (KLS21 Thm. 1) does not apply; use finer "
                         "granularity, more noise or fewer clients")
    tau = distributed_dgauss_tau(sigma, num_clients)
    scale = math.sqrt(num_clients) * sigma
    a2, a1 = l2_sensitivity / scale, l1_sensitivity / scale
    t1 = a / 2 * a2 * a2 + tau * dim
    t2 = a / 2 * (a2 * a2 + 2 * a1 * tau + tau * tau * dim)
    t3 = a / 2 * (a2 + math.sqrt(dim) * tau) ** 2
    return np.minimum(np.minimum(t1, t2), t3)


def gaussian_rdp(orders: Sequence[int] | np.ndarray, noise_multiplier: float,
                 sampling_rate: float) -> np.ndarray:
    """RDP of the Poisson-sampled Gaussian mechanism, from opacus (exact; Mironov et al. 2019)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    a = _orders_array(orders)
    return np.asarray(compute_rdp(q=float(sampling_rate), noise_multiplier=float(noise_multiplier),
                                  steps=1, orders=[float(x) for x in a]), dtype=np.float64)


# ---------------------------------------------------------------------- subsampling
def _subsampling_grid(orders: Sequence[int] | np.ndarray, sampling_rate: float,
                      base_rdp: Callable[[np.ndarray], np.ndarray]):
    """Shared set-up of the binomial-sum bounds: (orders a, q, ε(l) for l = 2..max a, and the
    (orders × l) arrays α, l, log C(α, l) with -inf where l > α)."""
    from scipy import special  # here, not at import: a node that only encodes needs no scipy
    a = _orders_array(orders)
    q = float(sampling_rate)
    if not 0 <= q <= 1:
        raise ValueError(f"sampling_rate={q}: must be in [0, 1]")
    ls = np.arange(2, int(a.max()) + 1)
    eps_l = np.asarray(base_rdp(ls), dtype=np.float64)  # eps_l[l - 2] = ε(l)
    alpha = a[:, None].astype(np.float64)  # (orders, 1)
    lf = ls[None, :].astype(np.float64)  # (1, l = 2..top)
    with np.errstate(invalid="ignore"):
        log_binom = (special.gammaln(alpha + 1) - special.gammaln(lf + 1)
                     - special.gammaln(np.maximum(alpha - lf, 0) + 1))
    log_binom = np.where(lf <= alpha, log_binom, -np.inf)
    return a, q, eps_l, alpha, lf, log_binom


def poisson_subsampled_rdp(orders: Sequence[int] | np.ndarray, sampling_rate: float,
                           base_rdp: Callable[[np.ndarray], np.ndarray],
                           *, tight: bool = False) -> np.ndarray:
    """RDP of the Poisson-subsampled mechanism (add/remove), min'ed with the unsampled RDP.

    ``base_rdp`` maps an int array of orders to the unsampled ε(α). ``tight=False`` (default):
    Zhu & Wang 2019's general bound (module docstring), valid for every mechanism.
    ``tight=True``: the same sum with factor 1 instead of 3, i.e.
    log E[(1 - q + q·L)^α]/(α-1) expanded binomially; it is exact for the sampled Gaussian
    (Mironov, Talwar, Zhang 2019: it equals opacus's value) but NOT a proven bound for Skellam or
    the discrete Gaussian: using it for them is the Gaussian approximation (close to the truth
    in the Gaussian limit, i.e. large scaled clip and variance, not a guarantee).
    """
    from scipy import special  # here, not at import: a node that only encodes needs no scipy
    a, q, eps_l, alpha, lf, log_binom = _subsampling_grid(orders, sampling_rate, base_rdp)
    if q == 0:
        return np.zeros(a.shape)
    if q == 1:
        return eps_l[a - 2].copy()
    log_q, log_1q = math.log(q), math.log1p(-q)
    with np.errstate(invalid="ignore", over="ignore"):
        terms = log_binom + lf * log_q + (alpha - lf) * log_1q + (lf - 1) * eps_l[None, :]
    if not tight:
        terms = terms + np.where(lf >= 3, math.log(3.0), 0.0)
    terms = np.where(np.isfinite(log_binom), terms, -np.inf)
    first = (alpha - 1) * log_1q + np.log(alpha * q - q + 1)  # (1-q)^{α-1}(αq - q + 1)
    log_a = special.logsumexp(np.concatenate([first, terms], axis=1), axis=1)
    return np.minimum(log_a / (a - 1), eps_l[a - 2])


def wor_subsampled_rdp(orders: Sequence[int] | np.ndarray, sampling_rate: float,
                       base_rdp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """RDP of the mechanism run on a uniformly drawn subset of m = q·N of N records, without
    replacement, under the replace-one relation (Wang, Balle, Kasiviswanathan 2019, Thm. 9;
    the formula is in the module docstring), min'ed with the unsampled RDP.

    ``base_rdp`` maps an int array of orders to the unsampled replace-one ε(α) (for the sum
    mechanisms here: at sensitivity 2·Δ2). Valid for integer orders >= 2 and every mechanism
    (it takes ε(∞) = ∞). q = 1 gives the unsampled curve; q = 0, zero.
    """
    from scipy import special  # here, not at import: a node that only encodes needs no scipy
    a, q, eps_l, alpha, lf, log_binom = _subsampling_grid(orders, sampling_rate, base_rdp)
    if q == 0:
        return np.zeros(a.shape)
    log_q = math.log(q)
    e2 = float(eps_l[0])
    # log min(4(e^{ε(2)} - 1), 2 e^{ε(2)}) without overflow
    log_second = min(math.log(4.0) + e2 + math.log(-math.expm1(-e2)) if e2 > 0 else -math.inf,
                     math.log(2.0) + e2)
    with np.errstate(invalid="ignore", over="ignore"):
        higher = math.log(2.0) + log_binom + lf * log_q + (lf - 1) * eps_l[None, :]
        second = log_binom[:, :1] + 2 * log_q + log_second
    terms = np.where(lf >= 3, higher, -np.inf)
    terms = np.where(np.isfinite(log_binom), terms, -np.inf)
    pieces = np.concatenate([np.zeros((len(a), 1)), second, terms], axis=1)
    log_a = special.logsumexp(pieces, axis=1)
    return np.minimum(log_a / (a - 1), eps_l[a - 2])


# ----------------------------------------------------------------------- conversion
def rdp_to_epsilon(orders: Sequence[int] | np.ndarray, rdp: np.ndarray,
                   delta: float) -> tuple[float, int]:
    """(ε, best order) from composed RDP at ``orders`` (Balle et al. 2020 conversion)."""
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"orders {a.shape} and rdp {r.shape} differ in shape")
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta}: must be in (0, 1)")
    with np.errstate(invalid="ignore"):
        eps = r - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    if np.all(~np.isfinite(eps)):
        return math.inf, int(a[0])
    i = int(np.nanargmin(np.where(np.isfinite(eps), eps, np.inf)))
    if i == len(a) - 1 and len(a) > 1:
        warnings.warn("the best RDP order is the largest one: ε may be overestimated; "
                      "pass larger orders", RuntimeWarning, stacklevel=2)
    return max(0.0, float(eps[i])), int(a[i])


# ------------------------------------------------------------------------ accountant
@dataclass(frozen=True)
class PrivacyAccountant:
    """(ε, δ) of ``rounds`` rounds of a distributed-DP sum with client sampling.

    Args:
        mechanism: 'skellam', 'dgauss' or 'gaussian' (the continuous reference, via opacus).
        noise_multiplier: z = (std of the noise summed over the cohort) / (L2 clip), the same
            meaning as DP-SGD's; in integer units the summed noise has variance V = (z·s)².
        sampling_rate: q in [0, 1]: with Poisson sampling the probability that a given client
            takes part in a round; without replacement, the fraction m/N of clients drawn.
        scaled_clip: s = c/γ, the clip norm in integer units (required unless 'gaussian').
        dim: coordinates noised (the padded dimension after rotation).
        cohort: n, the number of clients whose noise shares make up V (used by 'dgauss': each
            adds N_Z(0, V/n)).
        beta: conditional-rounding parameter; sets the default Δ2 = Δ(s, dim, β).
        l2_sensitivity / l1_sensitivity: override Δ2 / Δ1 in integer units (default Δ2 from
            conditional rounding and Δ1 = min(sqrt(dim)·Δ2, Δ2²), valid for integer vectors).
        orders: integer RDP orders.
        subsampling: 'general' (Zhu-Wang's bound, proven for every mechanism; the default) or
            'gaussian-approx' (factor 1: exact for 'gaussian', an approximation for the
            discrete mechanisms; see :func:`poisson_subsampled_rdp`). Poisson sampling only.
        sampling: 'poisson' (add/remove neighbours, Zhu-Wang's bound) or 'without_replacement'
            (replace-one neighbours: the base curve at sensitivities 2·Δ2, 2·Δ1, and Wang, Balle
            and Kasiviswanathan's bound, :func:`wor_subsampled_rdp`).

    Reveals nothing: it is a pure function of public parameters.
    """

    mechanism: str
    noise_multiplier: float
    sampling_rate: float
    scaled_clip: float | None = None
    dim: int = 1
    cohort: int = 1
    beta: float = DEFAULT_BETA
    l2_sensitivity: float | None = None
    l1_sensitivity: float | None = None
    orders: tuple[int, ...] = field(default=DEFAULT_ORDERS)
    subsampling: str = "general"
    sampling: str = "poisson"

    def __post_init__(self) -> None:
        if self.mechanism not in ACCOUNTED_MECHANISMS:
            raise ValueError(f"mechanism={self.mechanism!r}: one of {ACCOUNTED_MECHANISMS}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"noise_multiplier={self.noise_multiplier}: must be finite and > 0")
        if not 0 <= self.sampling_rate <= 1:
            raise ValueError(f"sampling_rate={self.sampling_rate}: must be in [0, 1]")
        if self.subsampling not in SUBSAMPLING_BOUNDS:
            raise ValueError(f"subsampling={self.subsampling!r}: one of {SUBSAMPLING_BOUNDS}")
        if self.sampling not in SAMPLING_SCHEMES:
            raise ValueError(f"sampling={self.sampling!r}: one of {SAMPLING_SCHEMES}")
        if self.sampling == "without_replacement" and self.subsampling != "general":
            raise ValueError("subsampling='gaussian-approx' has no counterpart without "
                             "replacement: use subsampling='general'")
        if self.mechanism != "gaussian":
            s = self.scaled_clip
            if s is None or not (math.isfinite(s) and s > 0):
                raise ValueError(f"{self.mechanism}: scaled_clip (c/γ) must be a number > 0")
        if not isinstance(self.dim, int | np.integer) or self.dim < 1:
            raise ValueError(f"dim={self.dim}: must be a positive int")
        if not isinstance(self.cohort, int | np.integer) or self.cohort < 1:
            raise ValueError(f"cohort={self.cohort}: must be a positive int")
        object.__setattr__(self, "orders", tuple(int(x) for x in _orders_array(self.orders)))
        if self.mechanism == "dgauss":
            distributed_dgauss_rdp([2], 1.0, 1.0, self.client_sigma, self.cohort, self.dim)

    # ---- integer-domain parameters
    @property
    def l2(self) -> float:
        """Δ2 in integer units (for 'gaussian': 1, i.e. units of the clip)."""
        if self.l2_sensitivity is not None:
            return float(self.l2_sensitivity)
        if self.mechanism == "gaussian":
            return 1.0
        return conditional_rounding_bound(float(self.scaled_clip), int(self.dim), self.beta)

    @property
    def l1(self) -> float:
        """Δ1 in integer units: override, else min(sqrt(dim)·Δ2, Δ2²)."""
        if self.l1_sensitivity is not None:
            return float(self.l1_sensitivity)
        return min(math.sqrt(self.dim) * self.l2, self.l2 * self.l2)

    @property
    def neighbouring(self) -> str:
        """'add_remove' (Poisson sampling) or 'replace_one' (without replacement)."""
        return NEIGHBOURING[self.sampling]

    @property
    def bound(self) -> dict[str, str]:
        """The subsampling bound used: ``{"name": ..., "reference": ...}``."""
        return dict(BOUNDS[self.sampling])

    @property
    def _relation_factor(self) -> float:
        """How far one neighbour moves the sum, in units of a client's bound: 1 (add/remove)
        or 2 (replace-one: x - x' with both clipped)."""
        return 2.0 if self.neighbouring == "replace_one" else 1.0

    @property
    def total_variance(self) -> float:
        """V = (z·s)²: variance of the noise summed over the cohort, integer units."""
        s = 1.0 if self.mechanism == "gaussian" else float(self.scaled_clip)
        return (self.noise_multiplier * s) ** 2

    @property
    def client_sigma(self) -> float:
        """Each client's discrete Gaussian parameter sqrt(V/n) ('dgauss')."""
        return math.sqrt(self.total_variance / self.cohort)

    @property
    def effective_noise_multiplier(self) -> float:
        """sqrt(V)/Δ2: the noise multiplier against the inflated (rounded) sensitivity."""
        return math.sqrt(self.total_variance) / self.l2

    # ---- RDP
    def base_rdp(self, orders: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per-round RDP without subsampling, at ``orders``, for the neighbouring relation of
        ``sampling`` (replace-one doubles both sensitivities)."""
        f = self._relation_factor
        l2, l1 = f * self.l2, f * self.l1
        if self.mechanism == "skellam":
            return skellam_rdp(orders, l2, l1, self.total_variance)
        if self.mechanism == "dgauss":
            return distributed_dgauss_rdp(orders, l2, l1, self.client_sigma,
                                          self.cohort, self.dim)
        return gaussian_rdp(orders, self.noise_multiplier / l2, 1.0)

    @cached_property
    def rdp(self) -> np.ndarray:
        """Per-round RDP with subsampling at rate q (``sampling``), at ``self.orders``."""
        if self.sampling == "without_replacement":
            return wor_subsampled_rdp(self.orders, self.sampling_rate, self.base_rdp)
        if self.mechanism == "gaussian":
            return gaussian_rdp(self.orders, self.noise_multiplier / self.l2, self.sampling_rate)
        return poisson_subsampled_rdp(self.orders, self.sampling_rate, self.base_rdp,
                                      tight=self.subsampling == "gaussian-approx")

    def epsilon(self, rounds: int, delta: float) -> float:
        """ε after ``rounds`` rounds at ``delta`` (0 rounds: 0)."""
        return self.epsilon_and_order(rounds, delta)[0]

    def epsilon_and_order(self, rounds: int, delta: float) -> tuple[float, int]:
        if not isinstance(rounds, int | np.integer) or rounds < 0:
            raise ValueError(f"rounds={rounds}: must be an int >= 0")
        if rounds == 0 or self.sampling_rate == 0:
            return 0.0, self.orders[0]
        return rdp_to_epsilon(self.orders, self.rdp * int(rounds), delta)


class RdpLedger:
    """Running RDP total over heterogeneous releases (rounds with different noise, label
    discovery, ...). ``add`` composes; ``epsilon`` converts. Orders must match the accountants'.
    """

    def __init__(self, orders: Sequence[int] = DEFAULT_ORDERS) -> None:
        self.orders = tuple(int(x) for x in _orders_array(orders))
        self._rdp = np.zeros(len(self.orders))
        self.releases = 0

    @property
    def rdp(self) -> np.ndarray:
        return self._rdp.copy()

    def add(self, accountant: PrivacyAccountant, rounds: int = 1) -> None:
        if accountant.orders != self.orders:
            raise ValueError("accountant and ledger use different RDP orders")
        self.add_rdp(accountant.rdp * int(rounds), int(rounds))

    def add_rdp(self, rdp: np.ndarray, releases: int = 1) -> None:
        rdp = np.asarray(rdp, dtype=np.float64)
        if rdp.shape != self._rdp.shape:
            raise ValueError(f"rdp has shape {rdp.shape}; the ledger holds {self._rdp.shape}")
        self._rdp = self._rdp + rdp
        self.releases += releases

    def epsilon(self, delta: float) -> float:
        if self.releases == 0:
            return 0.0
        return rdp_to_epsilon(self.orders, self._rdp, delta)[0]


def noise_multiplier_for_epsilon(target_epsilon: float, rounds: int, delta: float,
                                 *, low: float = 1e-2, high: float = 1e3,
                                 **accountant_kwargs: object) -> float:
    """The smallest z (to 0.1%) with ``PrivacyAccountant(noise_multiplier=z, **kwargs)``'s ε
    after ``rounds`` at most ``target_epsilon``. Raises ValueError if even ``high`` is not enough.
    """
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon={target_epsilon}: must be > 0")

    def eps(z: float) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                acct = PrivacyAccountant(noise_multiplier=z, **accountant_kwargs)  # type: ignore[arg-type]
            except ValueError:  # e.g. a per-client dgauss sigma below 1/2: no bound at all
                return math.inf
            return acct.epsilon(rounds, delta)

    if eps(high) > target_epsilon:
        raise ValueError(f"ε={target_epsilon} is out of reach even at noise multiplier {high}")
    if eps(low) <= target_epsilon:
        return low
    lo, hi = math.log(low), math.log(high)
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        if eps(math.exp(mid)) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)
