"""``--compare``: the GPT-FL comparison on one partition and seed (paper Tables 2-4, Fig. 8).

Arms, all with the same round budget, cohort, dropouts and masked sum:

    gptfl_fedavg    pretrained on synthetic data, then FedAvg
    gptfl_fedopt    pretrained on synthetic data, then FedAdam (or --strategy if adaptive)
    fedavg_random   random initialisation, then FedAvg
    fedopt_random   random initialisation, then FedAdam
    synthetic_only  the pretrained model, no fine-tuning
    local_only      each client of a sampled cohort fine-tunes the pretrained model alone for
                    the whole budget (rounds x local epochs); accuracy averaged over clients

Each arm that trains gets its own client learning rate, the best final test accuracy over
:data:`LR_GRID`, so that no baseline is starved. Every grid point's curve is kept in
``comparison.json`` under ``grid`` for anyone who wants to check the pick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..learning.local import (
    LocalTrainingConfig,
    evaluate,
    model_to_vector,
    train_locally,
    vector_to_model,
)
from ..learning.partition import sample_clients
from ..pipeline import outputs as report
from ..pipeline.config import SimConfig
from ..pipeline.setup import Setup, new_model, new_optimizer
from ..pipeline.state import RunState
from .run import run_rounds

LR_GRID = (0.01, 0.03, 0.1)
FEDERATED_ARMS = ("gptfl_fedavg", "gptfl_fedopt", "fedavg_random", "fedopt_random")
ARMS = FEDERATED_ARMS + ("synthetic_only", "local_only")
_LOCAL_ONLY = 5  # stream label for the local_only cohort


def arm_config(config: SimConfig, arm: str, lr: float) -> SimConfig:
    adaptive = config.strategy if config.strategy != "fedavg" else "fedadam"
    strategy = "fedavg" if "fedavg" in arm else adaptive
    init = "synthetic" if arm.startswith("gptfl") else "random"
    server_lr = config.server_lr if strategy == config.strategy else None
    return replace(config, strategy=strategy, init=init, lr=lr, server_lr=server_lr,
                   compare=False)


def run_comparison(config: SimConfig, setup: Setup, base: RunState, pretrained: np.ndarray,
                   out: Path, log: Callable[[str], None], progress: bool = False) -> dict:
    """Play every arm; returns ``comparison.json``'s content plus ``grid``."""
    random_init = _random_vector(config, setup)
    arms: dict[str, dict] = {}
    grid: dict[str, dict[str, float]] = {}
    states: dict[str, RunState] = {}
    for arm in FEDERATED_ARMS:
        best = None
        for lr in LR_GRID:
            cfg = arm_config(config, arm, lr)
            start_vector = pretrained if cfg.init == "synthetic" else random_init
            state = RunState(config=cfg, label_discovery=base.label_discovery,
                             pretrain=base.pretrain, global_vector=start_vector.copy(),
                             optimizer_state=new_optimizer(cfg).state_dict())
            log(f"      {arm} lr={lr}: {cfg.strategy}, init {cfg.init}")
            state = run_rounds(state, setup, out / "arms" / f"{arm}_lr{lr}", _quiet,
                               progress=progress)
            final = state.rounds[-1]["test_accuracy"]
            grid.setdefault(arm, {})[str(lr)] = final
            if best is None or final > best[0]:
                best = (final, lr, state)
        final, lr, state = best
        states[arm] = state
        arms[arm] = {
            "lr": lr,
            "strategy": state.config.strategy,
            "test_accuracy_per_round": [r["test_accuracy"] for r in state.rounds],
            "gradient_diversity_per_round": [r["gradient_diversity"] for r in state.rounds],
            "final_test_accuracy": final,
        }
        log(f"      {arm}: lr {lr} picked, final test accuracy {final:.4f}")
    arms["synthetic_only"] = {"final_test_accuracy": _accuracy_of(config, setup, pretrained)}
    local_lr, local_acc, local_grid = _local_only(config, setup, pretrained)
    arms["local_only"] = {"lr": local_lr, "final_test_accuracy": local_acc}
    grid["local_only"] = local_grid
    log(f"      synthetic_only {arms['synthetic_only']['final_test_accuracy']:.4f}, local_only "
        f"{local_acc:.4f} (lr {local_lr})")
    return {"arms": arms, "grid": grid, "lr_grid": list(LR_GRID), "rounds": config.rounds,
            "goals": goals(arms)}


def _quiet(_message: str) -> None:
    pass


def _random_vector(config: SimConfig, setup: Setup) -> np.ndarray:
    return model_to_vector(new_model(config, setup.train))


