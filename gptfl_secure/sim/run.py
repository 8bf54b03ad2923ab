"""A whole run: data → partition → label discovery → initial model → federated rounds → reports,
with a checkpoint after every round so that ``--resume DIR`` continues a killed run.

The checkpoint (``checkpoint.npz``, written atomically) holds the configuration, the global model
vector, the server optimizer's state and every metric so far. Round r's randomness depends only
on ``(seed, r)`` (see :mod:`.rounds`), so a resumed run ends with the same metrics as an
uninterrupted one, timings aside.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..iblt import IbltParams
from ..learning.audio_folder import load_audio_folder
from ..learning.data import Dataset, load_digits_split
from ..learning.folder import describe_folder, folder_kind, load_image_folder
from ..learning.local import LocalTrainingConfig, evaluate, model_to_vector
from ..learning.models import build_model
from ..learning.partition import dirichlet_partition
from ..learning.pretrain import PretrainConfig, pretrain
from ..learning.quantize import UpdateCodec
from ..learning.server_opt import ServerOptimizer
from ..privacy.accounting import RdpLedger
from ..privacy.distributed import DistributedDPCodec
from ..privacy.dpsgd import (
    DpSgdConfig,
    DpSgdSpend,
    check_dp_compatible,
    dpsgd_epsilon,
    train_locally_dp,
)
from ..privacy.label_noise import CountSketchParams, DPLabelCodec, noisy_label_counts
from ..protocols import SecAggAbort
from ..protocols.recording import record_result
from ..synth.backends import (
    AUDIO_BACKENDS,
    OfflineBackend,
    make_audio_generator,
    make_image_generator,
    parse_spec,
)
from ..synth.base import Generator, GeneratorError
from ..synth.cache import SyntheticCache
from ..synth.prompts import make_prompts
from ..synth.synthetic_set import build_synthetic_set
from . import report
from .aggregation import make_aggregator
from .config import ConfigError, SimConfig
from .label_discovery import LabelDiscovery, discover_labels
from .rounds import RoundContext, RoundRecord, plain_local_training, run_round

CHECKPOINT = "checkpoint.npz"
PROMPTS_PER_LABEL = 20


@dataclass
class RunState:
    """Everything a checkpoint holds."""

    config: SimConfig
    label_discovery: dict
    pretrain: dict | None
    global_vector: np.ndarray
    optimizer_state: dict
    rounds: list[dict] = field(default_factory=list)
    transcript: list[dict] = field(default_factory=list)
    dpsgd_history: dict[str, list[list[float]]] = field(default_factory=dict)  # client -> spends

    @property
    def next_round(self) -> int:
        return len(self.rounds) + 1


@dataclass(frozen=True)
class Setup:
    """The data of a run: the server's test split and each client's private partition."""

    train: Dataset
    test: Dataset
    parts: list[Dataset]
    kind: str = "image"  # or "audio": log-mel features (n, 1, 128, frames)


def prepare_data(config: SimConfig) -> Setup:
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


def new_model(config: SimConfig, data: Dataset) -> nn.Module:
    """The downstream model for ``data``, initialised from the run's seed."""
    torch.manual_seed(config.seed)
    name = config.effective_model
    if config.model == "auto" and data.x.shape[-2] != data.x.shape[-1]:
        name = "audio"  # (n, 1, n_mels, frames): a spectrogram
    return build_model(name, in_channels=data.x.shape[1], num_classes=len(data.label_names),
                       image_size=data.x.shape[-2])


def check_buildable(config: SimConfig, setup: Setup) -> None:
    """Build the model and the update codec once, so that a model that does not fit the data or
    a ring that cannot hold the cohort's sum fails before any work (as a ConfigError)."""
    try:
        model = new_model(config, setup.train)
    except ValueError as exc:
        raise ConfigError(f"--model {config.effective_model}: {exc}") from None
    dim = len(model_to_vector(model))
    make_codec(config, dim)
    make_dp_codec(config, dim)
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


def make_codec(config: SimConfig, dim: int) -> UpdateCodec:
    try:
        return UpdateCodec(dim, config.clip, config.cohort, config.weight_cap, config.level_bits)
    except ValueError as exc:
        raise ConfigError(f"quantization: {exc}") from None


