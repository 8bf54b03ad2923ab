"""The DP codecs through the real masked-sum protocol (with a dropout), not a plain sum."""

from __future__ import annotations

import math

import numpy as np

from gptfl_secure.iblt import IbltParams
from gptfl_secure.pipeline.aggregation import SecureAggregator
from gptfl_secure.privacy import DistributedDPCodec, DPLabelCodec, noisy_label_counts
from gptfl_secure.privacy.hadamard import round_seed
from gptfl_secure.protocols import STEPS

from .helpers import seeded


def test_dp_updates_through_the_masked_sum_with_a_dropout():
    n, dim = 8, 500
    codec = DistributedDPCodec(dim, 1.0, noise_multiplier=0.8, cohort=n)
    gen = np.random.default_rng(0)
    ups = gen.normal(size=(n, dim)) * 0.01  # norms ~0.22: not clipped
    seed = round_seed(1234, 0)
    vectors = {cid: codec.encode(ups[cid], seeded(cid), seed) for cid in range(n)}
    dropped = {3: STEPS[0]}  # client 3 drops before uploading
    result = SecureAggregator("full")(vectors, codec.modulus, dropped)
    assert 3 not in result.included and len(result.included) == n - 1
    decoded = codec.decode(result.total, len(result.included), seed)
    truth = ups[sorted(result.included)].sum(axis=0)
    assert math.isclose(decoded.noise_std, math.sqrt(7 / 8) * 0.8)
    assert np.abs(decoded.update_sum - truth).max() < 6 * decoded.noise_std
    # the server's accountant for this round uses the 7 noise shares that arrived
    acct = codec.accountant(sampling_rate=0.5, num_included=len(result.included))
    assert acct.epsilon(1, 1e-5) > codec.accountant(sampling_rate=0.5).epsilon(1, 1e-5)


def test_dp_label_discovery_through_the_masked_sum():
    clients = {c: {"cat", "dog"} if c % 2 else {"cat", "bird"} for c in range(12)}
    codec = DPLabelCodec(IbltParams(capacity=10), noise_multiplier=0.5, cohort=12, max_labels=2,
                         min_clients=3)
    res = noisy_label_counts(clients, codec, aggregate=SecureAggregator("full"),
                             rng_for=lambda cid: seeded(500 + cid))
    assert set(res.server_noisy_counts) == {"cat", "dog", "bird"}
    assert abs(res.server_noisy_counts["cat"] - 12) <= 6 * res.noise_std
