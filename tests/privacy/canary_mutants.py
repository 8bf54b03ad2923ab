"""Deliberately broken distributed-DP mechanisms, for showing that the canary audit catches them
(test-only: applied with a pytest ``MonkeyPatch``, never a product option).

* ``noise/10``: every client's noise share has 1/100 of its variance (the summed noise's std is
  a tenth of what the accountant assumes);
* ``no-clip``: updates are encoded without the L2 clip (and so without the conditional
  rounding's norm bound, which an unclipped vector cannot meet).
"""

import numpy as np
import pytest

from gptfl_secure.privacy import distributed
from gptfl_secure.privacy.distributed import DistributedDPCodec
from gptfl_secure.privacy.hadamard import rotate
from gptfl_secure.privacy.mechanisms import client_noise
from gptfl_secure.privacy.rounding import stochastic_round


def noise_down_10x(mp: pytest.MonkeyPatch) -> None:
    def weak(rng, mechanism, total_variance, cohort, size):
        return client_noise(rng, mechanism, total_variance / 100.0, cohort, size)

    mp.setattr(distributed, "client_noise", weak)


def clipping_skipped(mp: pytest.MonkeyPatch) -> None:
    def encode(self, update, rng, round_seed=None, *, noise_share=True):
        z = stochastic_round(rotate(np.asarray(update, dtype=np.float64), round_seed)
                             / self.granularity, rng)
        if noise_share:
            z = z + client_noise(rng, self.mechanism, self.total_variance, self.cohort, z.size)
        return z.view(np.uint64) & np.uint64(self.modulus - 1)

    mp.setattr(DistributedDPCodec, "encode", encode)


MUTANTS = {"noise/10": noise_down_10x, "no-clip": clipping_skipped}
