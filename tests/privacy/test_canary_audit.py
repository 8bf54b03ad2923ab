"""The canary audit has teeth, on the aggregation layer (:mod:`gptfl_secure.privacy.canary_drill`:
real clients and canaries through the DP codec, summed, decoded, FedAvg): with the real
mechanism the empirical ε stays at or below the accountant's; with a broken one (test-only
mutants of :mod:`.canary_mutants`, monkeypatched: the noise scaled down 10x, or clipping
skipped) it exceeds it.

The mutants are checked at z = 2 and 4. At z = 1 the accountant's ε (about 54 here, replace-one
with the without-replacement bound) and at z = 0.5 (larger still) are far above anything 400
canaries in 4096 dimensions can measure (the estimate saturates near 40 for either mutant), so
no estimate of this size could exceed them: a limit of the audit's resolution, stated in the
README."""

import numpy as np
import pytest

from gptfl_secure.privacy.canary import CanaryDesign
from gptfl_secure.privacy.canary_drill import run_drill
from gptfl_secure.privacy.distributed import DistributedDPCodec

from .canary_mutants import MUTANTS

DIM, CANARIES, CLIENTS, RATE, ROUNDS, DELTA = 4096, 400, 50, 0.2, 20, 1e-5


def drill(z: float, seed: int):
    codec = DistributedDPCodec(DIM, 1.0, z, int(RATE * CLIENTS), max_clients=CLIENTS + CANARIES)
    return run_drill(codec, CanaryDesign(CANARIES, DIM, seed, RATE), clients=CLIENTS,
                     rounds=ROUNDS, delta=DELTA, seed=seed, resamples=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("z", [0.5, 1.0, 2.0])
def test_real_mechanism_estimate_stays_below_the_accountant(z, seed):
    result = drill(z, seed)
    assert result.rounds_aggregated >= ROUNDS - 1
    assert 0 < result.estimate.epsilon <= result.accountant_epsilon
    # the held-out canaries follow the null N(0, 1/dim)
    assert abs(result.estimate.held_out_mean) < 4 * DIM ** -0.5 / np.sqrt(CANARIES)
    assert result.estimate.held_out_std == pytest.approx(DIM ** -0.5, rel=0.15)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
@pytest.mark.parametrize("z", [2.0, 4.0])
def test_a_broken_mechanism_is_caught(monkeypatch, mutant, z):
    MUTANTS[mutant](monkeypatch)
    result = drill(z, seed=0)
    assert result.estimate.epsilon > result.accountant_epsilon
