"""--client-sampling: Poisson cohorts include each client with probability q and replay from the
run's seed; out-of-range cohorts are skipped before anyone trains; the ring is sized for the
public cap; fixed sampling draws exactly what it always drew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gptfl_secure.pipeline.codecs import make_codec, make_dp_codec
from gptfl_secure.pipeline.config import ConfigError, RunConfig
from gptfl_secure.pipeline.rounds import plan_round
from gptfl_secure.pipeline.sampling import (
    CAP_TAIL,
    CohortOutOfRange,
    CohortSampling,
    cohort_sampling,
    poisson_cohort_cap,
)
from gptfl_secure.pipeline.seeds import sampling_rng


def test_poisson_includes_each_client_with_probability_q():
    sampler = CohortSampling(40, 10, "poisson")
    rounds = 4000
    hits = np.zeros(40)
    sizes = []
    for r in range(1, rounds + 1):
        ids, _ = sampler.sample(sampling_rng(7, r))
        hits[ids] += 1
        sizes.append(len(ids))
    q = sampler.rate
    sd = np.sqrt(q * (1 - q) / rounds)
    assert np.all(np.abs(hits / rounds - q) < 5 * sd)  # every client, not only on average
    assert abs(np.mean(sizes) - 10) < 5 * np.sqrt(40 * q * (1 - q) / rounds)
    # sizes are Binomial(40, q): the variance says so too (a fixed cohort would have none)
    assert 0.8 * 40 * q * (1 - q) < np.var(sizes) < 1.2 * 40 * q * (1 - q)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), r=st.integers(1, 10_000),
       mode=st.sampled_from(["poisson", "fixed"]), dropout=st.floats(0, 0.5))
def test_a_round_replays_identically_from_its_seed(seed, r, mode, dropout):
    sampler = CohortSampling(30, 6, mode)
    first = plan_round(r, clients=30, cohort=sampler, seed=seed, dropout=dropout)
    again = plan_round(r, clients=30, cohort=CohortSampling(30, 6, mode), seed=seed,
                       dropout=dropout)
    assert first.sampled == again.sampled and first.dropouts == again.dropouts
    assert (first.skip is None) == (again.skip is None)
    assert set(first.dropouts) <= set(first.sampled)


def test_fixed_sampling_draws_what_it_always_drew():
    for r in range(1, 20):
        expected = np.sort(sampling_rng(3, r).choice(50, size=10, replace=False))
        assert plan_round(r, clients=50, cohort=10, seed=3).sampled == expected.tolist()
        assert plan_round(r, clients=50, cohort=CohortSampling(50, 10), seed=3).sampled == \
            expected.tolist()


@settings(deadline=None, max_examples=60)
@given(clients=st.integers(1, 5000), q=st.floats(0.001, 1.0))
def test_the_cap_is_the_public_tail_bound(clients, q):
    cap = poisson_cohort_cap(clients, q)
    assert 0 <= cap <= clients
    assert stats.binom.sf(cap, clients, q) <= CAP_TAIL
    if cap > 0:
        assert stats.binom.sf(cap - 1, clients, q) > CAP_TAIL


class _AllIn:
    """A generator stand-in that includes everyone (to reach the cap without luck)."""

    @staticmethod
    def random(n):
        return np.zeros(n)


def test_out_of_range_cohorts_are_skipped_before_anyone_trains():
    sampler = CohortSampling(200, 10, "poisson")
    assert sampler.cap < 200
    ids, skip = sampler.sample(_AllIn())
    assert len(ids) == 200 and isinstance(skip, CohortOutOfRange)
    assert f"cap of {sampler.cap}" in str(skip)
    tiny = CohortSampling(20, 1, "poisson")  # q = 0.05: most rounds have fewer than 2 clients
    plans = [plan_round(r, clients=20, cohort=tiny, seed=0, dropout=0.5) for r in range(1, 40)]
    small = [p for p in plans if len(p.sampled) < 2]
    assert small and all(p.skip is not None and p.dropouts == {} for p in small)
    assert all("below the minimum group of 2" in str(p.skip) for p in small)
    assert all(p.skip is None for p in plans if 2 <= len(p.sampled) <= tiny.cap)
    assert 0 < tiny.skip_probability() < 1 and CohortSampling(20, 5).skip_probability() == 0


def test_auto_is_poisson_under_distributed_dp_and_the_ring_holds_the_cap():
    plain = RunConfig(clients=50, cohort=10)
    dp = RunConfig(clients=50, cohort=10, dp_noise_multiplier=1.0)
    assert plain.effective_client_sampling == "fixed"
    assert dp.effective_client_sampling == "poisson"
    assert RunConfig(client_sampling="fixed", dp_noise_multiplier=1.0) \
        .effective_client_sampling == "fixed"
    assert RunConfig(client_sampling="poisson").effective_client_sampling == "poisson"
    cap = cohort_sampling(dp).cap
    assert cap > 10 and cap == poisson_cohort_cap(50, 0.2)
    assert make_dp_codec(dp, 1000).max_clients == cap
    assert make_codec(plain, 1000).cohort == 10
    assert make_codec(RunConfig(clients=50, cohort=10, client_sampling="poisson"),
                      1000).cohort == cap
    with pytest.raises(ConfigError, match="--client-sampling 'bernoulli'"):
        RunConfig(client_sampling="bernoulli")
