"""Batched (vmap) clients against the process pool and one process.

For each model, one round's local training of a cohort of 10 clients (of 50, Dirichlet(0.1) label
skew, the sim's partition and training seeds) five ways:

* ``sequential``: one process, one thread, each client with ``train_locally`` in turn (the sim
  with ``--workers 1``);
* ``pool x2``: the sim's :class:`~gptfl_secure.sim.workers.ClientPool` with 2 workers of one
  thread each (the sim's auto setting on a 2-core machine), created before the clock;
* ``vmap``: the sim's ``--client-batching vmap --workers 1``: the cohort in batches of at most
  5 clients (:func:`~gptfl_secure.learning.batched.train_in_batches`) in one process, one
  thread (not two: torch's intra-op threads spin between the tiny steps and, on a
  shared 2-core machine, slowed every mode measured after them several times over; the sim runs
  ``--threads 1`` for the same reason);
* ``vmap, one batch``: the whole cohort as one batch
  (:func:`~gptfl_secure.learning.batched.train_batched`), in one process, one thread;
* ``pool x2 + vmap``: the sim's ``--client-batching vmap --workers 2``: the same batches of at
  most 5 as ``vmap``, one per task of the 2-worker pool (``ClientPool(batched=True)``).

One timing of a mode trains the cohorts of rounds 1 to ``--rounds`` (3; their client sizes
differ, and a batch lasts as long as its largest client) and counts the mean per round. Each
mode is warmed up once, then the modes are timed in turn, ``--repeats`` times (interleaved: a
change in the machine's load hits every mode alike); the table shows medians, and each ratio is
of two medians of the same run. The bench also checks that the pools' updates equal the one
process's bit for bit (the batched pool's those of one vmap batch). The largest
|Δ_vmap - Δ_sequential| is reported beside the scale of what float rounding does to this
training: how far the sequential Δ moves when the start moves by one ulp.

Models: small_cnn on the embedded 8x8 digits (5 local epochs, the sim's default), convnet on
the same 8x8 digits, and convnet on a generated folder of 28x28 digit PNGs (one local epoch, so
the bench stays within about 3 minutes on 2 cores).

    python benches/batched_bench.py        # writes benches/results/batched_bench.txt
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_bench import make_digit_folder  # noqa: E402

from gptfl_secure.learning.batched import (  # noqa: E402
    CLIENTS_PER_BATCH,
    probe,
    train_in_batches,
)
from gptfl_secure.learning.local import model_to_vector  # noqa: E402
from gptfl_secure.pipeline.codecs import CodecRound  # noqa: E402
from gptfl_secure.pipeline.config import RunConfig  # noqa: E402
from gptfl_secure.pipeline.rounds import plain_local_training, plan_round, train_client  # noqa: E402
from gptfl_secure.pipeline.seeds import training_seed  # noqa: E402
from gptfl_secure.pipeline.setup import (  # noqa: E402
    limit_threads,
    local_training,
    new_model,
    prepare_data,
    usable_cores,
)
from gptfl_secure.sim.workers import ClientPool  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "batched_bench.txt"
MODES = ("sequential", "pool x2", "vmap", "vmap, one batch", "pool x2 + vmap")


def bench(name: str, config: RunConfig, repeats: int, rounds: int) -> dict:
    """Median seconds per round of each mode over the cohorts of rounds 1 .. ``rounds`` (each
    trained from the same start), and the vmap error beside train_locally's own sensitivity."""
    setup = prepare_data(config)
    model = new_model(config, setup.train)
    local = local_training(config)
    vector = model_to_vector(model)
    cohorts = []
    for r in range(1, rounds + 1):
        plan = plan_round(r, clients=config.clients, cohort=config.cohort, seed=config.seed)
        cohorts.append([CodecRound(config.seed, r, c) for c in plan.sampled])
    probe(model, local, setup.parts[cohorts[0][0].client])
    params = sum(p.numel() for p in model.parameters())

    def sequential(clients):
        return [train_client(plain_local_training, model, vector, setup.parts[at.client], local,
                             at) for at in clients]

    def batched(clients, per_batch=CLIENTS_PER_BATCH):
        return train_in_batches(model, vector, [setup.parts[at.client] for at in clients],
                                local, [training_seed(at.seed, at.round, at.client)
                                        for at in clients], per_batch)

    pool = ClientPool(setup.parts, model, local, 2, threads=1)
    batched_pool = ClientPool(setup.parts, model, local, 2, threads=1, batched=True)
    try:
        runs = {"sequential": sequential,
                "pool x2": lambda clients: _ordered(pool.train(vector, clients), clients),
                "vmap": batched,
                "vmap, one batch": lambda clients: batched(clients, len(clients)),
                "pool x2 + vmap": lambda clients: _ordered(batched_pool.train(vector, clients),
                                                           clients)}
        # warm-up, outside the clock; the results of every round are compared below
        first = {mode: [run(clients) for clients in cohorts] for mode, run in runs.items()}
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(repeats):
            for mode in MODES:
                start = time.perf_counter()
                for clients in cohorts:
                    runs[mode](clients)
                times[mode].append((time.perf_counter() - start) / rounds)
        # how far train_locally itself moves when its start moves by one ulp: the scale of the
        # float-rounding differences that training amplifies
        rng = np.random.default_rng(0)
        nudged = vector * (1 + rng.choice([-1, 1], vector.shape).astype(np.float32)
                           * np.float32(2**-23))
        sensitivity = max(float(np.abs(train_client(plain_local_training, model, nudged,
                                                    setup.parts[at.client], local, at)
                                       + (nudged - vector) - d).max())
                          for clients, deltas in zip(cohorts, first["sequential"], strict=True)
                          for at, d in zip(clients, deltas, strict=True))
    finally:
        pool.close()
        batched_pool.close()
    pairs = [(a, b) for r in range(rounds)
             for a, b in zip(first["vmap"][r], first["sequential"][r], strict=True)]
    error = max(float(np.abs(a - b).max()) for a, b in pairs)
    scale = max(float(np.abs(b).max()) for _, b in pairs)
    for same, reference in (("pool x2", "sequential"), ("pool x2 + vmap", "vmap")):
        assert all(np.array_equal(a, b) for r in range(rounds)
                   for a, b in zip(first[same][r], first[reference][r], strict=True)), same
    print(f"{name}: " + ", ".join(f"{m} {statistics.median(times[m]):.3f} s" for m in MODES),
          file=sys.stderr)
    return {"model": name, "params": params, "epochs": config.local_epochs,
            "examples": sum(len(setup.parts[at.client]) for clients in cohorts
                            for at in clients) / rounds,
            "sizes": [sorted(len(setup.parts[at.client]) for at in clients)
                      for clients in cohorts],
            "median": {m: statistics.median(times[m]) for m in MODES},
            "error": error, "scale": scale, "sensitivity": sensitivity}