def dp_sgd_trainer(config: SimConfig, state: RunState):
    """Local training with opacus DP-SGD; each client's spend goes to ``state.dpsgd_history``
    (checkpointed), from which its record-level ε is computed."""
    dp = DpSgdConfig(config.dp_sgd_noise_multiplier, config.dp_sgd_clip)

    def train(model, global_vector, data, local, seed, client_id):
        delta, spend = train_locally_dp(model, global_vector, data, local, dp, seed)
        state.dpsgd_history.setdefault(str(client_id), []).append(
            [spend.noise_multiplier, spend.sample_rate, spend.steps])
        return delta

    return train


def dp_sgd_privacy(config: SimConfig, history: dict[str, list[list[float]]]) -> dict | None:
    """Record-level ε of DP-SGD: the largest over clients, each composed over its rounds."""
    if not config.dp_sgd:
        return None
    worst = max((dpsgd_epsilon([DpSgdSpend(n, r, int(k)) for n, r, k in spends],
                               config.dp_delta) for spends in history.values()), default=0.0)
    return {"epsilon": worst, "delta": config.dp_delta,
            "noise_multiplier": config.dp_sgd_noise_multiplier, "clip": config.dp_sgd_clip,
            "clients_trained": len(history),
            "unit": "record-level: one example of one client (the worst client)"}


def make_dp_codec(config: SimConfig, dim: int) -> DistributedDPCodec | None:
    """The distributed-DP codec when ``--dp-noise-multiplier`` is set, else None."""
    if config.dp_noise_multiplier is None:
        return None
    try:
        return DistributedDPCodec(dim, config.dp_clip, config.dp_noise_multiplier,
                                  config.cohort, mechanism=config.dp_mechanism)
    except ValueError as exc:
        raise ConfigError(f"--dp-noise-multiplier {config.dp_noise_multiplier}: {exc}") from None


def update_privacy(config: SimConfig, dim: int, rounds: list[dict],
                   codec: DistributedDPCodec | None = None) -> dict | None:
    """(ε, δ) of the model updates so far: the RDP of every aggregated round (each with its own
    number of included noise shares) composed, with client sampling rate cohort/clients.
    ``codec``: the run's DP codec when the caller has it (else built from ``config``)."""
    codec = codec or make_dp_codec(config, dim)
    if codec is None:
        return None
    rate = config.cohort / config.clients
    ledger = RdpLedger()
    included = Counter(row["clients_included"] for row in rounds if not row["skipped"])
    for m, count in sorted(included.items()):  # rounds with equal noise compose as one term
        ledger.add(codec.accountant(rate, num_included=m), rounds=count)
    return {"epsilon": ledger.epsilon(config.dp_delta), "delta": config.dp_delta,
            "mechanism": config.dp_mechanism, "noise_multiplier": config.dp_noise_multiplier,
            "l2_clip": config.dp_clip, "sampling_rate": rate, "rounds": ledger.releases,
            "modulus_bits": codec.modulus_bits,
            "unit": "client-level: one client's whole update in every round it joins"}


def privacy_report(state: RunState) -> dict | None:
    """``metrics.json``'s ``privacy``: the distributed-DP (ε, δ) of the updates when enabled,
    else DP-SGD's; the other (and DP label discovery) alongside. None when no DP is on."""
    updates = update_privacy(state.config, len(state.global_vector), state.rounds)
    records = dp_sgd_privacy(state.config, state.dpsgd_history)
    labels = state.label_discovery.get("dp")
    main = updates or records
    if main is None:
        return {"epsilon": None, "delta": None, "label_discovery": labels} if labels else None
    report_ = dict(main)
    if updates is not None and records is not None:
        report_["dp_sgd"] = records
    if labels is not None:
        report_["label_discovery"] = labels
    return report_


def new_optimizer(config: SimConfig) -> ServerOptimizer:
    return ServerOptimizer(config.strategy, config.effective_server_lr, config.beta1,
                           config.beta2, config.tau)


Log = Callable[[str], None]