def _accuracy_of(config: SimConfig, setup: Setup, vector: np.ndarray) -> float:
    model = new_model(config, setup.train)
    vector_to_model(model, vector)
    return evaluate(model, setup.test)


def _local_only(config: SimConfig, setup: Setup, pretrained: np.ndarray):
    """Paper Table 4: a sampled cohort, each client fine-tuning alone for the whole budget."""
    cohort = sample_clients(config.clients, config.cohort,
                            np.random.default_rng([config.seed, 0, _LOCAL_ONLY]))
    scratch = new_model(config, setup.train)
    results = {}
    for lr in LR_GRID:
        local = LocalTrainingConfig(config.rounds * config.local_epochs, config.batch_size, lr,
                                    config.momentum, config.weight_decay, config.prox_mu)
        accs = []
        for cid in map(int, cohort):
            delta = train_locally(scratch, pretrained, setup.parts[cid], local,
                                  seed=config.seed * 7919 + cid)
            accs.append(_accuracy_of(config, setup, pretrained + delta))
        results[lr] = float(np.mean(accs))
    best = max(results, key=results.get)
    return best, results[best], {str(k): v for k, v in results.items()}


def rounds_to(curve: list[float], target: float) -> int | None:
    """First round (1-based) whose accuracy reaches ``target``; None if never."""
    return next((i + 1 for i, a in enumerate(curve) if a >= target), None)


def goals(arms: dict) -> list[dict]:
    """The comparison's goals (GPT-FL against random initialisation), each with the measured
    values and whether it holds."""
    g = arms["gptfl_fedavg"]["test_accuracy_per_round"]
    r = arms["fedavg_random"]["test_accuracy_per_round"]
    g80, r80 = rounds_to(g, 0.8), rounds_to(r, 0.8)
    at5 = min(5, len(g)) - 1
    gd_g = arms["gptfl_fedavg"]["gradient_diversity_per_round"][0]
    gd_r = arms["fedavg_random"]["gradient_diversity_per_round"][0]
    return [
        {"goal": "rounds to 80%: gptfl_fedavg <= half of fedavg_random",
         "measured": f"{g80} vs {r80}",
         "met": g80 is not None and (r80 is None or 2 * g80 <= r80)},
        {"goal": f"round {at5 + 1}: gptfl_fedavg >= fedavg_random + 20 points",
         "measured": f"{g[at5]:.4f} vs {r[at5]:.4f}", "met": g[at5] >= r[at5] + 0.20},
        {"goal": "final: gptfl_fedavg >= fedavg_random - 1 point",
         "measured": f"{g[-1]:.4f} vs {r[-1]:.4f}", "met": g[-1] >= r[-1] - 0.01},
        {"goal": "synthetic_only below gptfl_fedavg",
         "measured": f"{arms['synthetic_only']['final_test_accuracy']:.4f} vs {g[-1]:.4f}",
         "met": arms["synthetic_only"]["final_test_accuracy"] < g[-1]},
        {"goal": "round-1 gradient diversity: gptfl_fedavg < fedavg_random",
         "measured": f"{_fmt(gd_g)} vs {_fmt(gd_r)}",
         "met": gd_g is not None and gd_r is not None and gd_g < gd_r},
    ]


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def write_comparison(out: Path, comparison: dict) -> None:
    report.write_json(out / "comparison.json", comparison)
    (out / "comparison.md").write_text(comparison_markdown(comparison))
    report.plot_comparison(out / "comparison.png", comparison["arms"])


def comparison_markdown(comparison: dict) -> str:
    arms = comparison["arms"]
    lines = ["| arm | client lr | round 1 | round 5 | round 10 | final | rounds to 80% | "
             "gradient diversity, round 1 |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | "
             "---: |"]
    for name in ARMS:
        a = arms[name]
        curve = a.get("test_accuracy_per_round")
        if curve:
            at = [f"{curve[i - 1]:.3f}" if len(curve) >= i else "" for i in (1, 5, 10)]
            reach = rounds_to(curve, 0.8)
            gd = _fmt(a["gradient_diversity_per_round"][0])
            lines.append(f"| {name} | {a['lr']} | {' | '.join(at)} | "
                         f"{a['final_test_accuracy']:.3f} | {reach or 'never'} | {gd} |")
        else:
            lr = a.get("lr", "")
            lines.append(f"| {name} | {lr} | | | | {a['final_test_accuracy']:.3f} | | |")
    lines += ["", f"Client learning rate of each arm picked by final accuracy on "
              f"{comparison['lr_grid']}; {comparison['rounds']} rounds.", "",
              "| goal | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'no'} |"
              for g in comparison["goals"]]
    return "\n".join(lines) + "\n"
