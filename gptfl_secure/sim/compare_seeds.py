"""``--compare --seeds K``: the comparison played once per seed (``--seed``, ``--seed`` + 1, ...)
and combined into per-round means, standard deviations and 95% intervals.

Each seed is played exactly as ``--compare --seed s`` alone plays it: its own test split and
partition (the same for every arm of that seed), label discovery, synthetic set, pretraining,
client learning-rate pick and cohorts, so every seed's curves equal that single-seed run's.
Nothing is shared between seeds because everything above depends on the seed. Seeds are played
side by side in worker processes when the cores allow (:func:`seed_workers`); each worker
trains its clients one after another, so pools never nest.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..pipeline.config import RunConfig
from ..pipeline.outputs import write_json
from ..pipeline.setup import Setup, limit_threads, prepare_data, usable_cores
from ..pipeline.state import RunState
from .run import start
from .seed_stats import curve_fields, value_fields

Log = Callable[[str], None]
PlaySeed = Callable[..., dict]  # compare.compare_seed
Goals = Callable[[dict], list[dict]]  # compare.goals


@dataclass(frozen=True)
class SeedTask:
    """One seed's comparison: ``config`` has that seed and ``seeds=1``; ``given`` is the set-up,
    state after label discovery and pretrained vector when the caller already built them."""

    config: RunConfig
    out: Path
    lr_grid: tuple[float, ...]
    play: PlaySeed
    given: tuple[Setup, RunState, np.ndarray] | None = None


def seed_configs(config: RunConfig) -> list[RunConfig]:
    """The single-seed configurations of ``config.seeds`` seeds from ``config.seed`` on."""
    return [replace(config, seed=config.seed + i, seeds=1) for i in range(config.seeds)]


def seed_workers(config: RunConfig) -> int:
    """Processes that play seeds side by side: ``--seed-workers``, or (0, auto) as many as the
    usable cores allow at ``--threads`` each, at most the number of seeds; 1 inside a worker
    process of another pool."""
    if config.seed_workers:
        return min(config.seed_workers, config.seeds)
    if multiprocessing.parent_process() is not None:
        return 1
    return max(1, min(config.seeds, usable_cores() // config.threads))


def play_seeds(config: RunConfig, given: tuple[Setup, RunState, np.ndarray], out: Path,
               log: Log, lr_grid: tuple[float, ...], play: PlaySeed,
               progress: bool = False) -> list[dict]:
    """Every seed's comparison (``play``'s result), in seed order. ``given``: the first seed's
    set-up, state and pretrained vector, already built by the caller; seed s writes under
    ``out/seeds/seed{s}/``, its ``comparison.json`` (as ``--compare --seed s`` writes it)
    as soon as it is done."""
    tasks = [SeedTask(c, out / "seeds" / f"seed{c.seed}", lr_grid, play,
                      given if c.seed == config.seed else None) for c in seed_configs(config)]
    workers = seed_workers(config)
    log(f"      {len(tasks)} seeds ({tasks[0].config.seed} to {tasks[-1].config.seed}), "
        f"{workers} at a time")
    if workers == 1:
        return [_play(task, _prefixed(log, task.config.seed), progress) for task in tasks]
    results: dict[int, dict] = {}
    context = multiprocessing.get_context("spawn")  # a fork would copy torch's thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_play_collecting, task): task.config.seed for task in tasks}
        for future in as_completed(futures):
            seed = futures[future]
            results[seed], lines = future.result()
            for line in lines:
                _prefixed(log, seed)(line)
            log(f"      seed {seed} done")
    return [results[task.config.seed] for task in tasks]


def _play(task: SeedTask, log: Log, progress: bool = False) -> dict:
    config = task.config
    limit_threads(config.threads)
    task.out.mkdir(parents=True, exist_ok=True)
    if task.given is None:
        setup = prepare_data(config)
        state = start(config, setup, log, out=task.out, progress=progress)
        pretrained = state.global_vector
    else:
        setup, state, pretrained = task.given
    result = task.play(config, setup, state, pretrained, task.out, log, progress=progress,
                       lr_grid=task.lr_grid)
    write_json(task.out / "comparison.json", result)  # a killed run keeps its finished seeds
    return result


def _play_collecting(task: SeedTask) -> tuple[dict, list[str]]:
    lines: list[str] = []
    return _play(task, lines.append), lines


def _prefixed(log: Log, seed: int) -> Log:
    return lambda line: log(f"      [seed {seed}] {line.strip()}")


def combine(seeds: list[int], results: list[dict], goals: Goals) -> dict:
    """``comparison.json`` for several seeds: per arm, every seed's entry under ``seeds`` (with
    its ``seed``), and the mean, sd and 95% interval of the accuracy and gradient diversity per
    round and of the final accuracy; ``goals`` evaluated on the mean curves, each with how many
    seeds it holds on."""
    arms = {}
    for name in results[0]["arms"]:
        entries = [{"seed": s, **r["arms"][name]} for s, r in zip(seeds, results, strict=True)]
        arm: dict = {"seeds": entries}
        if "test_accuracy_per_round" in entries[0]:
            arm |= curve_fields("test_accuracy", [e["test_accuracy_per_round"] for e in entries])
            arm |= curve_fields("gradient_diversity",
                                [e["gradient_diversity_per_round"] for e in entries])
        arm |= value_fields("final_test_accuracy", [e["final_test_accuracy"] for e in entries])
        arms[name] = arm
    on_mean = goals(mean_arms(arms))
    per_seed = [r["goals"] for r in results]
    return {
        "seeds": seeds, "arms": arms,
        "grid": {str(s): r["grid"] for s, r in zip(seeds, results, strict=True)},
        "lr_grid": results[0]["lr_grid"], "rounds": results[0]["rounds"],
        "goals": [{**goal, "met_seeds": sum(g[i]["met"] for g in per_seed),
                   "per_seed": [{"seed": s, "measured": g[i]["measured"], "met": g[i]["met"]}
                                for s, g in zip(seeds, per_seed, strict=True)]}
                  for i, goal in enumerate(on_mean)],
    }


def mean_arms(arms: dict) -> dict:
    """The combined ``arms`` as single-seed arms made of their means (for the goals on the mean
    and the plot)."""
    view = {}
    for name, arm in arms.items():
        view[name] = {"final_test_accuracy": arm["final_test_accuracy_mean"]}
        if "test_accuracy_mean_per_round" in arm:
            view[name]["test_accuracy_per_round"] = arm["test_accuracy_mean_per_round"]
            view[name]["gradient_diversity_per_round"] = arm["gradient_diversity_mean_per_round"]
    return view