def limit_threads(threads: int) -> None:
    """torch's intra-op pool and numpy's BLAS pool both default to every core; two pools of
    spinning workers on a small machine slow the tiny per-client steps many times over
    (benches/rounds_bench.py measures it)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def start(config: SimConfig, setup: Setup, log: Log, out: Path | None = None,
          progress: bool = False) -> RunState:
    """Steps before the rounds: label discovery and the initial global model (pretrained on
    synthetic data for ``--init synthetic``)."""
    limit_threads(config.threads)
    recorder = SessionRecorder(config, out, "label-discovery")
    found = discover(config, setup, log, recorder)
    log(f"[2/3] initial model: {config.init} {config.effective_model}")
    model = new_model(config, setup.train)
    pretrain_report = None
    if config.init == "synthetic":
        model, pretrain_report = pretrain_on_synthetic(config, setup, found.counts, log,
                                                       out=out, progress=progress)
    summary = report.summarize_session("label_discovery", found.session)
    summary["sessions"] = recorder.sessions
    return RunState(config=config, label_discovery=found.to_json(), pretrain=pretrain_report,
                    global_vector=model_to_vector(model),
                    optimizer_state=new_optimizer(config).state_dict(),
                    transcript=[summary])


class SessionRecorder:
    """An aggregator wrapper that lists (and, with ``--record-transcript`` and an ``out``,
    records) every masked-sum session it runs, aborted ones included: the first as ``name``,
    later ones (label-discovery retries) as ``name-2``, ``name-3``... ``sessions`` is what
    ``transcript_summary.json`` lists under ``"sessions"`` (see :func:`record_transcript`)."""

    def __init__(self, config: SimConfig, out: Path | None, name: str) -> None:
        self.config, self.out, self.name = config, out, name
        self.sessions: list[dict] = []

    def wrap(self, aggregate):
        def recorded(*args, **kwargs):
            name = self.name if not self.sessions else f"{self.name}-{len(self.sessions) + 1}"
            try:
                result = aggregate(*args, **kwargs)
            except SecAggAbort as abort:
                self._note(name, abort.partial)
                raise
            self._note(name, result)
            return result

        return recorded

    def _note(self, name: str, session) -> None:
        entry = record_transcript(self.config, self.out, name, session)
        if entry is not None:
            self.sessions.append(entry)


def discover(config: SimConfig, setup: Setup, log: Log,
             recorder: SessionRecorder | None = None) -> LabelDiscovery:
    """Label-union discovery through the masked sum (GPT-FL step 1); ``recorder`` lists and
    records each of its sessions."""
    client_labels = {cid: {part.label_names[int(y)] for y in np.unique(part.y)}
                     for cid, part in enumerate(setup.parts)}
    log(f"[1/3] label discovery: {config.clients} clients encode their label names into IBLT "
        f"sketches, summed with secagg={config.secagg}")
    params = IbltParams(capacity=config.label_capacity, seed=config.seed)
    aggregate = make_aggregator(config.secagg, config.dropout)
    if recorder is not None:
        aggregate = recorder.wrap(aggregate)
    if config.label_dp_noise is not None:
        return discover_with_dp(config, client_labels, params, aggregate, log)
    found = discover_labels(client_labels, params, aggregate)
    log(f"      participants: {found.participants}; labels (complete={found.complete}): "
        f"{json.dumps(found.counts)}")
    return found


def discover_with_dp(config: SimConfig, client_labels, params: IbltParams, aggregate,
                     log: Log) -> LabelDiscovery:
    """DP label discovery (:mod:`gptfl_secure.privacy.label_noise`): the union from an IBLT with
    uniform secret weights, counts from a noised count sketch, released only at or above
    ``--label-min-clients``. ``complete`` is withheld (None): it is derived from the union,
    which the release guarantee (G2) requires to stay on the server. No retry: a second session
    would be a second release."""
    sketch_seed = int.from_bytes(os.urandom(8), "big")  # fresh, after the labels are fixed
    codec = DPLabelCodec(params, noise_multiplier=config.label_dp_noise, cohort=config.clients,
                         min_clients=config.label_min_clients,
                         sketch=CountSketchParams(seed=sketch_seed))
    release = noisy_label_counts(client_labels, codec, aggregate)
    guarantee = codec.guarantee(config.dp_delta, union_bound=config.label_capacity,
                                num_included=release.num_included)
    log(f"      participants: {release.num_included}; released labels (noisy counts >= "
        f"{config.label_min_clients}): {json.dumps(release.released)}")
    log(f"      {guarantee.describe()}")
    dp = {"epsilon": guarantee.epsilon, "delta": guarantee.delta,
          "release_delta": guarantee.release_delta, "delta_threshold": guarantee.delta_threshold,
          "noise_multiplier": config.label_dp_noise, "noise_std": release.noise_std,
          "min_clients": config.label_min_clients, "guarantee": guarantee.describe()}
    return LabelDiscovery(participants=release.num_included,
                          counts=dict(sorted(release.released.items())), complete=None,
                          capacity=params.capacity, attempts=1, dp=dp)


def synthetic_set(config: SimConfig, setup: Setup, labels, log: Log,
                  progress: bool = False) -> Dataset:
    """Prompts from the discovered ``labels`` → generator → cached synthetic set, with the
    task's classes (the server's test split) as the label order."""
    names = setup.test.label_names
    unknown = sorted(set(labels) - set(names))
    if unknown:
        log(f"      discovered labels that are not classes of the task, ignored: {unknown}")
    missing = [n for n in names if n not in labels]
    if missing:
        log(f"      classes no client holds get no synthetic data: {missing}")
    wanted = [n for n in names if n in labels]
    generator = make_task_generator(config, setup)
    prompts = make_prompts(wanted, min(config.synthetic_per_label, PROMPTS_PER_LABEL),
                           prompt_model=config.prompt_model, seed=config.seed)
    cache = SyntheticCache(config.effective_cache_dir)
    data = build_synthetic_set(generator, prompts, config.synthetic_per_label, names,
                               config.seed, cache, setup.train.x.shape[1:], progress=progress)
    log(f"      {len(data)} synthetic examples from {generator.name} ({cache.hits} labels from "
        f"the cache, {cache.misses} generated)")
    return data


def make_task_generator(config: SimConfig, setup: Setup) -> Generator:
    """The generator for the task: images of the task's size, or log-mel features."""
    if setup.kind == "audio":
        return make_audio_generator(config.generator, frames=setup.train.x.shape[-1])
    return make_image_generator(config.generator, image_size=setup.train.x.shape[-1],
                                channels=setup.train.x.shape[1])


