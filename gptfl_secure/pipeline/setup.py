"""What a run builds before its first step: the data and its partition, the downstream model,
the server optimizer, the local-training settings, and the check that all of them can be built
for the configuration (so a bad combination fails before any work, as a ConfigError)."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

import torch

from ..learning.audio_folder import load_audio_folder
from ..learning.batched import BatchingUnsupported, probe
from ..learning.data import Dataset, load_digits_split
from ..learning.folder import describe_folder, folder_kind, load_image_folder
from ..learning.local import model_to_vector
from ..learning.partition import dirichlet_partition
from ..learning.server_opt import ServerOptimizer
from ..privacy.dpsgd import check_dp_compatible
from ..synth.backends import AUDIO_BACKENDS, OfflineBackend, parse_spec
from ..synth.base import GeneratorError
from .client_training import limit_threads, local_training, new_model  # noqa: F401 (re-exported)
from .codecs import make_codec, make_dp_codec
from .config import ConfigError, RunConfig


@dataclass(frozen=True)
class Setup:
    """The data of a run: the server's test split and each client's private partition."""

    train: Dataset
    test: Dataset
    parts: list[Dataset]
    kind: str = "image"  # or "audio": log-mel features (n, 1, 128, frames)


def prepare_data(config: RunConfig) -> Setup:
    """Load the data set and partition it. Raises ConfigError when the request cannot be met."""
    kind = "image"
    if config.dataset == "digits":
        train, test = load_digits_split(config.test_fraction, seed=config.seed)
    else:
        try:
            kind = folder_kind(config.dataset)
            if kind == "audio":
                train, test = load_audio_folder(config.dataset, frames=config.audio_frames,
                                                test_fraction=config.test_fraction,
                                                seed=config.seed)
            else:
                describe_folder(config.dataset)
                train, test = load_image_folder(config.dataset, image_size=config.image_size,
                                                test_fraction=config.test_fraction,
                                                seed=config.seed)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"--dataset {config.dataset}: {exc}") from None
        if len(test) == 0:
            raise ConfigError(f"--dataset {config.dataset}: no label has 2 examples, so the test "
                              "split is empty; add examples")
    try:
        parts = dirichlet_partition(train.y, config.clients, config.alpha,
                                    min_size=config.min_client_size, seed=config.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Setup(train, test, [train.subset(idx) for idx in parts], kind)


def check_buildable(config: RunConfig, setup: Setup) -> None:
    """Build the model and the update codec once, so that a model that does not fit the data or
    a ring that cannot hold the cohort's sum fails before any work (as a ConfigError)."""
    try:
        model = new_model(config, setup.train)
    except ValueError as exc:
        raise ConfigError(f"--model {config.effective_model}: {exc}") from None
    run_device(config)
    dim = len(model_to_vector(model))
    make_codec(config, dim)
    make_dp_codec(config, dim)
    if config.client_batching == "vmap":
        if config.dp_sgd:
            raise ConfigError("--client-batching vmap with --dp-sgd: DP-SGD trains each client "
                              "on its own (opacus); use --client-batching off or auto")
        try:
            probe(model, local_training(config), setup.train)
        except BatchingUnsupported as exc:
            raise ConfigError(f"--client-batching vmap with --model {config.effective_model}: "
                              f"{exc} (--client-batching off or auto)") from None
    if config.dp_sgd:
        try:
            check_dp_compatible(model)
        except ValueError as exc:
            raise ConfigError(f"--dp-sgd with --model {config.effective_model}: {exc}") from None
    if config.init == "synthetic" and setup.kind == "audio" and (
            parse_spec(config.generator)[0] not in AUDIO_BACKENDS):
        raise ConfigError(f"--generator {config.generator}: this task is audio (.wav folders); "
                          "use speecht5:MODEL[,VOCODER] or audioldm:MODEL_OR_PATH, or --init "
                          "random")
    if config.init == "synthetic" and config.generator == "offline":
        try:  # the server knows its task's classes: an unrenderable one fails now, not later
            OfflineBackend(setup.train.x.shape[-1], setup.train.x.shape[1]).check_labels(
                setup.test.label_names)
        except GeneratorError as exc:
            raise ConfigError(f"--generator offline: {exc}") from None


