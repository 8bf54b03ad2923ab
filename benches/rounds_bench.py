"""What secure aggregation costs a federated run: round time, upload bytes, end-to-end time.

Three measurements, all in one run of this script:

1. Round time with ``--secagg full``, ``plus`` and ``off`` on the embedded default (SimConfig
   defaults: digits over 50 clients, small_cnn, cohort 10, dropout 0.1; ``--init random``, so
   that no synthetic pretraining runs before the rounds). Each mode plays the
   same rounds from the same seed through ``run.start`` and ``run.run_rounds`` (the CLI's
   path, checkpoint included), so cohorts, dropouts and local training are the same; the
   masked sum is exact, so every mode reaches the same global model (checked and printed).
   The modes take turns round by round (``run_rounds`` one round at a time, as ``--resume``
   continues a run), so load from other processes falls on all three alike. One untimed
   warm-up round (``full``) runs first. Each round's wall time, from the start of
   ``run_round`` to the round's ``on_round`` callback, is split into local training (the
   calls to ``train_locally``, timed by a wrapper the bench installs around it), aggregation
   (the round record's ``secagg_seconds``), evaluation on the test split
   (``pipeline.rounds.accuracy``, wrapped likewise) and the rest (encoding, decoding, the
   server step, the checkpoint).
   Goal: full / off and plus / off <= 1.2x per round.
2. Upload bytes per client against a float32 plaintext (4d bytes) at d = 1,000,000 and
   n = 100 (``--quick``: d = 100,000): an ``UpdateCodec(d, clip=1.0, cohort=100)`` encodes 100
   random updates, one ``run_masked_sum`` session sums them with no dropouts (complete graph,
   t = 2n/3 + 1), and ``SessionStats.client_total_upload()`` gives each client's bytes. Also
   SecAgg+ with (k, t) = choose_secagg_plus_params(100, 0.1, 0.1). Goal: <= 1.01x.
3. The default end to end, ``python -m gptfl_secure.sim --init random --no-progress``, run as
   a subprocess and timed (``--quick``: with ``--rounds 5``). Goal: <= 60 s on 2 cores. A last
   row runs SimConfig's own default, ``--init synthetic`` (offline generator, pretraining),
   with a fresh ``--cache-dir``, so that it includes generating the synthetic set.

Parts 1 and 3 each measure three thread settings: as the CLI runs (torch's OpenMP pool and
numpy's OpenBLAS pool each at their default of one thread per core), with numpy's OpenBLAS on
one thread, and with both on one thread. On 2 cores the two pools oversubscribe the CPU: the
``np.dot`` calls of ``UpdateCodec`` (``encode`` and ``gradient_diversity``, a round's only BLAS
calls) wake OpenBLAS workers that keep spinning while torch trains the next client, and
torch's 2-thread steps on batches of 8 then wait for a descheduled thread.

Times are wall-clock seconds on a machine other processes may share: the header and footer
print the load average, and parts 1 and 3 print CPU time over wall time (well below the thread
count's worth means the CPU was taken by others). Nothing here asserts a time.

Run: ``.venv/bin/python benches/rounds_bench.py`` (about 3 minutes on 2 quiet cores, over 10
when other processes compete; 4 GiB of memory for part 2), ``--quick`` for 3 rounds, d = 100K
and 5-round end-to-end runs (under 2 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gptfl_secure.learning.local import model_to_vector
from gptfl_secure.learning.quantize import UpdateCodec
from gptfl_secure.pipeline import rounds as rounds_mod
from gptfl_secure.pipeline.codecs import make_codec
from gptfl_secure.pipeline.config import SimConfig
from gptfl_secure.pipeline.setup import Setup, new_model, prepare_data
from gptfl_secure.protocols import (
    STEPS,
    SecAggConfig,
    choose_secagg_plus_params,
    run_masked_sum,
)
from gptfl_secure.sim import run as run_mod

ROOT = Path(__file__).resolve().parent.parent
MODES = ("full", "plus", "off")
N_UPLOAD = 100
SEED = 0

GOALS = """Goals:
* a round with secure aggregation (full or plus) within 1.2x of --secagg off;
* upload per client within 1.01x of a float32 plaintext (4d bytes) at d = 1M, n = 100;
* the default end to end within 60 s on this 2-core machine."""


def discard(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# 1. round time, secure vs off


@dataclass
class Timers:
    """Seconds spent in the wrapped functions since the last ``take``."""

    train: float = 0.0
    evaluate: float = 0.0
    round_start: float = 0.0

    def take(self) -> tuple[float, float]:
        out = (self.train, self.evaluate)
        self.train = self.evaluate = 0.0
        return out


def timed(fn: Callable, add: Callable[[float], None]) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add(time.perf_counter() - start)
    return wrapper


class Instrumented:
    """Wraps ``pipeline.rounds.train_locally``, ``pipeline.rounds.accuracy`` and
    ``sim.run.run_round`` while active."""

    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self.saved: list[tuple[object, str, object]] = []

    def _patch(self, module: object, name: str, new: object) -> None:
        self.saved.append((module, name, getattr(module, name)))
        setattr(module, name, new)

    def __enter__(self) -> Instrumented:
        t = self.timers

        def add_train(s: float) -> None:
            t.train += s

        def add_eval(s: float) -> None:
            t.evaluate += s

        run_round = run_mod.run_round

        def start_round(*args, **kwargs):
            t.round_start = time.perf_counter()
            return run_round(*args, **kwargs)

        self._patch(rounds_mod, "train_locally", timed(rounds_mod.train_locally, add_train))
        self._patch(rounds_mod, "accuracy", timed(rounds_mod.accuracy, add_eval))
        self._patch(run_mod, "run_round", start_round)
        return self

    def __exit__(self, *exc) -> None:
        for module, name, old in reversed(self.saved):
            setattr(module, name, old)


@dataclass
class ModeRun:
    mode: str
    start_seconds: float  # run.start: label discovery + initial model
    wall: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    secagg: list[float] = field(default_factory=list)
    evaluate: list[float] = field(default_factory=list)
    skipped: int = 0
    cpu: float = 0.0  # process CPU seconds in run_rounds
    rounds_wall: float = 0.0  # wall seconds in run_rounds
    final_accuracy: float = float("nan")
    final_vector: np.ndarray | None = None
    upload: int = 0

    @property
    def rest(self) -> list[float]:
        return [w - t - s - e for w, t, s, e in zip(self.wall, self.train, self.secagg,
                                                    self.evaluate, strict=True)]


class Player:
    """One mode's run, played a round at a time: ``run.start`` once, then ``run.run_rounds``
    with the stored configuration's round count raised by one each call (what ``--resume``
    does), so that the modes can be interleaved round by round."""

    def __init__(self, config: SimConfig, setup: Setup, out: Path) -> None:
        self.setup, self.out, self.timers = setup, out, Timers()
        t0 = time.perf_counter()
        self.state = run_mod.start(replace(config, rounds=1), setup, discard)
        self.result = ModeRun(config.secagg, time.perf_counter() - t0)
        out.mkdir(parents=True, exist_ok=True)

    def _on_round(self, rec: rounds_mod.RoundRecord) -> None:
        r, t = self.result, self.timers
        r.wall.append(time.perf_counter() - t.round_start)
        train, evaluate = t.take()
        r.train.append(train)
        r.evaluate.append(evaluate)
        r.secagg.append(rec.secagg_seconds)
        r.skipped += rec.skipped
        r.upload = max(r.upload, rec.upload_bytes_per_client)

    def play_round(self) -> None:
        state = self.state
        state.config = replace(state.config, rounds=state.next_round)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with Instrumented(self.timers):
            self.state = run_mod.run_rounds(state, self.setup, self.out, discard,
                                            progress=False, on_round=self._on_round)
        self.result.cpu += time.process_time() - cpu0
        self.result.rounds_wall += time.perf_counter() - wall0
        self.result.final_accuracy = self.state.rounds[-1]["test_accuracy"]
        self.result.final_vector = self.state.global_vector


def stats_cell(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} / {statistics.fmean(xs):.3f}"


def bench_rounds(num_rounds: int) -> None:
    print(f"## 1. Round time: secagg full / plus / off, {num_rounds} rounds each\n")
    base = SimConfig(rounds=num_rounds, init="random", workers=1)  # training timed in this process
    setup = prepare_data(base)
    codec = make_codec(base, len(model_to_vector(new_model(base, setup.train))))
    k, t = choose_secagg_plus_params(base.cohort, base.dropout, 0.1)
    plus_note = (f"k={k} >= cohort-1={base.cohort - 1}: 'plus' falls back to the complete "
                 f"graph, the same protocol as 'full'" if k >= base.cohort - 1
                 else f"k={k}, t={t}")
    print(f"SimConfig defaults but --init random: {base.dataset}, {base.effective_model}, "
          f"{base.clients} clients, "
          f"cohort {base.cohort}, dropout {base.dropout}, {base.local_epochs} local epochs, "
          f"batch {base.batch_size}; {len(setup.train)} train / {len(setup.test)} test examples")
    print(f"codec: d = {codec.dim:,} coordinates, vector_length {codec.vector_length:,}, "
          f"{codec.modulus_bits}-bit ring; SecAgg+ at n={base.cohort}: "
          f"choose_secagg_plus_params -> (k, t) = ({k}, {t}): {plus_note}\n")
    default_threads = torch.get_num_threads()
    passes = [(default_threads, None, "torch's default and numpy's OpenBLAS default: as the CLI "
               "runs"),
              (default_threads, 1, "numpy's OpenBLAS limited to 1 thread with threadpoolctl, "
               "torch as is"),
              (1, 1, "torch.set_num_threads(1) and OpenBLAS on 1 thread")]
    try:
        for threads, blas, why in passes:
            torch.set_num_threads(threads)
            print(f"### torch threads = {threads}, OpenBLAS threads = {blas or 'default'} "
                  f"({why})\n")
            with blas_threads(blas):
                rounds_pass(base, setup, num_rounds)
    finally:
        torch.set_num_threads(default_threads)


@contextlib.contextmanager
def blas_threads(limit: int | None) -> Iterator[None]:
    """numpy's BLAS pool limited to ``limit`` threads (None: as is) with threadpoolctl, which
    scikit-learn brings in."""
    if limit is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=limit, user_api="blas"):
        yield


def rounds_pass(base: SimConfig, setup: Setup, num_rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rounds_bench_") as tmp:
        warm = Player(base, setup, Path(tmp) / "warmup")
        warm.play_round()
        print(f"warm-up: 1 round of 'full' in {warm.result.wall[0]:.2f} s (not counted)\n")
        players = [Player(replace(base, secagg=mode), setup, Path(tmp) / mode)
                   for mode in MODES]
        for _ in range(num_rounds):
            for player in players:
                player.play_round()
        runs = [player.result for player in players]
    cols = ("secagg", "round wall s (median / mean)", "training s", "aggregation s",
            "evaluation s", "rest s", "rounds total s", "cpu / wall", "skipped",
            "upload B/client", "run.start s", "final acc")
    print("| " + " | ".join(cols) + " |")
    print("| --- |" + " ---: |" * (len(cols) - 1))
    for r in runs:
        cells = (r.mode, stats_cell(r.wall), stats_cell(r.train), stats_cell(r.secagg),
                 stats_cell(r.evaluate), stats_cell(r.rest), f"{sum(r.wall):.2f}",
                 f"{r.cpu / r.rounds_wall:.2f}", str(r.skipped), f"{r.upload:,}",
                 f"{r.start_seconds:.2f}", f"{r.final_accuracy:.4f}")
        print("| " + " | ".join(cells) + " |")
    off = runs[-1]
    print()
    for r in runs[:-1]:
        med = statistics.median(r.wall) / statistics.median(off.wall)
        mean = statistics.fmean(r.wall) / statistics.fmean(off.wall)
        paired = statistics.median(a / b for a, b in zip(r.wall, off.wall, strict=True))
        agg = statistics.fmean(r.secagg) - statistics.fmean(off.secagg)
        print(f"{r.mode} / off: round wall x{med:.3f} (medians), x{mean:.3f} (means), "
              f"x{paired:.3f} (median of the per-round ratios); goal <= 1.2. Aggregation adds "
              f"{agg:.3f} s per round (mean) = {agg / statistics.fmean(off.wall):.1%} of the "
              f"mean 'off' round")
    same = all(np.array_equal(r.final_vector, off.final_vector) for r in runs)
    print(f"same global model after {num_rounds} rounds in all three modes: "
          f"{'yes' if same else 'NO (a skipped round or a non-exact sum)'}\n", flush=True)


# ---------------------------------------------------------------------------------------------
# 2. upload bytes per client


def upload_session(label: str, cfg: SecAggConfig, inputs: dict[int, np.ndarray], d: int) -> None:
    start = time.perf_counter()
    res = run_masked_sum(cfg, inputs, seed=SEED)
    wall = time.perf_counter() - start
    expected = np.zeros(cfg.vector_length, dtype=np.uint64)
    for x in inputs.values():
        expected += x  # 100 entries < 2^25 each: no wrap in uint64
    exact = np.array_equal(res.total, expected % np.uint64(cfg.modulus))
    uploads = res.stats.client_total_upload()
    values = [uploads[c] for c in sorted(res.included)]
    plain = 4 * d
    print(f"### {label}: n={cfg.num_clients}, t={cfg.threshold}, "
          f"neighbours={cfg.neighbors if cfg.neighbors is not None else 'all (complete graph)'}"
          f"; session {wall:.1f} s, sum exact: {'yes' if exact else 'NO'}\n")
    print(f"upload per client: max {max(values):,} B = x{max(values) / plain:.5f} of 4d; "
          f"median {statistics.median(values):,.0f} B = "
          f"x{statistics.median(values) / plain:.5f} of 4d (4d = {plain:,} B); goal <= 1.01\n")
    cid = min(res.included)
    print(f"| step (client {cid}) | upload B | / 4d |")
    print("| --- | ---: | ---: |")
    for step in STEPS:
        b = res.stats.client_upload_bytes.get(step, {}).get(cid, 0)
        print(f"| {step} | {b:,} | {b / plain:.6f} |")
    print(f"| total | {uploads[cid]:,} | {uploads[cid] / plain:.6f} |\n", flush=True)


def bench_upload(d: int) -> None:
    n = N_UPLOAD
    print(f"## 2. Upload bytes per client, d = {d:,}, n = {n}, no dropouts\n")
    codec = UpdateCodec(dim=d, clip=1.0, cohort=n)
    rng = np.random.default_rng(SEED)
    start = time.perf_counter()
    inputs = {cid: codec.encode(rng.normal(0.0, 0.05, d), int(rng.integers(1, 2000)), rng)
              for cid in range(n)}
    print(f"UpdateCodec(dim={d:,}, clip=1.0, cohort={n}): b = {codec.level_bits} level bits, "
          f"{codec.modulus_bits}-bit ring, vector_length {codec.vector_length:,} "
          f"(d + 1 weight + {codec.norm_limbs} norm limbs); encoded {n} updates in "
          f"{time.perf_counter() - start:.1f} s\n")
    full = SecAggConfig(n, 2 * n // 3 + 1, codec.vector_length, codec.modulus)
    upload_session("Complete graph (Bonawitz)", full, inputs, d)
    k, t = choose_secagg_plus_params(n, 0.1, 0.1)
    if k >= n - 1:
        print(f"SecAgg+: choose_secagg_plus_params({n}, 0.1, 0.1) = ({k}, {t}): k >= n - 1, so "
              f"SecAgg+ uses the complete graph; its upload is the one above (t={t} vs "
              f"{full.threshold}: the same message sizes)\n", flush=True)
    else:
        plus = SecAggConfig(n, t, codec.vector_length, codec.modulus, neighbors=k)
        upload_session(f"SecAgg+ (k={k})", plus, inputs, d)
    del inputs
    gc.collect()


# ---------------------------------------------------------------------------------------------
# 3. default end to end


def bench_end_to_end(quick: bool) -> None:
    extra = ["--rounds", "5"] if quick else []
    cmd = [sys.executable, "-m", "gptfl_secure.sim", "--init", "random", "--no-progress",
           "--out", "<tmpdir>", *extra]
    print(f"## 3. End to end: `{' '.join(['python', *cmd[1:]])}`\n")
    note = " (--quick: 5 rounds, not the default 30)" if quick else ""
    print(f"Goal: wall <= 60 s{note}. Rows 2 and 3, for comparison: numpy's OpenBLAS on one thread "
          "(OPENBLAS_NUM_THREADS=1), then torch and OpenBLAS both on one (OMP_NUM_THREADS=1). "
          "Row 4: SimConfig's default --init synthetic with a fresh --cache-dir.\n")
    print("| environment | wall s | child cpu / wall | rounds | skipped | final test accuracy "
          "| secagg_seconds summed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    runs = (("as is", {}, []),
            ("OPENBLAS_NUM_THREADS=1", {"OPENBLAS_NUM_THREADS": "1"}, []),
            ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}, []),
            ("as is, --init synthetic", {}, ["--init", "synthetic", "--cache-dir"]))
    for label, env, flags in runs:
        with tempfile.TemporaryDirectory(prefix="rounds_bench_e2e_") as tmp:
            argv = [tmp if a == "<tmpdir>" else a for a in cmd]
            if flags:  # after the command's own flags: the last --init wins
                argv += [*flags, str(Path(tmp) / "cache")]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, **env})
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                print(f"| {label} | FAILED (exit {proc.returncode}) after {wall:.1f} s: "
                      f"{proc.stderr[-300:]!r} |")
                continue
            metrics = json.loads((Path(tmp) / "metrics.json").read_text())
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        rounds = metrics["rounds"]
        print(f"| {label} | {wall:.1f} | {cpu / wall:.2f} | {len(rounds)} | "
              f"{sum(r['skipped'] for r in rounds)} | {metrics['final_test_accuracy']:.4f} | "
              f"{sum(r['secagg_seconds'] for r in rounds):.2f} |", flush=True)
    print()


# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS threads unknown: no threadpoolctl"
    pools = [f"{p['internal_api']} {p['num_threads']} threads" for p in threadpool_info()
             if p["user_api"] == "blas"]
    return "BLAS: " + (", ".join(pools) or "none loaded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds, d = 100K, a 5-round end to end (about a minute)")
    parser.add_argument("--rounds", type=int, help="rounds per mode in part 1 (default 10)")
    args = parser.parse_args()
    num_rounds = args.rounds or (3 if args.quick else 10)
    start = time.perf_counter()
    print(f"# rounds_bench{' --quick' if args.quick else ''}\n")
    print(f"CPU: {cpu_model()}; os.cpu_count() = {os.cpu_count()} "
          f"({len(os.sched_getaffinity(0))} usable); load average at start "
          f"{os.getloadavg()[0]:.2f}")
    print(f"Python {platform.python_version()}, torch {torch.__version__} "
          f"(torch.get_num_threads() = {torch.get_num_threads()}), numpy {np.__version__} "
          f"({blas_description()})\n")
    print(GOALS + "\n", flush=True)
    bench_rounds(num_rounds)
    bench_upload(100_000 if args.quick else 1_000_000)
    bench_end_to_end(args.quick)
    print(f"Whole run: {time.perf_counter() - start:.0f} s; "
          f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