def pretrain_on_synthetic(config: SimConfig, setup: Setup, labels, log: Log,
                          out: Path | None = None, progress: bool = False):
    """GPT-FL step 2: generate, train centrally, report accuracy on the real test split."""
    data = synthetic_set(config, setup, labels, log, progress)
    if out is not None:
        report.plot_samples(out / "synthetic_samples.png", data)
    model = new_model(config, setup.train)
    pretrain(model, data, PretrainConfig(config.pretrain_epochs, config.pretrain_lr,
                                         config.pretrain_weight_decay), seed=config.seed)
    accuracy = evaluate(model, setup.test)
    log(f"      pretrained {config.pretrain_epochs} epochs on the synthetic set: test accuracy "
        f"{accuracy:.4f}")
    return model, {"synthetic_examples": len(data), "test_accuracy": accuracy,
                   "generator": config.generator}


def run_rounds(state: RunState, setup: Setup, out: Path, log: Log, *, progress: bool = True,
               on_round: Callable[[RoundRecord], None] | None = None) -> RunState:
    """Play the remaining rounds, checkpointing after each; ``on_round`` sees each record after
    its checkpoint is written (tests use it to kill a run)."""
    config = state.config
    limit_threads(config.threads)  # same pools in a fresh and a resumed run: same floats
    model = new_model(config, setup.train)
    ctx = RoundContext(
        train_parts=setup.parts, test=setup.test, global_model=model,
        scratch_model=new_model(config, setup.train),
        codec=make_codec(config, len(state.global_vector)),
        local=LocalTrainingConfig(config.local_epochs, config.batch_size, config.lr,
                                  config.momentum, config.weight_decay, config.prox_mu),
        aggregate=make_aggregator(config.secagg, config.dropout),
        cohort=config.cohort, dropout=config.dropout, seed=config.seed,
        dp_codec=make_dp_codec(config, len(state.global_vector)),
        train=dp_sgd_trainer(config, state) if config.dp_sgd else plain_local_training)
    optimizer = new_optimizer(config)
    optimizer.load_state_dict(state.optimizer_state)
    log(f"[3/3] federated rounds: {config.rounds} x {config.cohort} of {config.clients} clients, "
        f"{config.strategy}, secagg={config.secagg}, dropout={config.dropout}, "
        f"{(ctx.dp_codec or ctx.codec).modulus_bits}-bit ring, model of {ctx.codec.dim} "
        "coordinates" + (f", distributed DP: {config.dp_mechanism} z={config.dp_noise_multiplier}"
                         f" L2 clip {config.dp_clip}" if ctx.dp_codec else ""))
    bar = _progress(config.rounds, state.next_round - 1, progress)
    try:
        for r in range(state.next_round, config.rounds + 1):
            outcome = run_round(ctx, r, state.global_vector, optimizer)
            state.global_vector = outcome.global_vector
            state.optimizer_state = optimizer.state_dict()
            state.rounds.append(outcome.record.to_json())
            summary = report.summarize_session(f"round {r}", outcome.session)
            recorded = record_transcript(config, out, f"round-{r:04d}",
                                         outcome.session or outcome.partial)
            summary["sessions"] = [recorded] if recorded else []
            state.transcript.append(summary)
            save_checkpoint(out, state)
            rec = outcome.record
            if rec.skipped:
                log(f"      round {r} skipped: {rec.skip_reason}")
            postfix = {"acc": f"{rec.test_accuracy:.3f}",
                       "included": f"{rec.clients_included}/{rec.clients_sampled}"}
            if ctx.dp_codec is not None:
                spent = update_privacy(config, ctx.codec.dim, state.rounds, ctx.dp_codec)
                postfix["eps"] = f"{spent['epsilon']:.2f}"
            bar.set_postfix(postfix)
            bar.update(1)
            if on_round is not None:
                on_round(outcome.record)
    finally:
        bar.close()
    return state