def new_optimizer(config: RunConfig) -> ServerOptimizer:
    return ServerOptimizer(config.strategy, config.effective_server_lr, config.beta1,
                           config.beta2, config.tau)


def run_device(config: RunConfig) -> torch.device:
    """The torch device of pretraining, local training and evaluation: ``--device auto`` is the
    first GPU when torch sees one, else the CPU. Raises ConfigError when a GPU is asked for and
    torch sees none (or not that many)."""
    if config.device == "cpu" or config.device == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if config.device == "auto":
        return torch.device("cuda", 0)
    device = torch.device(config.device)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise ConfigError(f"--device {config.device}: torch sees no CUDA GPU (torch "
                          f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                          "use --device cpu or auto")
    index = device.index or 0
    if index >= available:
        raise ConfigError(f"--device {config.device}: torch sees {available} GPU(s), "
                          f"cuda:0 to cuda:{available - 1}")
    return torch.device("cuda", index)


def run_workers(config: RunConfig, device: torch.device | None = None) -> int:
    """How many processes train a round's clients. ``--workers 0`` (auto): as many as the cores
    allow without oversubscription (usable cores // ``--threads``), at most the cohort, and 1 on
    a GPU. DP-SGD always trains in the run's process (1): each client's privacy spend is
    recorded in the run state as it trains. Inside a worker process of some other pool (a
    bench's), auto is 1, so pools never nest."""
    if config.dp_sgd:
        return 1
    if config.workers:
        return min(config.workers, config.cohort)
    device = device or run_device(config)
    if device.type != "cpu" or multiprocessing.parent_process() is not None:
        return 1
    return max(1, min(usable_cores() // config.threads, config.cohort))


VMAP_AUTO_MODELS = ("small_cnn",)
VMAP_AUTO_MAX_PARAMETERS = 100_000
"""``--client-batching auto`` batches these models up to this size. benches/batched_bench.py on
2 cores, cohorts of 10: small_cnn on the 8x8 digits (38k parameters) trained a round in 0.86x to
0.88x the time of the unbatched 2-worker pool, and in one process in 0.82x to 0.84x the time of
training the clients one after another; convnet (about 300k) took 1.2x the time on 28x28 images
(on 8x8 images 0.85x to 0.95x the pool's time, but the parameter count cannot tell the two
apart, so auto leaves convnet unbatched)."""


def run_batching(config: RunConfig, dim: int, device: torch.device | None = None) -> str:
    """How the sim trains a round's clients, ``"vmap"`` or ``"off"`` (see
    :mod:`gptfl_secure.learning.batched`), for a model of ``dim`` coordinates. ``--client-batching
    auto`` is vmap for the models of :data:`VMAP_AUTO_MODELS` of at most
    :data:`VMAP_AUTO_MAX_PARAMETERS` parameters, on the CPU (batching on a GPU is not measured),
    without FedProx or DP-SGD; otherwise, and always with DP-SGD, off. ``vmap`` is checked by
    :func:`check_buildable`. The choice does not depend on the number of workers, so a run's
    results do not either."""
    if config.dp_sgd or config.client_batching == "off":
        return "off"
    if config.client_batching == "vmap":
        return "vmap"
    device = device or run_device(config)
    small = config.effective_model in VMAP_AUTO_MODELS and dim <= VMAP_AUTO_MAX_PARAMETERS
    return "vmap" if small and device.type == "cpu" and config.prox_mu == 0 else "off"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def execution(config: RunConfig, dim: int | None = None) -> dict:
    """``metrics.json``'s ``execution``: the device, number of workers and client batching the
    run resolves to here (``--device auto``, ``--workers 0`` and ``--client-batching auto`` made
    concrete; the batching needs the model's ``dim``, and stays as configured without it)."""
    try:
        device = run_device(config)
    except ConfigError:  # a GPU run's outputs written again on a machine without one
        return {"device": config.device, "workers": config.workers,
                "client_batching": config.client_batching}
    return {"device": str(device), "workers": run_workers(config, device),
            "client_batching": (run_batching(config, dim, device) if dim is not None
                                else config.client_batching)}
