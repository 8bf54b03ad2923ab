"""The canary audit's parts: public directions and participation, a canary's contribution
through the DP codec, and the estimator (ε of two Gaussians, the bootstrap interval)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from gptfl_secure.pipeline.config import ConfigError, RunConfig
from gptfl_secure.privacy.canary import (
    CANARY_NORM_FACTOR,
    MAX_EPSILON,
    CanaryDesign,
    encode_canary,
    estimate_epsilon,
    gaussian_pair_epsilon,
    hockey_stick,
)
from gptfl_secure.privacy.distributed import DistributedDPCodec
from gptfl_secure.privacy.hadamard import round_seed


def _gaussian_mechanism_delta(eps: float, mu: float) -> float:
    return stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)


@settings(max_examples=30, deadline=None)
@given(mu=st.floats(0.05, 6.0), scale=st.floats(1e-3, 10.0), shift=st.floats(-1.0, 1.0),
       delta=st.sampled_from([1e-3, 1e-5, 1e-7]))
def test_equal_stds_give_the_gaussian_mechanism_epsilon(mu, scale, shift, delta):
    eps = gaussian_pair_epsilon(shift, scale, shift + mu * scale, scale, delta)
    if eps == 0.0:
        assert _gaussian_mechanism_delta(0.0, mu) <= delta * (1 + 1e-6)
    else:
        assert _gaussian_mechanism_delta(eps, mu) == pytest.approx(delta, rel=1e-3)


@settings(max_examples=15, deadline=None)
@given(m0=st.floats(-1, 1), s0=st.floats(0.2, 3), m1=st.floats(-1, 1), s1=st.floats(0.2, 3),
       eps=st.floats(0, 3))
def test_hockey_stick_matches_numerical_integration(m0, s0, m1, s1, eps):
    # a dense trapezoid rule: adaptive quadrature misjudges the kinks where p = e^eps q
    lo, hi = min(m0 - 12 * s0, m1 - 12 * s1), max(m0 + 12 * s0, m1 + 12 * s1)
    x = np.linspace(lo, hi, 1_000_001)
    gap = stats.norm.pdf(x, m0, s0) - math.exp(eps) * stats.norm.pdf(x, m1, s1)
    exact = integrate.trapezoid(np.maximum(gap, 0.0), x)
    assert hockey_stick(m0, s0, m1, s1, eps) == pytest.approx(exact, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(m=st.floats(0, 3), s0=st.floats(0.5, 2), s1=st.floats(0.5, 2))
def test_pair_epsilon_is_symmetric_and_falls_with_delta(m, s0, s1):
    a = gaussian_pair_epsilon(0.0, s0, m, s1, 1e-5)
    assert a == pytest.approx(gaussian_pair_epsilon(m, s1, 0.0, s0, 1e-5), abs=1e-5)
    assert gaussian_pair_epsilon(0.0, s0, m, s1, 1e-3) <= a + 1e-6


def test_far_apart_gaussians_give_a_large_finite_epsilon_or_the_cap():
    assert 50 < gaussian_pair_epsilon(0.0, 1.0, 40.0, 1.0, 1e-5) < MAX_EPSILON
    assert gaussian_pair_epsilon(0.0, 1e-4, 1.0, 1.0, 1e-5) <= MAX_EPSILON
    assert gaussian_pair_epsilon(0.0, 1.0, 0.0, 1.0, 1e-5) == 0.0


def test_directions_are_public_unit_and_distinct():
    design = CanaryDesign(count=5, dim=300, seed=7, sampling_rate=0.3)
    again = CanaryDesign(count=5, dim=300, seed=7, sampling_rate=0.3)
    us = np.stack([design.direction(j) for j in range(10)])
    assert np.allclose(np.linalg.norm(us, axis=1), 1.0)
    assert np.array_equal(us, np.stack([again.direction(j) for j in range(10)]))
    gram = us @ us.T - np.eye(10)
    assert np.abs(gram).max() < 0.35  # independent directions in 300 dims: |cos| ~ 0.06
    other = CanaryDesign(count=5, dim=300, seed=8, sampling_rate=0.3)
    assert not np.allclose(other.direction(0), us[0])
    with pytest.raises(ValueError, match="must be in"):
        design.direction(10)


def test_participation_is_poisson_at_the_sampling_rate():
    design = CanaryDesign(count=400, dim=8, seed=1, sampling_rate=0.2)
    counts = np.array([design.participants(r).size for r in range(1, 51)])
    assert abs(counts.mean() - 80) < 4 * math.sqrt(400 * 0.2 * 0.8 / 50)
    assert np.array_equal(design.participants(3), design.participants(3))
    assert not np.array_equal(design.participants(3), design.participants(4))


def test_a_canary_is_clipped_to_the_clip_and_carries_no_noise():
    codec = DistributedDPCodec(100, 0.5, 1.0, 10)
    design = CanaryDesign(count=3, dim=100, seed=0, sampling_rate=0.5)
    rs = round_seed(0, 1)
    decoded = codec.decode(encode_canary(codec, design, 2, 1, rs), 1, rs).update_sum
    assert np.linalg.norm(decoded) == pytest.approx(0.5, rel=0.05)  # raw norm 10 x clip
    assert decoded @ design.direction(2) / np.linalg.norm(decoded) > 0.99
    assert CANARY_NORM_FACTOR > 1


def test_cosines_of_a_delta_built_from_inserted_canaries():
    design = CanaryDesign(count=50, dim=4000, seed=3, sampling_rate=0.5)
    delta = sum(design.direction(j) for j in range(50))
    cos_in, cos_out = design.cosines(delta)
    assert cos_in.min() > 0.08 and abs(cos_out).max() < 0.08  # 1/sqrt(50) vs 4/sqrt(4000)
    with pytest.raises(ValueError, match="zero"):
        design.cosines(np.zeros(4000))
    with pytest.raises(ValueError, match="shape"):
        design.cosines(np.ones(3))


def test_no_signal_gives_a_small_estimate_and_a_shift_a_large_one():
    rng = np.random.default_rng(0)
    d, k = 10_000, 1000
    null = rng.normal(0, d ** -0.5, size=(2, k))
    quiet = estimate_epsilon(null[0], null[1], 1e-5, d, resamples=50)
    assert quiet.epsilon < 1.0 and quiet.interval[0] <= quiet.epsilon <= quiet.interval[1]
    loud = estimate_epsilon(null[0] + 4 * d ** -0.5, null[1], 1e-5, d, resamples=50)
    assert loud.epsilon > 10 and loud.interval[0] > 5
    assert loud.to_json()["canaries"] == k


@pytest.mark.parametrize("args, message", [
    (([0.1], [0.0, 0.1], 1e-5, 10), "at least 2"),
    (([0.1, 0.1], [0.0, 0.1], 1e-5, 10), "every statistic is equal"),
    (([0.1, np.nan], [0.0, 0.1], 1e-5, 10), "finite"),
    (([0.1, 0.2], [0.0, 0.1], 1e-5, 0), "dim=0"),
    (([0.1, 0.2], [0.0, 0.1], 1.5, 10), "delta=1.5"),
])
def test_bad_estimator_inputs_raise(args, message):
    with pytest.raises(ValueError, match=message):
        estimate_epsilon(*args)


def test_bad_designs_raise():
    with pytest.raises(ValueError, match="count=0"):
        CanaryDesign(0, 10, 0, 0.5)
    with pytest.raises(ValueError, match="sampling_rate=0"):
        CanaryDesign(1, 10, 0, 0.0)


def test_canaries_need_distributed_dp():
    with pytest.raises(ConfigError, match="--dp-audit-canaries 10: .*--dp-noise-multiplier"):
        RunConfig(dp_audit_canaries=10)
    with pytest.raises(ConfigError, match="--dp-audit-canaries -1: must be >= 0"):
        RunConfig(dp_audit_canaries=-1, dp_noise_multiplier=1.0)
    assert RunConfig(dp_audit_canaries=10, dp_noise_multiplier=1.0).dp_audit_canaries == 10
