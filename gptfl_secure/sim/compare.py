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
:data:`LR_GRID`, so that no baseline is starved. Every grid point's final accuracy is kept in
``comparison.json`` under ``grid`` for anyone who wants to check the pick.

With ``--seeds K`` the whole comparison is played on K seeds (:mod:`.compare_seeds`) and
``comparison.md`` states each goal on the mean curves and on how many seeds it holds.
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
from .compare_seeds import combine, mean_arms, play_seeds, seed_configs
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
                   compare=False, seeds=1)


def run_comparison(config: SimConfig, setup: Setup, base: RunState, pretrained: np.ndarray,
                   out: Path, log: Callable[[str], None], progress: bool = False) -> dict:
    """``comparison.json``'s content: every arm on ``config.seed`` (:func:`compare_seed`), or
    with ``--seeds K`` > 1 on K seeds from ``config.seed`` on, combined into means, sds and
    95% intervals (:mod:`.compare_seeds`). ``setup``, ``base`` and ``pretrained`` are
    ``config.seed``'s data, state after label discovery and pretrained vector."""
    lr_grid = tuple(LR_GRID)
    if config.seeds == 1:
        return compare_seed(config, setup, base, pretrained, out, log, progress, lr_grid)
    results = play_seeds(config, (setup, base, pretrained), out, log, lr_grid, compare_seed,
                         progress)
    return combine([c.seed for c in seed_configs(config)], results, goals)


def compare_seed(config: SimConfig, setup: Setup, base: RunState, pretrained: np.ndarray,
                 out: Path, log: Callable[[str], None], progress: bool = False,
                 lr_grid: tuple[float, ...] = LR_GRID) -> dict:
    """Play every arm on ``config.seed``, each client learning rate of ``lr_grid``; returns
    ``comparison.json``'s content for one seed, ``grid`` included."""
    random_init = _random_vector(config, setup)
    arms: dict[str, dict] = {}
    grid: dict[str, dict[str, float]] = {}
    states: dict[str, RunState] = {}
    for arm in FEDERATED_ARMS:
        best = None
        for lr in lr_grid:
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
    local_lr, local_acc, local_grid = _local_only(config, setup, pretrained, lr_grid)
    arms["local_only"] = {"lr": local_lr, "final_test_accuracy": local_acc}
    grid["local_only"] = local_grid
    log(f"      synthetic_only {arms['synthetic_only']['final_test_accuracy']:.4f}, local_only "
        f"{local_acc:.4f} (lr {local_lr})")
    return {"arms": arms, "grid": grid, "lr_grid": list(lr_grid), "rounds": config.rounds,
            "goals": goals(arms)}


def _quiet(_message: str) -> None:
    pass


def _random_vector(config: SimConfig, setup: Setup) -> np.ndarray:
    return model_to_vector(new_model(config, setup.train))


def _accuracy_of(config: SimConfig, setup: Setup, vector: np.ndarray) -> float:
    model = new_model(config, setup.train)
    vector_to_model(model, vector)
    return evaluate(model, setup.test)


def _local_only(config: SimConfig, setup: Setup, pretrained: np.ndarray,
                lr_grid: tuple[float, ...]):
    """Paper Table 4: a sampled cohort, each client fine-tuning alone for the whole budget."""
    cohort = sample_clients(config.clients, config.cohort,
                            np.random.default_rng([config.seed, 0, _LOCAL_ONLY]))
    scratch = new_model(config, setup.train)
    results = {}
    for lr in lr_grid:
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
         "measured": f"{g80 or 'never'} vs {r80 or 'never'}",
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
    """``comparison.json``, ``comparison.md`` and ``comparison.png`` (for several seeds: the
    mean curves)."""
    several = "seeds" in comparison
    report.write_json(out / "comparison.json", comparison)
    (out / "comparison.md").write_text(comparison_markdown(comparison))
    report.plot_comparison(out / "comparison.png", mean_arms(comparison["arms"]) if several
                           else comparison["arms"])


def comparison_markdown(comparison: dict) -> str:
    """The comparison's tables: one seed's values, or for several seeds their means."""
    if "seeds" in comparison:
        return seeds_markdown(comparison)
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


def seeds_markdown(comparison: dict) -> str:
    """The tables of a comparison over several seeds (:func:`.compare_seeds.combine`): mean ±
    sd per arm, the 95% intervals, and each goal on the mean and per seed."""
    arms, seeds = comparison["arms"], comparison["seeds"]
    lines = [f"Mean ± standard deviation over {len(seeds)} seeds ({_seed_list(seeds)}); "
             f"{comparison['rounds']} rounds; each seed picks each arm's client learning rate "
             f"by final accuracy on {comparison['lr_grid']}.", "",
             "| arm | client lr per seed | round 1 | round 5 | round 10 | final | rounds to 80% "
             "per seed | gradient diversity, round 1 |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    intervals = ["| arm | round 5 | final | gradient diversity, round 1 |",
                 "| --- | ---: | ---: | ---: |"]
    for name in ARMS:
        a = arms[name]
        lrs = ", ".join(str(e["lr"]) for e in a["seeds"] if "lr" in e)
        final = _mean_sd(a["final_test_accuracy_mean"], a["final_test_accuracy_sd"])
        if "test_accuracy_mean_per_round" not in a:
            lines.append(f"| {name} | {lrs} | | | | {final} | | |")
            intervals.append(f"| {name} | | {_ci(a['final_test_accuracy_ci95'])} | |")
            continue
        n = len(a["test_accuracy_mean_per_round"])
        at = [_mean_sd(a["test_accuracy_mean_per_round"][i - 1],
                       a["test_accuracy_sd_per_round"][i - 1]) if n >= i else ""
              for i in (1, 5, 10)]
        reach = ", ".join(str(rounds_to(e["test_accuracy_per_round"], 0.8) or "never")
                          for e in a["seeds"])
        gd = _mean_sd(a["gradient_diversity_mean_per_round"][0],
                      a["gradient_diversity_sd_per_round"][0], 3)
        lines.append(f"| {name} | {lrs} | {' | '.join(at)} | {final} | {reach} | {gd} |")
        r5 = _ci(a["test_accuracy_ci95_per_round"][4]) if n >= 5 else ""
        intervals.append(f"| {name} | {r5} | "
                         f"{_ci(a['final_test_accuracy_ci95'])} | "
                         f"{_ci(a['gradient_diversity_ci95_per_round'][0])} |")
    lines += ["", "95% t-intervals of the means:", "", *intervals, "",
              "Goals on the mean curves (rounds to 80% read off the mean accuracy curve), and on "
              "how many seeds each holds:", "",
              "| goal | on the mean | holds on the mean | seeds where it holds | per seed |",
              "| --- | --- | --- | ---: | --- |"]
    for g in comparison["goals"]:
        per_seed = "; ".join(f"{p['measured']}{'' if p['met'] else ' (no)'}"
                             for p in g["per_seed"])
        lines.append(f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'no'} | "
                     f"{g['met_seeds']} of {len(g['per_seed'])} | {per_seed} |")
    return "\n".join(lines) + "\n"


def _seed_list(seeds: list[int]) -> str:
    return f"{seeds[0]} to {seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else (
        ", ".join(map(str, seeds)))


def _mean_sd(mean: float | None, sd: float | None, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def _ci(interval: list[float] | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