def record_transcript(config: SimConfig, out: Path | None, name: str, session) -> dict | None:
    """With ``--record-transcript``, write the server's record of a masked-sum session to
    ``out/transcripts/`` (a replayed round after ``--resume`` overwrites its record).

    ``session``: an AggregateResult, a MaskedSumResult, or an aborted session's partial record
    (``SecAggAbort.partial``), recorded with its abort reason. Returns the session's entry in
    ``transcript_summary.json``'s ``"sessions"``: ``{"record": name (None when not recorded),
    "session_id": hex, "aborted": None or the reason}``; None when no masked sum ran."""
    result = getattr(session, "session", session)  # an AggregateResult's MaskedSumResult
    if result is None:
        return None
    recorded = config.record_transcript and out is not None
    if recorded:
        record_result(out / "transcripts", name, result, overwrite=True)
    session_id = getattr(result, "session_id", b"")
    return {"record": name if recorded else None, "session_id": session_id.hex(),
            "aborted": getattr(result, "abort_reason", None)}


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="      rounds", unit="round", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)


def final_metrics(state: RunState) -> dict:
    """The content of ``metrics.json``: the configuration, label discovery, pretraining, one row
    per round, the final test accuracy and the privacy guarantee."""
    rounds = state.rounds
    return {
        "config": state.config.to_json(),
        "label_discovery": state.label_discovery,
        "pretrain": state.pretrain,
        "rounds": rounds,
        "final_test_accuracy": rounds[-1]["test_accuracy"] if rounds else None,
        "privacy": privacy_report(state),
    }


def write_outputs(out: Path, state: RunState) -> dict:
    metrics = final_metrics(state)
    report.write_json(out / "metrics.json", metrics)
    report.write_metrics_csv(out / "metrics.csv", state.rounds)
    report.plot_series(out / "accuracy.png", state.rounds, "test_accuracy", "test accuracy",
                       "server test accuracy per round")
    report.plot_series(out / "gradient_diversity.png", state.rounds, "gradient_diversity",
                       "gradient diversity", "Σ||Δ_i||² / ||ΣΔ_i||² per round")
    report.write_json(out / "transcript_summary.json", state.transcript)
    return metrics


def save_checkpoint(out: Path, state: RunState) -> None:
    meta = {"config": state.config.to_json(), "label_discovery": state.label_discovery,
            "pretrain": state.pretrain, "rounds": state.rounds, "transcript": state.transcript,
            "has_moments": state.optimizer_state["m"] is not None,
            "dpsgd_history": state.dpsgd_history}
    arrays = {"global_vector": state.global_vector,
              "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    if meta["has_moments"]:
        arrays["m"] = state.optimizer_state["m"]
        arrays["v"] = state.optimizer_state["v"]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out / CHECKPOINT)


def load_checkpoint(out: Path) -> RunState:
    """Read ``out/checkpoint.npz``; raises ConfigError when it is missing or unreadable."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"--resume {out}: no {CHECKPOINT} there; give the --out folder of a "
                          "run that completed at least its label discovery")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            vector = data["global_vector"].copy()
            moments = ({"m": data["m"].copy(), "v": data["v"].copy()} if meta["has_moments"]
                       else {"m": None, "v": None})
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--resume {out}: {CHECKPOINT} is unreadable ({exc})") from None
    return RunState(config=SimConfig.from_mapping(meta["config"], source=str(path)),
                    label_discovery=meta["label_discovery"], pretrain=meta["pretrain"],
                    global_vector=vector, optimizer_state=moments, rounds=meta["rounds"],
                    transcript=meta["transcript"],
                    dpsgd_history=meta.get("dpsgd_history", {}))
