"""The update codec of a run: how one client's model update becomes a vector in the ring that the
masked sum adds, and how the server reads the sum back.

Two codecs exist: :class:`~gptfl_secure.learning.quantize.UpdateCodec` (clip, weight by the
client's example count, stochastic rounding from the run's public seed streams) and, with
``--dp-noise-multiplier``, :class:`~gptfl_secure.privacy.distributed.DistributedDPCodec`
(clip, rotate, round and noise from the client's private CSPRNG; unweighted). Their own
signatures differ; :class:`RoundCodec` gives both one interface,

    ``encode(delta, weight, at) -> ring vector``, ``decode(total, num_included, at) -> Decoded``,

with ``at`` a :class:`CodecRound` (seed, round, client), so the round code never asks whether
DP is on. :func:`make_update_codec` picks the codec for a configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..learning.quantize import UpdateCodec
from ..privacy.distributed import DistributedDPCodec
from ..privacy.hadamard import round_seed
from ..privacy.rng import noise_generator
from .config import ConfigError, RunConfig
from .sampling import cohort_sampling
from .seeds import rounding_rng


@dataclass(frozen=True)
class CodecRound:
    """Where an encode or decode happens: the run's seed, the round, and (to encode) the
    client. Everything here is public."""

    seed: int
    round: int
    client: int | None = None

    def for_client(self, client: int) -> CodecRound:
        return replace(self, client=int(client))


@dataclass(frozen=True)
class Decoded:
    """What the server takes from one round's sum."""

    mean_update: np.ndarray  # the pseudo-gradient the server optimizer steps with
    gradient_diversity: float | None  # None when the codec cannot tell (DP) or the sum is 0


class RoundCodec:
    """The interface the round code uses; see the module docstring."""

    dim: int
    vector_length: int
    modulus: int
    modulus_bits: int

    def encode(self, delta: np.ndarray, weight: int, at: CodecRound) -> np.ndarray:
        raise NotImplementedError

    def decode(self, total: np.ndarray, num_included: int, at: CodecRound) -> Decoded:
        raise NotImplementedError


def _diversity(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


class QuantizedUpdates(RoundCodec):
    """:class:`UpdateCodec` (no DP): weighted by ``weight``, rounding from the public stream
    :func:`~.seeds.rounding_rng` of (seed, round, client)."""

    def __init__(self, codec: UpdateCodec) -> None:
        self.codec = codec
        self.dim, self.vector_length = codec.dim, codec.vector_length
        self.modulus, self.modulus_bits = codec.modulus, codec.modulus_bits

    def encode(self, delta: np.ndarray, weight: int, at: CodecRound) -> np.ndarray:
        return self.codec.encode(delta, weight, rounding_rng(at.seed, at.round, at.client))

    def decode(self, total: np.ndarray, num_included: int, at: CodecRound) -> Decoded:
        decoded = self.codec.decode(total, num_included)
        return Decoded(decoded.mean_update(), _diversity(decoded.gradient_diversity()))


class DistributedDPUpdates(RoundCodec):
    """:class:`DistributedDPCodec`: ``weight`` is ignored (DP-FedAvg's mean is unweighted);
    rounding and noise come from the client's private CSPRNG-seeded generator, the rotation
    from the round's public seed. The server sees no per-client norms: no gradient diversity."""

    def __init__(self, codec: DistributedDPCodec) -> None:
        self.codec = codec
        self.dim, self.vector_length = int(codec.dim), codec.vector_length
        self.modulus, self.modulus_bits = codec.modulus, codec.modulus_bits

    def encode(self, delta: np.ndarray, weight: int, at: CodecRound) -> np.ndarray:
        return self.codec.encode(delta, noise_generator(), round_seed(at.seed, at.round))

    def decode(self, total: np.ndarray, num_included: int, at: CodecRound) -> Decoded:
        decoded = self.codec.decode(total, num_included, round_seed(at.seed, at.round))
        return Decoded(decoded.mean_update(), None)


def make_codec(config: RunConfig, dim: int) -> UpdateCodec:
    """The quantizing codec for a model of ``dim`` coordinates; ConfigError when the ring
    cannot hold the sum of the most clients a round may sum (:attr:`CohortSampling.cap`)."""
    try:
        return UpdateCodec(dim, config.clip, cohort_sampling(config).cap, config.weight_cap,
                           config.level_bits)
    except ValueError as exc:
        raise ConfigError(f"quantization: {exc}") from None


def make_dp_codec(config: RunConfig, dim: int) -> DistributedDPCodec | None:
    """The distributed-DP codec when ``--dp-noise-multiplier`` is set, else None."""
    if config.dp_noise_multiplier is None:
        return None
    try:
        return DistributedDPCodec(dim, config.dp_clip, config.dp_noise_multiplier,
                                  config.cohort, mechanism=config.dp_mechanism,
                                  max_clients=cohort_sampling(config).cap
                                  + config.dp_audit_canaries)
    except ValueError as exc:
        raise ConfigError(f"--dp-noise-multiplier {config.dp_noise_multiplier}: {exc}") from None


def make_update_codec(config: RunConfig, dim: int) -> RoundCodec:
    """The run's codec behind the one interface: distributed DP when configured, else the
    quantizing codec."""
    dp = make_dp_codec(config, dim)
    return DistributedDPUpdates(dp) if dp is not None else QuantizedUpdates(make_codec(config,
                                                                                       dim))
