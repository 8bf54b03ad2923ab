"""Round time of the GPT-FL pipeline over Flower's deployment engine vs the in-process sim.

Default model (small_cnn on the embedded digits), 5 clients, cohort 5, ``secagg=full``, SimConfig
defaults for local training (5 epochs, batch 8), ``--init random`` skipped in favour of a short
synthetic pretraining (1 epoch, 20 examples per label) since pretraining is not part of a round.
Three runs from the same seed:

1. in-process sim: ``run.start`` then ``run_round`` per round (what ``python -m gptfl_secure.sim``
   does), local training and the masked sum timed separately;
2. Flower simulation engine (Ray, ``flwr.simulation.run_simulation``, 5 virtual nodes);
3. Flower deployment engine on loopback: a SuperLink and 5 SuperNodes
   (:class:`gptfl_secure.flower.deployment.LocalDeployment`), ``flwr run``.

For 2 and 3 the round time is the sum of the round's exchanges (``train`` + the five protocol
steps, from ``flower.json``); the table splits it per exchange and gives the clients' own
compute (training, protocol steps) from the in-process run for comparison. The three runs reach
the same sums (the masked sum is exact and every seed is shared), which the bench checks.

Run: ``.venv/bin/python benches/flower_bench.py [--rounds N]`` (about 5 minutes on 2 cores);
prints a table and writes ``benches/results/flower_bench.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = ("train", "advertise_keys", "share_keys", "masked_input", "consistency_check",
         "unmasking")


def base_config(rounds: int, out: Path) -> dict:
    return {"clients": 5, "cohort": 5, "rounds": rounds, "pretrain-epochs": 1,
            "synthetic-per-label": 20, "dropout": 0.0, "out-dir": str(out),
            "step-timeout": 120.0, "train-timeout": 300.0, "enroll-timeout": 120.0}


def in_process(cfg: dict) -> dict:
    from gptfl_secure.flower.options import parse_run_config
    from gptfl_secure.learning.local import LocalTrainingConfig
    from gptfl_secure.pipeline.aggregation import make_aggregator
    from gptfl_secure.pipeline.codecs import make_update_codec
    from gptfl_secure.pipeline.setup import limit_threads, new_model, new_optimizer, prepare_data
    from gptfl_secure.sim.rounds import RoundContext, run_round
    from gptfl_secure.sim.run import start

    config, _ = parse_run_config(cfg)
    limit_threads(config.threads)
    setup = prepare_data(config)
    state = start(config, setup, lambda _: None)
    ctx = RoundContext(
        train_parts=setup.parts, test=setup.test, global_model=new_model(config, setup.train),
        scratch_model=new_model(config, setup.train),
        codec=make_update_codec(config, len(state.global_vector)),
        local=LocalTrainingConfig(config.local_epochs, config.batch_size, config.lr,
                                  config.momentum, config.weight_decay, config.prox_mu),
        aggregate=make_aggregator(config.secagg, 0.0), cohort=config.cohort, dropout=0.0,
        seed=config.seed)
    train_seconds = []
    original = ctx.train

    def timed(*args):
        t = time.perf_counter()
        try:
            return original(*args)
        finally:
            train_seconds[-1] += time.perf_counter() - t

    ctx.train = timed
    optimizer = new_optimizer(config)
    rows, totals = [], []
    vector = state.global_vector
    for r in range(1, config.rounds + 1):
        train_seconds.append(0.0)
        t = time.perf_counter()
        outcome = run_round(ctx, r, vector, optimizer)
        vector = outcome.global_vector
        rows.append({"round": time.perf_counter() - t, "train": train_seconds[-1],
                     "secagg": outcome.record.secagg_seconds})
        totals.append(np.asarray(outcome.session.total))
    return {"rows": rows, "totals": totals}


def flower_rows(out: Path, rounds: int) -> dict:
    exchanges = json.loads((out / "flower.json").read_text())["exchanges"]
    sums = np.load(out / "sums.npz")
    rows = []
    for r in range(1, rounds + 1):
        per = {e["group"].split("/")[1]: e["seconds"] for e in exchanges
               if e["group"].startswith(f"round{r}/")}
        rows.append({"round": sum(per.values()), **per})
    return {"rows": rows, "totals": [sums[f"round{r}_total"] for r in range(1, rounds + 1)]}


def simulation_engine(cfg: dict) -> dict:
    from flwr.simulation import run_simulation

    from gptfl_secure.flower.client_app import build_client_app
    from gptfl_secure.flower.server_app import build_server_app

    run_simulation(build_server_app(cfg, log=lambda _: None), build_client_app(cfg),
                   num_supernodes=cfg["clients"],
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count() or 2,
                                                 "include_dashboard": False}})
    return flower_rows(Path(cfg["out-dir"]), cfg["rounds"])


def deployment_engine(cfg: dict, work: Path) -> dict:
    from gptfl_secure.flower.deployment import LocalDeployment

    with LocalDeployment(work, nodes=cfg["clients"]) as deployment:
        run = deployment.start_run(cfg)
        if run.wait(timeout=1800) != 0:
            raise RuntimeError((work / "run.log").read_text()[-3000:])
    return flower_rows(Path(cfg["out-dir"]), cfg["rounds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = [f"flower_bench: {args.rounds} rounds, 5 clients, cohort 5, small_cnn on digits; "
             f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("XDG_CACHE_HOME", str(tmp / "cache"))
        results = {
            "in-process sim": in_process(base_config(args.rounds, tmp / "sim")),
            "Flower simulation (Ray)": simulation_engine(base_config(args.rounds, tmp / "ray")),
            "Flower deployment": deployment_engine(base_config(args.rounds, tmp / "dep"),
                                                   tmp / "deploy"),
        }
    reference = results["in-process sim"]["totals"]
    for name, res in results.items():
        same = all(np.array_equal(a, b) for a, b in zip(res["totals"], reference, strict=True))
        assert same, f"{name}: sums differ from the in-process sim"
    base = np.mean([row["round"] for row in results["in-process sim"]["rows"]])
    lines.append(f"{'engine':26s} {'round s':>8s} {'x sim':>6s}   breakdown (mean s per round)")
    for name, res in results.items():
        rows = res["rows"]
        mean = np.mean([row["round"] for row in rows])
        keys = [k for k in rows[0] if k != "round"]
        parts = ", ".join(f"{k} {np.mean([row.get(k, 0.0) for row in rows]):.2f}" for k in keys)
        lines.append(f"{name:26s} {mean:8.2f} {mean / base:6.1f}   {parts}")
    lines.append("every engine reached the same sums, round by round (checked)")
    text = "\n".join(lines)
    print(text)
    (ROOT / "benches" / "results").mkdir(exist_ok=True)
    (ROOT / "benches" / "results" / "flower_bench.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
