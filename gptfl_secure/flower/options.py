"""The run configuration of the Flower app: the keys of ``python -m gptfl_secure.sim``
(:class:`~gptfl_secure.pipeline.config.RunConfig`) plus a few that only a distributed run needs.

Flower's run config is ``[tool.flwr.app.config]`` in the app's pyproject, overridable with
``flwr run --run-config 'key=value ...'``. TOML has no null, and ``--run-config`` only accepts keys
that the pyproject lists, so an option whose sim default is "unset" (``server-lr``,
``level-bits``, ``prompt-model``, ``cache-dir``) is listed as ``""`` and ``""`` means unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from ..pipeline.config import ConfigError, SimConfig

SIM_KEYS = frozenset(f.name for f in fields(SimConfig))
UNSET = ""


@dataclass(frozen=True)
class FlowerOptions:
    """Keys of a Flower run that the in-process sim does not have.

    ``out_dir``: where the ServerApp writes metrics.json (relative to the ServerApp process's
    working directory, which is the SuperLink's). ``step_timeout``: seconds the server waits for
    the replies of one protocol step; a node that has not answered by then is a dropout.
    ``train_timeout``: the same for local training (with the round's masked input), and for
    enrolment, where a node without a partition cache loads its data set. ``enroll_timeout``:
    how long the server waits for ``clients`` nodes to connect before it starts.
    """

    out_dir: str = "runs/flower"
    step_timeout: float = 60.0
    train_timeout: float = 300.0
    enroll_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in ("step_timeout", "train_timeout", "enroll_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name.replace('_', '-')} {value!r}: must be a number > 0")
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise ConfigError(f"out-dir {self.out_dir!r}: must be a non-empty path")


FLOWER_KEYS = frozenset(f.name for f in fields(FlowerOptions))


def parse_run_config(run_config: Mapping[str, Any]) -> tuple[SimConfig, FlowerOptions]:
    """Split a Flower run config into the sim's options and the Flower-only ones.

    Keys use ``-`` or ``_``; an unknown key, or a value outside its range, raises ConfigError
    naming it. ``compare`` (the comparison arms) is a sim-only feature and must stay false.
    """
    sim: dict[str, Any] = {}
    flower: dict[str, Any] = {}
    nullable = {f.name for f in fields(SimConfig) if f.default is None}
    for key, value in run_config.items():
        name = key.replace("-", "_")
        if name in SIM_KEYS:
            sim[name] = None if (value == UNSET and name in nullable) else value
        elif name in FLOWER_KEYS:
            flower[name] = value
        else:
            known = ", ".join(sorted(k.replace("_", "-") for k in SIM_KEYS | FLOWER_KEYS))
            raise ConfigError(f"run config: unknown key {key!r}; known keys: {known}")
    config = SimConfig.from_mapping(sim, source="run config")
    if config.compare:
        raise ConfigError("compare=true: the comparison arms run only in the in-process sim "
                          "(python -m gptfl_secure.sim --compare)")
    unsupported = [flag for flag, on in (
        ("dp-noise-multiplier", getattr(config, "dp_noise_multiplier", None) is not None),
        ("dp-sgd", bool(getattr(config, "dp_sgd", False))),
        ("label-dp-noise", getattr(config, "label_dp_noise", None) is not None)) if on]
    if unsupported:
        raise ConfigError(f"{', '.join(unsupported)}: differential privacy is not wired into "
                          "the Flower app yet; use the in-process sim (python -m "
                          "gptfl_secure.sim) for DP runs")
    if getattr(config, "client_sampling", "auto") == "poisson":
        raise ConfigError("client-sampling=poisson: the Flower app samples a fixed-size cohort "
                          "(it is what its pipelined rounds announce a round early); Poisson "
                          "sampling, for DP runs, is in the in-process sim (python -m "
                          "gptfl_secure.sim)")
    return config, FlowerOptions(**flower)


def default_run_config() -> dict[str, Any]:
    """Every key with its default, as ``[tool.flwr.app.config]`` lists it (``""`` for unset)."""
    out: dict[str, Any] = {}
    for f in fields(SimConfig):
        value = f.default if f.default is not MISSING else None
        out[f.name.replace("_", "-")] = UNSET if value is None else value
    for f in fields(FlowerOptions):
        out[f.name.replace("_", "-")] = f.default
    return out
