"""``--compare --seeds K``: every seed's curves are those of the single-seed run with that seed,
the per-round means, sds and 95% intervals are those of the seeds' values, each goal is stated on
the mean and counted over the seeds, and ``--seeds`` without ``--compare`` fails early."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.pipeline.config import ConfigError, RunConfig
from gptfl_secure.sim import compare, compare_seeds
from gptfl_secure.sim.cli import main
from gptfl_secure.sim.seed_stats import summarize, summarize_curves

TINY = ["--clients", "12", "--cohort", "4", "--rounds", "2", "--local-epochs", "1",
        "--synthetic-per-label", "10", "--pretrain-epochs", "1", "--no-progress"]
CURVES = ("test_accuracy", "gradient_diversity")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A two-seed comparison (seeds 3 and 4, played in two worker processes) and the single-seed
    comparison of seed 4, on the same tiny configuration."""
    root = tmp_path_factory.mktemp("compare-seeds")
    cache = ["--cache-dir", str(root / "cache")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare, "LR_GRID", (0.05,))
        assert main([*TINY, *cache, "--compare", "--seeds", "2", "--seed", "3",
                     "--seed-workers", "2", "--out", str(root / "multi")]) == 0
        assert main([*TINY, *cache, "--compare", "--seed", "4",
                     "--out", str(root / "single")]) == 0
    read = lambda name: json.loads((root / name / "comparison.json").read_text())  # noqa: E731
    assert read("multi/seeds/seed4") == read("single")  # written as soon as that seed is done
    return read("multi"), read("single"), (root / "multi" / "comparison.md").read_text()


def test_every_seed_equals_the_single_seed_run_with_that_seed(runs):
    multi, single, _ = runs
    assert multi["seeds"] == [3, 4]
    assert set(multi["arms"]) == set(compare.ARMS)
    for name in compare.ARMS:
        entries = multi["arms"][name]["seeds"]
        assert [e["seed"] for e in entries] == [3, 4]
        assert {k: v for k, v in entries[1].items() if k != "seed"} == single["arms"][name]
    assert multi["grid"]["4"] == single["grid"]
    assert [g["per_seed"][1] for g in multi["goals"]] == [
        {"seed": 4, "measured": g["measured"], "met": g["met"]} for g in single["goals"]]


def test_single_seed_output_keeps_its_layout(runs):
    _, single, _ = runs
    assert set(single) == {"arms", "grid", "lr_grid", "rounds", "goals"}
    for name in compare.FEDERATED_ARMS:
        assert set(single["arms"][name]) == {"lr", "strategy", "test_accuracy_per_round",
                                             "gradient_diversity_per_round",
                                             "final_test_accuracy"}


def test_means_sds_and_intervals_are_those_of_the_seeds(runs):
    multi, _, _ = runs
    for name in compare.FEDERATED_ARMS:
        arm = multi["arms"][name]
        for prefix in CURVES:
            values = np.array([e[f"{prefix}_per_round"] for e in arm["seeds"]], dtype=float)
            assert arm[f"{prefix}_mean_per_round"] == pytest.approx(values.mean(axis=0))
            assert arm[f"{prefix}_sd_per_round"] == pytest.approx(values.std(axis=0, ddof=1))
            # two seeds: t(0.975, 1) = 12.706, half width = 12.706 * sd / sqrt(2)
            half = 12.7062047 * values.std(axis=0, ddof=1) / math.sqrt(2)
            lows, highs = zip(*arm[f"{prefix}_ci95_per_round"], strict=True)
            assert lows == pytest.approx(values.mean(axis=0) - half, abs=1e-6)
            assert highs == pytest.approx(values.mean(axis=0) + half, abs=1e-6)
    for name in compare.ARMS:
        finals = [e["final_test_accuracy"] for e in multi["arms"][name]["seeds"]]
        assert multi["arms"][name]["final_test_accuracy_mean"] == pytest.approx(np.mean(finals))
        assert multi["arms"][name]["final_test_accuracy_sd"] == pytest.approx(
            np.std(finals, ddof=1))


def test_goals_hold_on_the_mean_and_are_counted_over_seeds(runs):
    multi, _, markdown = runs
    on_mean = compare.goals(compare_seeds.mean_arms(multi["arms"]))
    assert [(g["goal"], g["measured"], g["met"]) for g in multi["goals"]] == [
        (g["goal"], g["measured"], g["met"]) for g in on_mean]
    for g in multi["goals"]:
        assert g["met_seeds"] == sum(p["met"] for p in g["per_seed"])
        assert f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'no'} | " \
               f"{g['met_seeds']} of 2 |" in markdown
    assert "Mean ± standard deviation over 2 seeds (3 to 4)" in markdown


