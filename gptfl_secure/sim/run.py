"""The in-process driver of a whole run: label discovery and the initial model (:func:`start`),
then the federated rounds (:func:`run_rounds`), with a checkpoint after every round so that
``--resume DIR`` continues a killed run. Every stage is the pipeline's
(:mod:`gptfl_secure.pipeline`); what is particular to this driver is that every client runs
here (one after another, or concurrently in a pool of worker processes: :mod:`.workers`), and
every sum is computed here (:mod:`.rounds`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..pipeline.aggregation import make_aggregator
from ..pipeline.canaries import start_canaries
from ..pipeline.codecs import DistributedDPUpdates, make_update_codec
from ..pipeline.config import RunConfig
from ..pipeline.discovery import client_label_sets, discover
from ..pipeline.dp import dp_sgd_trainer, update_privacy
from ..pipeline.eta import after_first_round
from ..pipeline.outputs import SessionRecorder
from ..pipeline.pretraining import initial_state
from ..pipeline.rounds import RoundRecord, plain_local_training, record_round
from ..pipeline.sampling import cohort_sampling
from ..pipeline.setup import (
    Setup,
    limit_threads,
    local_training,
    new_model,
    new_optimizer,
    run_batching,
    run_device,
    run_workers,
)
from ..pipeline.state import RunState, save_checkpoint
from .rounds import RoundContext, run_round
from .workers import ClientPool

Log = Callable[[str], None]


def start(config: RunConfig, setup: Setup, log: Log, out: Path | None = None,
          progress: bool = False) -> RunState:
    """Steps before the rounds: label discovery over every client's labels, then the initial
    global model (pretrained on synthetic data for ``--init synthetic``)."""
    limit_threads(config.threads)
    recorder = SessionRecorder(config, out, "label-discovery")
    aggregate = recorder.wrap(make_aggregator(config.secagg, config.dropout))
    found = discover(config, client_label_sets(setup.parts), aggregate, log)
    return initial_state(config, setup, found, recorder.sessions, log, out=out,
                         progress=progress)


def round_context(config: RunConfig, setup: Setup, state: RunState) -> RoundContext:
    """The in-process round's fixed parts for ``state``'s run, with a pool of worker processes
    when the run trains its clients concurrently (:func:`~gptfl_secure.pipeline.setup.
    run_workers` > 1), each client on its own or, with :func:`~gptfl_secure.pipeline.setup.
    run_batching` "vmap", in batches: the caller closes ``ctx.pool``."""
    device = run_device(config)
    scratch = new_model(config, setup.train).to(device)
    local = local_training(config)
    workers = run_workers(config, device)
    batched = run_batching(config, len(state.global_vector), device) == "vmap"
    codec = make_update_codec(config, len(state.global_vector))
    return RoundContext(
        train_parts=setup.parts, test=setup.test,
        global_model=new_model(config, setup.train).to(device), scratch_model=scratch,
        codec=codec, canaries=start_canaries(config, codec, state),
        local=local,
        aggregate=make_aggregator(config.secagg, config.dropout),
        cohort=cohort_sampling(config), dropout=config.dropout, seed=config.seed,
        train=dp_sgd_trainer(config, state) if config.dp_sgd else plain_local_training,
        pool=ClientPool(setup.parts, scratch, local, workers, device=device,
                        threads=config.threads, batched=batched,
                        test=setup.test) if workers > 1 else None,
        batched=batched)


def run_rounds(state: RunState, setup: Setup, out: Path, log: Log, *, progress: bool = True,
               on_round: Callable[[RoundRecord], None] | None = None) -> RunState:
    """Play the remaining rounds, checkpointing after each; ``on_round`` sees each record after
    its checkpoint is written (tests use it to kill a run)."""
    config = state.config
    limit_threads(config.threads)  # same pools in a fresh and a resumed run: same floats
    ctx = round_context(config, setup, state)
    dp_codec = ctx.codec.codec if isinstance(ctx.codec, DistributedDPUpdates) else None
    optimizer = new_optimizer(config)
    optimizer.load_state_dict(state.optimizer_state)
    sampler = ctx.cohort  # the run's CohortSampling (round_context)
    sampled = (f"{config.cohort}" if sampler.mode == "fixed" else
               f"Poisson (expected {config.cohort}, at most {sampler.cap})")
    log(f"[3/3] federated rounds: {config.rounds} x {sampled} of {config.clients} clients, "
        f"{config.strategy}, secagg={config.secagg}, dropout={config.dropout}, "
        f"{ctx.codec.modulus_bits}-bit ring, model of {ctx.codec.dim} "
        "coordinates" + (f", distributed DP: {config.dp_mechanism} z={config.dp_noise_multiplier}"
                         f" L2 clip {config.dp_clip}" if dp_codec else ""))
    bar = _progress(config.rounds, state.next_round - 1, progress)
    timed = False  # the run's length is told after its first round that trained
    try:  # one bar for the run, advanced once per round whatever the number of workers
        for r in range(state.next_round, config.rounds + 1):
            started = time.perf_counter()
            outcome = run_round(ctx, r, state.global_vector, optimizer)
            record_round(state, outcome, optimizer, out)
            save_checkpoint(out, state)
            rec = outcome.record
            if not (timed or rec.skipped):
                timed = True
                log(after_first_round(r, time.perf_counter() - started, config.rounds - r))
            if rec.skipped:
                log(f"      round {r} skipped: {rec.skip_reason}")
            postfix = {"acc": f"{rec.test_accuracy:.3f}",
                       "included": f"{rec.clients_included}/{rec.clients_sampled}"}
            if dp_codec is not None:
                spent = update_privacy(config, ctx.codec.dim, state.rounds, dp_codec)
                postfix["eps"] = f"{spent['epsilon']:.2f}"
            bar.set_postfix(postfix)
            bar.update(1)
            if on_round is not None:
                on_round(outcome.record)
    finally:
        bar.close()
        if ctx.pool is not None:
            ctx.pool.close()
    return state


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="      rounds", unit="round", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)
