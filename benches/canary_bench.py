"""Accountant ε against the canary audit's empirical ε (one-shot estimate, Andrew et al., ICLR
2024) for several noise levels, with the real distributed-DP mechanism and with two broken
ones.

Every cell runs :func:`gptfl_secure.privacy.canary_drill.run_drill`: real clients (Poisson at
q = 0.2 of 50, each update a shared drift plus its own spread, clipped) and canaries through the
run's :class:`DistributedDPCodec` (skellam, L2 clip 1, rotation, conditional rounding, each real
client's noise share), a plain modular sum (the masked sum's result without its cost), decode,
FedAvg at server rate 1; then the model delta's cosines with the canaries give the estimate and
the rounds, each with its own number of noise shares, the accountant's ε (δ = 1e-5). The
mutants (``noise/10``: noise std scaled down 10x; ``no-clip``: updates not clipped) are the
test-only ones of ``tests/privacy/canary_mutants.py``, applied with a pytest MonkeyPatch; the
accountant's ε is the one the run would report (it does not know the mechanism is broken).

Per row: the accountant's ε and the empirical ε as mean [min, max] over ``--seeds`` seeds (each
seed: partition-free drill streams, canary directions and participation); "ok" when every
real-mechanism estimate is at or below the accountant's ε, "caught" when every mutant estimate is
above it. One command regenerates ``benches/results/canary_bench.txt`` and prints the table:

    python benches/canary_bench.py            # default: 3 seeds, 400 canaries, d = 4096, 20 rounds
    python benches/canary_bench.py --quick    # 1 seed, 200 canaries, 10 rounds: a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptfl_secure.privacy.canary import CanaryDesign  # noqa: E402
from gptfl_secure.privacy.canary_drill import run_drill  # noqa: E402
from gptfl_secure.privacy.distributed import DistributedDPCodec  # noqa: E402
from tests.privacy.canary_mutants import MUTANTS  # noqa: E402

CLIENTS, RATE, DELTA = 50, 0.2, 1e-5
NOISE = (0.5, 1.0, 2.0, 4.0, 8.0)


def cell(z: float, mechanism: str, seeds: int, canaries: int, dim: int, rounds: int):
    acc, emp = [], []
    for seed in range(seeds):
        with pytest.MonkeyPatch.context() as mp:
            if mechanism != "real":
                MUTANTS[mechanism](mp)
            codec = DistributedDPCodec(dim, 1.0, z, int(RATE * CLIENTS),
                                       max_clients=CLIENTS + canaries)
            result = run_drill(codec, CanaryDesign(canaries, dim, seed, RATE), clients=CLIENTS,
                               rounds=rounds, delta=DELTA, seed=seed, resamples=0)
        acc.append(result.accountant_epsilon)
        emp.append(result.estimate.epsilon)
    return np.array(acc), np.array(emp)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--canaries", type=int, default=400)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1 seed, 200 canaries, 10 rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "benches" / "results"
                        / "canary_bench.txt")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.canaries, args.rounds = 1, 200, 10
    start = time.perf_counter()
    lines = [f"canary audit vs accountant: {args.canaries} canaries (+ as many held out), "
             f"d = {args.dim}, {args.rounds} rounds, q = {RATE} of {CLIENTS} clients, skellam, "
             f"L2 clip 1, delta = {DELTA}, {args.seeds} seeds",
             "",
             "| z | mechanism | accountant eps | empirical eps: mean [min, max] | verdict |",
             "|---|---|---|---|---|"]
    for z in NOISE:
        for mechanism in ("real", *sorted(MUTANTS)):
            acc, emp = cell(z, mechanism, args.seeds, args.canaries, args.dim, args.rounds)
            if mechanism == "real":
                verdict = "ok" if np.all(emp <= acc) else "EXCEEDS"
            else:
                verdict = "caught" if np.all(emp > acc) else (
                    "missed" if np.all(emp <= acc) else "caught on some seeds")
            lines.append(f"| {z:g} | {mechanism} | {acc.mean():.2f} | {emp.mean():.2f} "
                         f"[{emp.min():.2f}, {emp.max():.2f}] | {verdict} |")
            print(lines[-1], flush=True)
    lines += ["", f"({time.perf_counter() - start:.0f} s; timings are not the point here, the "
                  "estimates are: they do not depend on the machine)"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