def _arm(acc, gd):
    return {"lr": 0.1, "strategy": "fedavg", "test_accuracy_per_round": acc,
            "gradient_diversity_per_round": gd, "final_test_accuracy": acc[-1]}


def _seed_result(g_acc, r_acc, g_gd, r_gd, synthetic):
    arms = {"gptfl_fedavg": _arm(g_acc, g_gd), "fedavg_random": _arm(r_acc, r_gd),
            "synthetic_only": {"final_test_accuracy": synthetic}}
    return {"arms": arms, "grid": {}, "lr_grid": [0.1], "rounds": len(g_acc),
            "goals": compare.goals(arms)}


def test_a_goal_can_hold_on_the_mean_but_not_on_every_seed():
    # round-1 gradient diversity: lower for GPT-FL on seeds 0 and 1, higher on seed 2, lower
    # on the mean (0.5 against 0.6)
    results = [_seed_result([0.85, 0.9], [0.1, 0.5], [0.3, 1], [0.7, 1], 0.8),
               _seed_result([0.85, 0.9], [0.1, 0.5], [0.4, 1], [0.6, 1], 0.8),
               _seed_result([0.85, 0.9], [0.1, 0.5], [0.8, 1], [0.5, None], 0.95)]
    combined = compare_seeds.combine([0, 1, 2], results, compare.goals)
    by_goal = {g["goal"]: g for g in combined["goals"]}
    diversity = by_goal["round-1 gradient diversity: gptfl_fedavg < fedavg_random"]
    assert diversity["met"] and diversity["measured"] == "0.500 vs 0.600"
    assert diversity["met_seeds"] == 2
    assert [p["met"] for p in diversity["per_seed"]] == [True, True, False]
    synthetic = by_goal["synthetic_only below gptfl_fedavg"]
    assert synthetic["met"] and synthetic["met_seeds"] == 2  # 0.85 mean < 0.9
    # a missing round-2 diversity is left out of that round's statistics
    arm = combined["arms"]["fedavg_random"]
    assert arm["gradient_diversity_mean_per_round"] == pytest.approx([0.6, 1.0])
    assert arm["gradient_diversity_sd_per_round"][1] == 0.0


def test_summary_of_known_values():
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)
    assert s.ci95 == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)))
    assert summarize([0.5]) == summarize([0.5, None])
    assert summarize([0.5]).sd is None and summarize([0.5]).ci95 is None
    assert summarize([None, None]).mean is None
    with pytest.raises(ValueError, match="non-finite"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="different lengths"):
        summarize_curves([[0.1, 0.2], [0.3]])


@given(st.lists(st.floats(0, 1), min_size=2, max_size=12))
def test_the_interval_is_centred_on_the_mean_and_widens_with_the_spread(values):
    s = summarize(values)
    assert s.mean == pytest.approx(np.mean(values))
    assert s.sd == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    low, high = s.ci95
    assert low <= s.mean <= high
    assert (low + high) / 2 == pytest.approx(s.mean, abs=1e-12)
    wider = summarize([2 * v for v in values])
    assert wider.ci95[1] - wider.ci95[0] == pytest.approx(2 * (high - low), abs=1e-12)


def test_seeds_without_compare_is_a_config_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--seeds 3: several seeds are for the comparison"):
        RunConfig(seeds=3)
    with pytest.raises(ConfigError, match="--seeds 0: must be >= 1"):
        RunConfig(compare=True, seeds=0)
    with pytest.raises(ConfigError, match="pass 2\\*\\*32 - 1"):
        RunConfig(compare=True, seeds=2, seed=2**32 - 1)
    with pytest.raises(SystemExit):
        main(["--seeds", "2", "--out", str(tmp_path / "out")])
    assert "--seeds 2: several seeds are for the comparison; add --compare" in (
        capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_seed_workers_fit_the_cores_and_the_seeds(monkeypatch):
    monkeypatch.setattr(compare_seeds, "usable_cores", lambda: 2)
    assert compare_seeds.seed_workers(RunConfig(compare=True, seeds=5)) == 2
    assert compare_seeds.seed_workers(RunConfig(compare=True, seeds=5, threads=2)) == 1
    assert compare_seeds.seed_workers(RunConfig(compare=True, seeds=3, seed_workers=8)) == 3
    assert compare_seeds.seed_workers(RunConfig(compare=True, seeds=1)) == 1
