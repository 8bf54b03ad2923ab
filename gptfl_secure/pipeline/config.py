"""The run configuration: one table of options for the sim's command line, for ``--config
run.toml`` and for the Flower app's run config (:mod:`gptfl_secure.flower.options`).

Every option is a field of :class:`RunConfig` whose metadata carries its help text and allowed
range; the argument parser and the TOML reader are both built from it, so a flag and a TOML key
(``--local-epochs`` / ``local_epochs``) can never drift apart. Values are checked when a
:class:`RunConfig` is built: a bad one raises :class:`ConfigError` naming the flag, the value and
the allowed range, before any work starts.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..learning.models import MODEL_NAMES
from ..learning.server_opt import DEFAULT_SERVER_LR, STRATEGIES
from ..synth.backends import parse_spec
from ..synth.base import GeneratorError

SECAGG_MODES = ("full", "plus", "off")
INIT_MODES = ("synthetic", "random")


class ConfigError(ValueError):
    """A configuration value outside its allowed range; the message names flag and range."""


def _opt(default: Any, help: str, *, choices: tuple | None = None, ge: float | None = None,
         gt: float | None = None, le: float | None = None, lt: float | None = None,
         kind: type | None = None) -> Any:
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "kind": kind or type(default)}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    """All options of a run. Build with keywords; ``RunConfig()`` is the embedded default."""

    # data and partition
    dataset: str = _opt("digits", "'digits' (embedded) or a folder of label-named image folders")
    model: str = _opt("auto", "model (auto: small_cnn for digits, convnet for image folders, "
                      "audio for .wav folders)",
                      choices=("auto",) + MODEL_NAMES)
    image_size: int = _opt(32, "side of the square images loaded from a folder", ge=8, le=512)
    audio_frames: int = _opt(101, "frames (10 ms each) per clip for a folder of .wav files",
                             ge=4, le=100_000)
    clients: int = _opt(50, "number of clients", ge=1, le=100_000)
    alpha: float = _opt(0.1, "Dirichlet label-skew concentration (smaller: more skew)", gt=0)
    min_client_size: int = _opt(5, "examples every client must hold", ge=1)
    test_fraction: float = _opt(0.2, "share of the data held out as the server's test split",
                                gt=0, lt=1)
    # federated rounds
    cohort: int = _opt(10, "clients sampled per round (<= clients)", ge=1)
    client_sampling: str = _opt("auto", "how a round's cohort is drawn: fixed (exactly --cohort, "
                                "without replacement), poisson (each client with probability "
                                "cohort/clients), auto (poisson under --dp-noise-multiplier, "
                                "else fixed)", choices=("auto", "poisson", "fixed"))
    rounds: int = _opt(30, "federated rounds", ge=1, le=100_000)
    strategy: str = _opt("fedavg", "server optimizer", choices=STRATEGIES)
    init: str = _opt("synthetic", "initial global model: pretrained on synthetic data (GPT-FL) or "
                     "random", choices=INIT_MODES)
    lr: float = _opt(0.03, "client learning rate (SGD)", gt=0, le=10)
    local_epochs: int = _opt(5, "local epochs per round", ge=1, le=1000)
    batch_size: int = _opt(8, "local batch size", ge=1)
    momentum: float = _opt(0.9, "client SGD momentum", ge=0, lt=1)
    weight_decay: float = _opt(5e-4, "client SGD weight decay", ge=0)
    prox_mu: float = _opt(0.0, "FedProx proximal coefficient mu (0: plain local SGD)", ge=0)
    server_lr: float | None = _opt(None, "server learning rate eta (default: 1.0 for fedavg, "
                                   "0.01 for the adaptive strategies)", gt=0, kind=float)
    beta1: float = _opt(0.9, "FedOpt first-moment decay", ge=0, lt=1)
    beta2: float = _opt(0.99, "FedOpt second-moment decay", ge=0, lt=1)
    tau: float = _opt(1e-3, "FedOpt adaptivity tau", gt=0)
    # synthetic stage (--init synthetic)
    generator: str = _opt("offline", "generator backend: offline (fonts, no weights) or "
                          "diffusers:MODEL_OR_PATH")
    synthetic_per_label: int = _opt(300, "synthetic examples generated per discovered label",
                                    ge=1, le=1_000_000)
    prompt_model: str | None = _opt(None, "causal language model (hub id or folder) that expands "
                                    "prompts; default: templates", kind=str)
    pretrain_epochs: int = _opt(20, "epochs of centralized pretraining on the synthetic set",
                                ge=1, le=10_000)
    pretrain_lr: float = _opt(2e-3, "AdamW learning rate of the pretraining", gt=0, le=10)
    pretrain_weight_decay: float = _opt(0.1, "AdamW weight decay of the pretraining", ge=0)
    cache_dir: str | None = _opt(None, "where generated sets are cached (default: "
                                 "$XDG_CACHE_HOME or ~/.cache, then gptfl-secure/synthetic)",
                                 kind=str)
    compare: bool = _opt(False, "run and tabulate the GPT-FL comparison arms (comparison.json)")
    seeds: int = _opt(1, "with --compare: play every arm on this many seeds (--seed, --seed + 1, "
                      "...); per round: mean, sd and 95 percent t-interval", ge=1, le=1000)
    seed_workers: int = _opt(0, "with --compare --seeds K: processes that play seeds side by "
                             "side (0: auto, min(K, cores // --threads))", ge=0, le=1024)
    # aggregation
    secagg: str = _opt("full", "masked sum over the complete graph (full), SecAgg+ (plus), or a "
                       "plain sum that shows the server every vector (off)", choices=SECAGG_MODES)
    dropout: float = _opt(0.1, "probability that a sampled client drops at a random protocol "
                          "step", ge=0, lt=1)
    clip: float = _opt(1.0, "per-coordinate clip c of each update", gt=0)
    level_bits: int | None = _opt(None, "quantization bits b per client (default: 32 - "
                                  "ceil(log2 cohort), at least 8)", ge=1, le=50, kind=int)
    weight_cap: int = _opt(1000, "public cap on a client's FedAvg weight (its example count)",
                           ge=1)
    # differential privacy
    dp_noise_multiplier: float | None = _opt(
        None, "distributed DP: noise multiplier z, the summed noise has std z * --dp-clip "
        "(default: no DP noise)", gt=0, le=1000, kind=float)
    dp_clip: float = _opt(1.0, "distributed DP: L2 clip of each client's update", gt=0)
    dp_delta: float = _opt(1e-5, "delta of the reported (epsilon, delta); at most 1/clients",
                           gt=0, lt=1)
    dp_mechanism: str = _opt("skellam", "distributed DP noise: skellam or dgauss (distributed "
                             "discrete Gaussian)", choices=("skellam", "dgauss"))
    dp_audit_canaries: int = _opt(0, "distributed DP: insert this many random canary clients "
                                  "and report an empirical epsilon beside the accountant's "
                                  "(0: no audit)", ge=0, le=100_000)
    dp_sgd: bool = _opt(False, "record-level DP-SGD (opacus) in every client's local training")
    dp_sgd_noise_multiplier: float = _opt(1.0, "DP-SGD noise multiplier", gt=0, le=1000)
    dp_sgd_clip: float = _opt(1.0, "DP-SGD per-example gradient clip", gt=0)
    label_dp_noise: float | None = _opt(
        None, "DP label discovery: noise multiplier of the label counts (default: exact "
        "counts)", gt=0, le=1000, kind=float)
    label_min_clients: int = _opt(1, "DP label discovery: release only labels whose noisy "
                                  "count reaches this", ge=1)
    label_capacity: int = _opt(50, "IBLT capacity for label discovery", ge=1, le=1_000_000)
    record_transcript: bool = _opt(False, "record every session's server transcript under "
                                   "OUT/transcripts/ for python -m gptfl_secure.audit")
    threads: int = _opt(1, "CPU threads for torch and BLAS (1 is fastest for the small default "
                        "model: more threads oversubscribe a 2-core machine)", ge=1, le=1024)
    device: str = _opt("auto", "torch device of pretraining, local training and evaluation: "
                       "auto (cuda when torch sees a GPU), cpu, cuda or cuda:N")
    workers: int = _opt(0, "processes that train a round's clients, each with --threads "
                        "threads (0: auto, cores // --threads at most the cohort, 1 on a GPU "
                        "or with --dp-sgd); results are bit-identical to --workers 1 on CPU",
                        ge=0, le=1024)
    client_batching: str = _opt(
        "off", "how the sim trains a round's clients: off (each on its own, one after another "
        "or in the --workers pool), vmap (in batches of up to 5 clients, each one computation "
        "with torch.func.vmap, in process or in the --workers pool; equal to off up to float "
        "rounding, and bit-identical across --workers on CPU), auto (vmap for small_cnn of at "
        "most 100,000 parameters on the CPU without --prox-mu or --dp-sgd, where "
        "benches/batched_bench.py measured it faster; else off)",
        choices=("auto", "off", "vmap"))
    seed: int = _opt(0, "seed of the partition, sampling, initialisation and local training",
                     ge=0, lt=2**32)

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(f, getattr(self, f.name))
        if self.cohort > self.clients:
            raise ConfigError(f"--cohort {self.cohort}: must be in [1, --clients={self.clients}]")
        if self.dp_delta > 1.0 / self.clients:
            raise ConfigError(f"--dp-delta {self.dp_delta}: must be at most 1/--clients = "
                              f"{1.0 / self.clients:.3g}")
        if self.dp_audit_canaries and self.dp_noise_multiplier is None:
            raise ConfigError(f"--dp-audit-canaries {self.dp_audit_canaries}: canaries audit the "
                              "distributed-DP noise; give --dp-noise-multiplier too")
        if self.seeds > 1 and not self.compare:
            raise ConfigError(f"--seeds {self.seeds}: several seeds are for the comparison; add "
                              "--compare (or drop --seeds)")
        if self.seed + self.seeds > 2**32:
            raise ConfigError(f"--seeds {self.seeds}: seeds --seed {self.seed} to "
                              f"{self.seed + self.seeds - 1} pass 2**32 - 1; lower --seed")
        if self.compare and self.init != "synthetic":
            raise ConfigError("--compare compares GPT-FL with its baselines: it needs --init "
                              "synthetic (the default)")
        try:
            parse_spec(self.generator)
        except GeneratorError as exc:
            raise ConfigError(str(exc)) from None
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device):
            raise ConfigError(f"--device {self.device!r}: must be auto, cpu, cuda or cuda:N")
        if self.dataset != "digits" and not Path(self.dataset).is_dir():
            raise ConfigError(f"--dataset {self.dataset}: not 'digits' and not a folder; give a "
                              "folder whose subfolders are label names holding images")

    @property
    def effective_server_lr(self) -> float:
        return self.server_lr if self.server_lr is not None else DEFAULT_SERVER_LR[self.strategy]

    @property
    def effective_client_sampling(self) -> str:
        """'fixed' or 'poisson': ``client_sampling`` with 'auto' resolved."""
        if self.client_sampling != "auto":
            return self.client_sampling
        return "poisson" if self.dp_noise_multiplier is not None else "fixed"

    @property
    def effective_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "gptfl-secure" / "synthetic"

    @property
    def effective_model(self) -> str:
        if self.model != "auto":
            return self.model
        return "small_cnn" if self.dataset == "digits" else "convnet"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from ``{key: value}`` (TOML keys use ``_`` or ``-``); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        clean = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"{source}: unknown key {key!r}; known keys: "
                                  f"{', '.join(sorted(known))}")
            clean[name] = value
        return cls(**clean)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check(f, value: Any) -> None:
    meta = f.metadata
    kind = meta["kind"]
    where = f"{flag(f.name)} {value!r}"
    if value is None and f.default is None:
        return
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    if kind is float and not isinstance(value, float) or kind is int and (
            not isinstance(value, int) or isinstance(value, bool)) or kind is str and (
            not isinstance(value, str)):
        raise ConfigError(f"{where}: must be {'a number' if kind is float else kind.__name__}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{where}: must be finite")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{where}: must be one of {', '.join(meta['choices'])}")
    bounds = [("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
              ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")]
    for key, ok, word in bounds:
        limit = meta[key]
        if limit is not None and not ok(value, limit):
            raise ConfigError(f"{where}: must be {word} {limit}{_range(meta)}")


def _range(meta) -> str:
    lo = meta["ge"] if meta["ge"] is not None else meta["gt"]
    hi = meta["le"] if meta["le"] is not None else meta["lt"]
    if lo is None or hi is None:
        return ""
    left = "[" if meta["ge"] is not None else "("
    right = "]" if meta["le"] is not None else ")"
    return f" (allowed range {left}{lo}, {hi}{right})"


def load_toml(path: Path) -> dict[str, Any]:
    """Read ``--config run.toml``: a flat table of option keys (or under a ``[sim]`` table)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    if "sim" in data and isinstance(data["sim"], dict):
        data = data["sim"]
    return data


SimConfig = RunConfig
"""The name the sim has always used for :class:`RunConfig`."""
