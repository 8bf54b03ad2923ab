"""The RDP bound for sampling without replacement (Wang, Balle, Kasiviswanathan 2019, Thm. 9)
under the replace-one relation: its closed form at order 2, an exact Rényi divergence it must
bound, its limits, and monotonicity."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from gptfl_secure.privacy.accounting import (
    PrivacyAccountant,
    skellam_rdp,
    wor_subsampled_rdp,
)

ORDERS = (2, 3, 4, 6, 8)
WOR = dict(sampling="without_replacement")


def _subsampled_gaussian_divergence(alpha: int, q: float, sigma: float) -> float:
    """D_α(P || Q) by quadrature, for a sum over m of N records drawn without replacement
    (q = m/N), every record 0 except the target: 1 in D, -1 in D' (replace-one, distance 2),
    plus N(0, σ²): P = (1-q)·N(0, σ²) + q·N(1, σ²), Q = (1-q)·N(0, σ²) + q·N(-1, σ²)."""
    def log_mix(x, shift):
        return np.logaddexp(math.log1p(-q) + stats.norm.logpdf(x, 0, sigma),
                            math.log(q) + stats.norm.logpdf(x, shift, sigma))

    def integrand(x):
        return np.exp(alpha * log_mix(x, 1.0) - (alpha - 1) * log_mix(x, -1.0))

    value, _ = integrate.quad(integrand, -40 * sigma - 5, 40 * sigma + 5, limit=500,
                              points=[-1.0, 0.0, 1.0])
    return math.log(value) / (alpha - 1)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("q", [0.01, 0.1, 0.3, 0.7, 0.95])
def test_wor_bound_holds_for_an_exact_subsampled_gaussian_divergence(sigma, q):
    # the bound with the base curve at the replace-one distance 2 must exceed the true value;
    # with the add/remove distance 1 (a mutant) it falls below it for q >= 0.7 (checked once)
    acct = PrivacyAccountant("gaussian", sigma, q, orders=ORDERS, **WOR)
    exact = np.array([_subsampled_gaussian_divergence(a, q, sigma) for a in ORDERS])
    assert np.all(exact <= acct.rdp * (1 + 1e-9))
    if q >= 0.7:
        mutant = wor_subsampled_rdp(ORDERS, q, lambda a: a / (2 * sigma**2))
        assert np.any(exact > mutant)


@settings(deadline=None, max_examples=40)
@given(q=st.floats(1e-4, 1.0), variance=st.floats(1e2, 1e6), clip=st.floats(1.0, 100.0))
def test_order_two_is_the_closed_form(q, variance, clip):
    """α = 2: ε_q(2) = min(log(1 + q²·min(4(e^ε(2) - 1), 2e^ε(2))), ε(2))."""
    def base(a):
        return skellam_rdp(a, 2 * clip, 2 * clip * clip, variance)

    e2 = float(base(np.array([2]))[0])
    expected = min(math.log1p(q * q * min(4 * math.expm1(e2), 2 * math.exp(e2))), e2)
    got = wor_subsampled_rdp([2], q, base)[0]
    assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-15)


def test_log_space_sum_equals_the_plain_sum_for_the_gaussian():
    """The vectorized log-space bound against the theorem's sum written term by term (Gaussian
    with noise multiplier σ, replace-one: ε(j) = j·2²/(2σ²))."""
    sigma, q = 3.0, 0.05
    acct = PrivacyAccountant("gaussian", sigma, q, orders=tuple(range(2, 25)), **WOR)
    for alpha in range(2, 25):
        def eps(j):
            return 2.0 * j / sigma**2
        total = 1 + q * q * math.comb(alpha, 2) * min(4 * math.expm1(eps(2)), 2 * math.exp(eps(2)))
        total += sum(2 * q**j * math.comb(alpha, j) * math.exp((j - 1) * eps(j))
                     for j in range(3, alpha + 1))
        expected = min(math.log(total) / (alpha - 1), eps(alpha))
        assert math.isclose(acct.rdp[alpha - 2], expected, rel_tol=1e-9)


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam", "dgauss"])
def test_q_to_one_tends_to_the_unsampled_curve(mechanism):
    kw = dict(scaled_clip=200.0, dim=256, cohort=8) if mechanism != "gaussian" else {}
    full = PrivacyAccountant(mechanism, 1.2, 1.0, **kw, **WOR)
    near = PrivacyAccountant(mechanism, 1.2, 1 - 1e-9, **kw, **WOR)
    unsampled = full.base_rdp(np.array(full.orders))
    np.testing.assert_allclose(full.rdp, unsampled, rtol=1e-12)
    np.testing.assert_allclose(near.rdp, unsampled, rtol=1e-6)
    assert np.all(PrivacyAccountant(mechanism, 1.2, 0.3, **kw, **WOR).rdp <= unsampled)
    assert PrivacyAccountant(mechanism, 1.2, 0.0, **kw, **WOR).epsilon(10, 1e-5) == 0.0


def test_replace_one_doubles_the_sensitivity():
    """The unsampled replace-one curve of the Gaussian is the add/remove one at z/2."""
    wor = PrivacyAccountant("gaussian", 2.0, 1.0, **WOR)
    poisson = PrivacyAccountant("gaussian", 1.0, 1.0)
    np.testing.assert_allclose(wor.rdp, poisson.rdp, rtol=1e-12)
    assert wor.neighbouring == "replace_one" and poisson.neighbouring == "add_remove"
    assert "Wang" in wor.bound["name"] and "Zhu" in poisson.bound["name"]


@settings(deadline=None, max_examples=25)
@given(mechanism=st.sampled_from(["gaussian", "skellam", "dgauss"]),
       q=st.floats(0.001, 0.9), z=st.floats(0.5, 5.0), rounds=st.integers(1, 200),
       factor=st.floats(1.05, 3.0))
def test_epsilon_grows_with_rounds_and_rate_and_falls_with_noise(mechanism, q, z, rounds, factor):
    kw = dict(scaled_clip=300.0, dim=512, cohort=10) if mechanism != "gaussian" else {}
    orders = tuple(range(2, 65))

    def eps(q_, z_, rounds_):
        return PrivacyAccountant(mechanism, z_, q_, orders=orders, **kw, **WOR).epsilon(
            rounds_, 1e-5)

    with warnings.catch_warnings():  # "best order is the largest": harmless here
        warnings.simplefilter("ignore", RuntimeWarning)
        base = eps(q, z, rounds)
        assert eps(q, z, rounds + 1) >= base - 1e-12
        assert eps(min(1.0, q * factor), z, rounds) >= base - 1e-12
        assert eps(q, z * factor, rounds) <= base + 1e-12


def test_bad_sampling_arguments_are_refused():
    with pytest.raises(ValueError, match="sampling='bogus'"):
        PrivacyAccountant("gaussian", 1.0, 0.1, sampling="bogus")
    with pytest.raises(ValueError, match="gaussian-approx"):
        PrivacyAccountant("gaussian", 1.0, 0.1, subsampling="gaussian-approx", **WOR)
    with pytest.raises(ValueError, match="sampling_rate"):
        wor_subsampled_rdp([2], 1.5, lambda a: a * 1.0)
