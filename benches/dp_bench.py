"""What distributed DP costs a federated run in accuracy: accuracy against ε for several noise
levels and cohort sizes, and where on the default data the curve bends.

Every run goes through the CLI's own path (``pipeline.setup.prepare_data``, ``sim.run.start``,
``sim.run.run_rounds``, then ``pipeline.outputs.final_metrics`` for ε), with ``--secagg off``: the
plain sum of the encoded vectors is the same sum the masked sum gives, and only costs less time.
The DP noise is drawn from each client's CSPRNG-seeded generator, so a DP run does not replay
exactly; every cell below is one run (seed 0 for the partition, sampling, dropouts and local
training).

A. Noise multiplier on the default data (SimConfig defaults: digits, 50 clients with Dirichlet
   alpha 0.1, cohort 10, dropout 0.1, 30 rounds, 5 local epochs, --dp-clip 1, skellam,
   δ = 1e-5), with ``--init synthetic`` (GPT-FL: the model pretrained on synthetic data, which
   costs the clients no privacy) and ``--init random``. z = 0 is the run without DP (its
   updates are quantized by the ordinary codec: per-coordinate clip, FedAvg weights); every
   z > 0 clips each client's whole update to L2 norm 1 and weighs every client alike, so z =
   0.01 shows what the clip alone costs. ε is the run's own ``privacy.epsilon``. With much
   noise the global weights grow until a client's local training returns NaN, which
   ``DistributedDPCodec.encode`` refuses with a ValueError that ends ``run_rounds``; the bench
   records the round, the accuracy before it and the ε of the rounds completed.
B. Cohort size at fixed ε. Digits has 1,438 training examples, so large cohorts need many
   clients with tiny partitions (Dirichlet alpha 1.0, --min-client-size 1; 500 clients is about
   the most ``dirichlet_partition`` can give one example each). Rows (clients, cohort) = (50,
   10), (500, 100), (500, 500): 10 -> 100 at the same sampling rate q = 0.2 (so the same z for
   a given ε) shows the pure 1/cohort effect; 100 -> 500 at the same population shows that a
   larger q (less amplification by subsampling) needs more noise for the same ε. Per row: the
   run without DP and runs whose z is chosen with ``noise_multiplier_for_epsilon`` (the codec's
   own accountant parameters, the cohort drawn without replacement: --client-sampling fixed,
   Wang-Balle-Kasiviswanathan's bound, as the run's own accounting) for ε = 0.3, 1, 3 and 8 after
   the rounds, and a run at z = 0.01 ("clip only": what the L2 clip and the equal weights
   cost without meaningful noise, the best a DP run can do here). --init synthetic, 10
   rounds, 2 local epochs, dropout 0 (so every round sums the whole cohort's noise and the
   run's ε is the target), --dp-clip 0.2 (about the median norm of a local update here; the
   table prints the median the run saw). The noise std on the AVERAGE update is z·C/cohort
   per coordinate; ``|noise|/C`` = z·sqrt(d)/cohort is the norm of the noise on the average
   against the clip, the norm no averaged update exceeds.
C. Where the curve bends: per cohort, the smallest ε whose final accuracy is within 5 points of
   the run without DP, and (--init synthetic) the smallest ε whose final accuracy is at least
   the pretrained model's, i.e. at which DP fine-tuning stops doing harm.

Runs are independent and go to ``--jobs`` worker processes (default: one per usable core), each
with torch and OpenBLAS on one thread; the longest runs start first. Times are wall-clock on a
machine other processes may share: the header and footer print the load average. Nothing here
asserts an accuracy or a time.

Run: ``.venv/bin/python benches/dp_bench.py`` (4 minutes on 2 quiet cores, 8 to 9 when
other processes compete), ``--quick`` for z in {0, 1, 10} over 10 rounds in part A and the rows
(50, 10) and (500, 100) at ε = 1 and 8 over 5 rounds, no clip-only run, in part B (under 3
minutes).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gptfl_secure.pipeline import rounds as rounds_mod
from gptfl_secure.pipeline.codecs import make_dp_codec
from gptfl_secure.pipeline.config import SimConfig
from gptfl_secure.pipeline.outputs import final_metrics
from gptfl_secure.pipeline.setup import Setup, new_optimizer, prepare_data
from gptfl_secure.pipeline.state import RunState
from gptfl_secure.privacy.accounting import noise_multiplier_for_epsilon
from gptfl_secure.sim import run as run_mod

WITHIN = 0.05  # part C: "within 5 points of the run without DP"
DELTA = 1e-5
A_NOISE = (0.0, 0.01, 0.3, 1.0, 3.0, 10.0)
A_NOISE_QUICK = (0.0, 1.0, 10.0)
B_ROWS = ((50, 10), (500, 100), (500, 500))
B_ROWS_QUICK = ((50, 10), (500, 100))
B_EPSILONS = (0.3, 1.0, 3.0, 8.0)
CLIP_ONLY_Z = 0.01  # noise too small to matter: what the L2 clip and equal weights alone cost
B_EPSILONS_QUICK = (1.0, 8.0)
B_CLIP = 0.2


def discard(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# one run, in a worker process


@dataclass(frozen=True)
class Job:
    part: str  # "A" or "B"
    config: SimConfig  # dp_noise_multiplier None: no DP
    target_epsilon: float | None = None  # part B: z is chosen in the worker for this ε

    @property
    def cost(self) -> float:
        """Rough CPU seconds, to start the longest runs first."""
        c = self.config
        steps = c.local_epochs * max(1.0, 1438 / c.clients / c.batch_size)
        dp = c.dp_noise_multiplier is not None or self.target_epsilon is not None
        return c.rounds * c.cohort * (0.004 * steps + 0.01 + (0.02 if dp else 0.0))


@dataclass
class Outcome:
    job: Job
    noise_multiplier: float | None
    accuracies: list[float]
    epsilon: float | None
    pretrain_accuracy: float | None
    update_norms: list[float] = field(default_factory=list)
    diverged: str = ""
    warnings: int = 0
    wall: float = 0.0
    dim: int = 0


_SETUPS: dict[tuple, Setup] = {}
_STARTS: dict[tuple, RunState] = {}
_NORMS: list[float] = []


def init_worker() -> None:
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    train = rounds_mod.train_locally

    def recording(*args, **kwargs):  # the L2 norm of every local update, before any clip
        delta = train(*args, **kwargs)
        _NORMS.append(float(np.linalg.norm(delta)))
        return delta

    rounds_mod.train_locally = recording


def initial_state(config: SimConfig) -> tuple[Setup, RunState]:
    """``prepare_data`` and ``start`` once per worker for each partition and init: they do not
    depend on the rounds, the cohort or the DP settings (start's pretraining takes seconds)."""
    data_key = (config.dataset, config.clients, config.alpha, config.min_client_size,
                config.test_fraction, config.seed)
    if data_key not in _SETUPS:
        _SETUPS[data_key] = prepare_data(config)
    setup = _SETUPS[data_key]
    start_key = (*data_key, config.init, config.secagg, config.dropout)
    if start_key not in _STARTS:
        _STARTS[start_key] = run_mod.start(config, setup, discard)
    base = _STARTS[start_key]
    state = replace(base, config=config, global_vector=base.global_vector.copy(),
                    optimizer_state=new_optimizer(config).state_dict(), rounds=[],
                    transcript=list(base.transcript))
    return setup, state


def noise_for_epsilon(config: SimConfig, dim: int, target: float) -> float:
    """z with ε(rounds) = target for ``config`` (skellam: the codec's scaled clip and Δ2 do not
    depend on z), from the same accountant ``pipeline.dp.update_privacy`` uses for a round that
    sums the whole cohort: the cohort drawn without replacement, replace-one neighbours."""
    codec = make_dp_codec(replace(config, dp_noise_multiplier=1.0), dim)
    assert codec is not None and config.dp_mechanism == "skellam"
    return noise_multiplier_for_epsilon(
        target, config.rounds, config.dp_delta, mechanism=config.dp_mechanism,
        sampling_rate=config.cohort / config.clients, scaled_clip=codec.scaled_clip,
        dim=codec.vector_length, cohort=config.cohort, beta=codec.beta,
        l2_sensitivity=codec.l2_bound, sampling="without_replacement")


def run_job(job: Job) -> Outcome:
    start = time.perf_counter()
    config = job.config
    setup, state = initial_state(config)
    dim = len(state.global_vector)
    if job.target_epsilon is not None:
        config = replace(config, dp_noise_multiplier=noise_for_epsilon(
            config, dim, job.target_epsilon))
        state.config = config
    _NORMS.clear()
    diverged = ""
    with warnings.catch_warnings(record=True) as caught, \
            tempfile.TemporaryDirectory(prefix="dp_bench_") as tmp:
        warnings.simplefilter("always")
        try:
            run_mod.run_rounds(state, setup, Path(tmp), discard, progress=False)
        except ValueError as exc:  # run_rounds appends each finished round to state.rounds
            diverged = f"round {len(state.rounds) + 1}: ValueError: {exc}"
    metrics = final_metrics(state)
    privacy = metrics["privacy"]
    return Outcome(job, config.dp_noise_multiplier,
                   [r["test_accuracy"] for r in state.rounds],
                   privacy["epsilon"] if privacy else None,
                   state.pretrain["test_accuracy"] if state.pretrain else None,
                   list(_NORMS), diverged, len(caught), time.perf_counter() - start, dim)


# ---------------------------------------------------------------------------------------------
# the jobs and the tables


def part_a_jobs(quick: bool) -> list[Job]:
    rounds = 10 if quick else 30
    jobs = []
    for init in ("synthetic", "random"):
        for z in A_NOISE_QUICK if quick else A_NOISE:
            jobs.append(Job("A", SimConfig(init=init, secagg="off", rounds=rounds, threads=1,
                                           dp_noise_multiplier=z or None, dp_delta=DELTA)))
    return jobs


def part_b_config(clients: int, cohort: int, quick: bool) -> SimConfig:
    return SimConfig(init="synthetic", secagg="off", clients=clients, cohort=cohort, alpha=1.0,
                     min_client_size=1, dropout=0.0, rounds=5 if quick else 10, local_epochs=2,
                     dp_clip=B_CLIP, dp_delta=DELTA, threads=1, client_sampling="fixed")


def part_b_jobs(quick: bool) -> list[Job]:
    jobs = []
    for clients, cohort in B_ROWS_QUICK if quick else B_ROWS:
        config = part_b_config(clients, cohort, quick)
        jobs.append(Job("B", config))
        if not quick:
            jobs.append(Job("B", replace(config, dp_noise_multiplier=CLIP_ONLY_Z)))
        for eps in B_EPSILONS_QUICK if quick else B_EPSILONS:
            jobs.append(Job("B", config, target_epsilon=eps))
    return jobs


def fmt_eps(eps: float | None) -> str:
    if eps is None:
        return "∞ (no DP)"
    return f"{eps:,.3g}" if eps < 1e4 else f"{eps:.3g}"


def eps_cell(o: Outcome) -> str:
    """The run's ε; for a run that diverged, the ε of the rounds it completed."""
    if o.diverged and o.epsilon is not None:
        n = len(o.accuracies)
        return f"{fmt_eps(o.epsilon)} ({n} round{'s' if n != 1 else ''})"
    return fmt_eps(o.epsilon)


def final_cell(o: Outcome) -> str:
    if not o.accuracies:
        return f"diverged in {o.diverged.split(':')[0]}"
    acc = f"{o.accuracies[-1]:.4f}"
    return acc if not o.diverged else f"{acc} then diverged in {o.diverged.split(':')[0]}"


def noise_cells(o: Outcome) -> tuple[str, str]:
    """(z·C/cohort, z·sqrt(d)/cohort): the per-coordinate std and the norm (in units of the clip)
    of the noise on the average update, nominal: all of the cohort included."""
    if o.noise_multiplier is None:
        return "0", "0"
    c = o.job.config
    return (f"{o.noise_multiplier * c.dp_clip / c.cohort:.3g}",
            f"{o.noise_multiplier * math.sqrt(o.dim) / c.cohort:.3g}")


def note_cell(o: Outcome) -> str:
    notes = []
    if o.diverged:
        notes.append(o.diverged[:140])
    if o.warnings:
        notes.append(f"{o.warnings} warnings")
    return "; ".join(notes) or "-"


def print_part_a(outcomes: list[Outcome], quick: bool) -> None:
    c = outcomes[0].job.config
    print(f"## A. Noise multiplier z on the default data: {c.dataset}, {c.clients} clients "
          f"(alpha {c.alpha}), cohort {c.cohort}, dropout {c.dropout}, {c.rounds} rounds, "
          f"{c.local_epochs} local epochs, --dp-clip {c.dp_clip}, {c.dp_mechanism}, "
          f"δ = {c.dp_delta:g}, d = {outcomes[0].dim:,}\n")
    print("The noise columns are nominal (the whole cohort included); a round with m of the "
          "cohort's n clients has noise z·C·sqrt(m/n) on the sum, z·C/sqrt(m·n) on the "
          "average, and its ε accounts for that.\n")
    cols = ("init", "z", "ε", "noise std on the average (z·C/cohort)", "|noise|/C on the average",
            "acc after round 1", "final acc", "median update L2", "wall s", "note")
    print("| " + " | ".join(cols) + " |")
    print("| --- |" + " ---: |" * (len(cols) - 2) + " --- |")
    for o in outcomes:
        std, ratio = noise_cells(o)
        first = f"{o.accuracies[0]:.4f}" if o.accuracies else "-"
        norm = f"{statistics.median(o.update_norms):.3g}" if o.update_norms else "-"
        cells = (o.job.config.init, f"{o.noise_multiplier or 0:g}", eps_cell(o), std,
                 ratio, first, final_cell(o), norm, f"{o.wall:.0f}", note_cell(o))
        print("| " + " | ".join(cells) + " |")
    print()
    pre = [o.pretrain_accuracy for o in outcomes if o.pretrain_accuracy is not None]
    if pre:
        below = [o for o in outcomes if o.job.config.init == "synthetic"
                 and (not o.accuracies or o.diverged or o.accuracies[-1] < pre[0])]
        print(f"GPT-FL floor: the model pretrained on synthetic data alone scores {pre[0]:.4f} "
              "on the test split, at no privacy cost to the clients. The rounds do not keep it "
              "by themselves: synthetic runs that end below it (or diverge): "
              + (", ".join(f"z={o.noise_multiplier or 0:g}" for o in below) or "none")
              + ". A server that sees DP fine-tuning lose accuracy can keep the pretrained "
              "model instead.")
    for init in ("synthetic", "random"):
        rows = [o for o in outcomes if o.job.config.init == init and o.noise_multiplier
                and not o.diverged]
        eps = [o.epsilon for o in rows]
        mono = all(a > b for a, b in zip(eps, eps[1:], strict=False))
        print(f"ε strictly decreasing in z over the completed --init {init} runs: "
              f"{'yes' if mono else 'NO: ' + str(eps)}")
    if quick:
        print("(--quick: z in {0, 1, 10} over 10 rounds)")
    print(flush=True)


def print_part_b(outcomes: list[Outcome]) -> None:
    c = outcomes[0].job.config
    print(f"## B. Cohort size at fixed ε: {c.dataset}, alpha {c.alpha}, --min-client-size "
          f"{c.min_client_size}, --init {c.init}, {c.rounds} rounds, {c.local_epochs} local "
          f"epochs, dropout {c.dropout}, --dp-clip {c.dp_clip}, {c.dp_mechanism}, "
          f"δ = {c.dp_delta:g}, d = {outcomes[0].dim:,}\n")
    cols = ("clients", "cohort", "q", "target ε", "z", "ε of the run",
            "noise std on the average (z·C/cohort)", "|noise|/C on the average",
            "final acc", "median update L2", "wall s", "note")
    print("| " + " | ".join(cols) + " |")
    print("| " + "---: | " * (len(cols) - 1) + "--- |")
    for o in outcomes:
        c = o.job.config
        std, ratio = noise_cells(o)
        target = ("-" if o.noise_multiplier is None else "clip only"
                  if o.job.target_epsilon is None else f"{o.job.target_epsilon:g}")
        z = "0" if o.noise_multiplier is None else f"{o.noise_multiplier:.3f}"
        norm = f"{statistics.median(o.update_norms):.3g}" if o.update_norms else "-"
        cells = (str(c.clients), str(c.cohort), f"{c.cohort / c.clients:g}", target, z,
                 eps_cell(o), std, ratio, final_cell(o), norm, f"{o.wall:.0f}",
                 note_cell(o))
        print("| " + " | ".join(cells) + " |")
    print()
    pre = [o.pretrain_accuracy for o in outcomes if o.pretrain_accuracy is not None]
    if pre:
        print(f"GPT-FL floor (pretrained on synthetic data, before any round): {pre[0]:.4f}")
    by_rate: dict[float, list[Outcome]] = {}
    for o in outcomes:
        if o.job.target_epsilon is not None:
            by_rate.setdefault(o.job.config.cohort / o.job.config.clients, []).append(o)
    for q, rows in by_rate.items():
        cohorts = sorted({o.job.config.cohort for o in rows})
        if len(cohorts) < 2:
            continue
        small = [o for o in rows if o.job.config.cohort == cohorts[0]]
        large = [o for o in rows if o.job.config.cohort == cohorts[-1]]
        pairs = ", ".join(f"ε {s.job.target_epsilon:g}: z {s.noise_multiplier:.3f} and "
                          f"{t.noise_multiplier:.3f}" for s, t in zip(small, large, strict=True))
        print(f"Cohorts {cohorts[0]} and {cohorts[-1]} share q = {q:g}, so the same ε needs the "
              f"same z ({pairs}) and the noise on the average is {cohorts[-1] // cohorts[0]}x "
              f"smaller at cohort {cohorts[-1]}: the 1/cohort effect.")
    print(flush=True)


def bend(label: str, outcomes: list[Outcome]) -> str:
    base = [o for o in outcomes if o.noise_multiplier is None]
    if not base or not base[0].accuracies:
        return f"| {label} | - | - | - | - | no run without DP |"
    ref = base[0].accuracies[-1]
    dp = sorted((o for o in outcomes if o.noise_multiplier is not None),
                key=lambda o: o.epsilon if o.epsilon is not None else math.inf)
    curve = ", ".join(f"ε {eps_cell(o)}: {final_cell(o)}" for o in dp)
    largest = f"not reached (largest ε tried: {fmt_eps(dp[-1].epsilon) if dp else '-'})"

    def smallest(threshold: float) -> str:
        ok = [o for o in dp if o.accuracies and not o.diverged
              and o.accuracies[-1] >= threshold]
        if not ok:
            return largest
        return (f"ε = {fmt_eps(ok[0].epsilon)} (z = {ok[0].noise_multiplier:.3g}, acc "
                f"{ok[0].accuracies[-1]:.4f})")

    clip = [o for o in dp if o.noise_multiplier == CLIP_ONLY_Z and o.accuracies]
    near_clip = (f"{smallest(clip[0].accuracies[-1] - WITHIN)} (clip only: "
                 f"{clip[0].accuracies[-1]:.4f})" if clip else "- (no clip-only run)")
    floor = outcomes[0].pretrain_accuracy
    above = "- (--init random)" if floor is None else smallest(floor)
    return (f"| {label} | {ref:.4f} | {smallest(ref - WITHIN)} | {near_clip} | {above} | "
            f"{curve} |")


def print_bends(a: list[Outcome], b: list[Outcome]) -> None:
    print(f"## C. Where the curve bends: the smallest ε whose final accuracy is within "
          f"{WITHIN * 100:.0f} points of the run without DP, within {WITHIN * 100:.0f} points "
          f"of the clip-only run (z = {CLIP_ONLY_Z}: the noise's own cost), and at or above "
          "the model pretrained on synthetic data\n")
    print("| runs | acc without DP | smallest ε within 5 points of no DP | smallest ε within 5 "
          "points of clip only | smallest ε at or above the pretrained model | final acc by ε "
          "|")
    print("| --- | ---: | --- | --- | --- | --- |")
    for init in ("synthetic", "random"):
        rows = [o for o in a if o.job.config.init == init]
        c = rows[0].job.config
        print(bend(f"A: default data, --init {init}, cohort {c.cohort} of {c.clients}", rows))
    for clients, cohort in dict.fromkeys((o.job.config.clients, o.job.config.cohort) for o in b):
        rows = [o for o in b if (o.job.config.clients, o.job.config.cohort) == (clients, cohort)]
        print(bend(f"B: cohort {cohort} of {clients}", rows))
    print(flush=True)


# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer noise levels, rounds and cohorts (under 3 minutes)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="worker processes (default: one per usable core)")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"# dp_bench{' --quick' if args.quick else ''}\n")
    print(f"CPU: {cpu_model()}; os.cpu_count() = {os.cpu_count()} "
          f"({len(os.sched_getaffinity(0))} usable); load average at start "
          f"{os.getloadavg()[0]:.2f}")
    print(f"Python {platform.python_version()}, torch {torch.__version__}, numpy "
          f"{np.__version__}; {args.jobs} worker processes, each with torch and OpenBLAS on one "
          "thread\n", flush=True)
    jobs = part_a_jobs(args.quick) + part_b_jobs(args.quick)
    done: dict[Job, Outcome] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=init_worker) as pool:
        futures = {pool.submit(run_job, job): job
                   for job in sorted(jobs, key=lambda j: j.cost, reverse=True)}
        for future in as_completed(futures):
            outcome = future.result()
            done[futures[future]] = outcome
            c = outcome.job.config
            print(f"[{len(done)}/{len(jobs)}] {outcome.job.part}: init {c.init}, cohort "
                  f"{c.cohort} of {c.clients}, z {outcome.noise_multiplier}, final "
                  f"{final_cell(outcome)}, {outcome.wall:.0f} s", file=sys.stderr, flush=True)
    a = [done[j] for j in jobs if j.part == "A"]
    b = [done[j] for j in jobs if j.part == "B"]
    print_part_a(a, args.quick)
    print_part_b(b)
    print_bends(a, b)
    d = a[0].dim
    print(f"Model dimension d = {d:,}: a noise std σ per coordinate on the average update has "
          f"norm σ·sqrt(d) = {math.sqrt(d):.0f}σ, while no averaged update is longer than the "
          "clip C.")
    print(f"Whole run: {time.perf_counter() - start:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