def _ordered(deltas: dict[int, np.ndarray], clients: list[CodecRound]) -> list[np.ndarray]:
    return [deltas[at.client] for at in clients]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="cohorts of rounds 1 .. ROUNDS per "
                   "timing (their client sizes differ)")
    p.add_argument("--images", type=int, default=2000, help="images of the 28x28 folder")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    limit_threads(1)
    started = time.perf_counter()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_digit_folder(Path(tmp) / "digits28", args.images)
        common = dict(clients=50, cohort=10, init="random", device="cpu")
        cases = [("small_cnn (digits 8x8)", RunConfig(**common)),
                 ("convnet (digits 8x8)", RunConfig(model="convnet", local_epochs=1, **common)),
                 ("convnet (28x28 folder)", RunConfig(dataset=str(folder), image_size=28,
                                                      local_epochs=1, **common))]
        rows = [bench(name, config, args.repeats, args.rounds) for name, config in cases]
    lines = ["| model | parameters | epochs | cohort examples | mode | median s per round | "
             "/ sequential | / pool x2 |", "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        m = r["median"]
        for mode in MODES:
            lines.append(f"| {r['model']} | {r['params']:,} | {r['epochs']} | "
                         f"{r['examples']:.0f} | {mode} | {m[mode]:.3f} | "
                         f"{m[mode] / m['sequential']:.2f} | {m[mode] / m['pool x2']:.2f} |")
    lines += ["", "| model | max abs Δ | max abs (vmap Δ - sequential Δ) | max abs change of "
              "sequential Δ when the start moves by 1 ulp |", "|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['scale']:.3g} | {r['error']:.2g} | {r['sensitivity']:.2g} |"
              for r in rows]
    sizes = "\n".join(f"  {r['model']}: {r['sizes']}" for r in rows)
    text = (f"batched bench, {usable_cores()} usable cores, torch {torch.__version__}, "
            f"{args.repeats} interleaved repeats per mode, medians; every ratio is of two "
            f"medians measured in the same run (the machine is shared: load average "
            f"{load[0]:.2f} at the start); {time.perf_counter() - started:.0f} s in all\n"
            f"each timing trains the cohorts of rounds 1 to {args.rounds} (mean per round); "
            f"client sizes of those cohorts:\n{sizes}\n\n" + "\n".join(lines) + "\n")
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
