"""Federated rounds: FedAvg through the masked sum equals plaintext FedAvg within the quantization
bound, a round below threshold is skipped, secure and plain sums give the same run, and a killed
run resumed from its checkpoint ends with the same metrics."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptfl_secure.learning.local import train_locally
from gptfl_secure.pipeline.codecs import make_codec
from gptfl_secure.pipeline.config import SimConfig
from gptfl_secure.pipeline.rounds import sample_dropouts
from gptfl_secure.pipeline.seeds import DROPOUT, SAMPLING, TRAINING, derive_seed
from gptfl_secure.pipeline.setup import new_model, new_optimizer, prepare_data
from gptfl_secure.protocols import STEPS
from gptfl_secure.sim.cli import main
from gptfl_secure.sim.run import run_rounds, start

SMALL = dict(clients=20, cohort=5, rounds=4, local_epochs=1, init="random")
TIMING = ("secagg_seconds",)


def _quiet(_message: str) -> None:
    pass


def _play(config: SimConfig, out, **kwargs):
    setup = prepare_data(config)
    state = start(config, setup, _quiet)
    return run_rounds(state, setup, out, _quiet, progress=False, **kwargs), setup


def _without_timing(rounds):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rounds]


def test_fedavg_through_the_masked_sum_equals_plaintext_fedavg(tmp_path):
    """Round 1 of a secure run against FedAvg computed in float from the same local updates."""
    config = SimConfig(**{**SMALL, "rounds": 1}, dropout=0.0)
    state, setup = _play(config, tmp_path)
    initial = start(config, setup, _quiet).global_vector
    assert state.rounds[0]["clients_included"] == 5

    cohort = np.sort(np.random.default_rng([config.seed, 1, SAMPLING]).choice(
        config.clients, size=config.cohort, replace=False))
    scratch = new_model(config, setup.train)
    codec = make_codec(config, len(initial))
    weighted, weights = np.zeros(len(initial)), 0
    for cid in map(int, cohort):
        from gptfl_secure.learning.local import LocalTrainingConfig

        local = LocalTrainingConfig(config.local_epochs, config.batch_size, config.lr,
                                    config.momentum, config.weight_decay, config.prox_mu)
        delta = train_locally(scratch, initial, setup.parts[cid], local,
                              seed=derive_seed(config.seed, 1, TRAINING, cid))
        w = min(len(setup.parts[cid]), config.weight_cap)
        weighted += w * np.clip(delta, -config.clip, config.clip)
        weights += w
    expected = initial + new_optimizer(config).server_lr * weighted / weights
    bound = codec.error_bound(5) * config.weight_cap / weights  # on the weighted mean
    err = np.abs(state.global_vector.astype(np.float64) - expected)
    # float32 storage of the new model adds at most one ulp of each coordinate
    assert np.all(err <= bound + np.spacing(np.abs(expected).astype(np.float32)) * 2)
    assert bound < 1e-5


def test_a_round_below_threshold_is_skipped_and_logged(tmp_path):
    config = SimConfig(**SMALL, dropout=0.6)
    state, _ = _play(config, tmp_path)
    skipped = [r for r in state.rounds if r["skipped"]]
    assert skipped, "with 60% dropout some 5-client round must fall below t=4"
    previous = {r["round"]: r for r in state.rounds}
    for r in skipped:
        assert "aborted" in r["skip_reason"] and r["clients_included"] == 0
        if r["round"] > 1:  # the model did not move: same accuracy as the round before
            assert r["test_accuracy"] == previous[r["round"] - 1]["test_accuracy"]


def test_secure_and_plain_sums_give_the_same_run(tmp_path):
    runs = {}
    for mode in ("full", "off"):
        config = SimConfig(**SMALL, secagg=mode, dropout=0.15, seed=1)  # one dropout, round 2
        state, _ = _play(config, tmp_path / mode)
        runs[mode] = state
    assert not any(r["skipped"] for r in runs["full"].rounds)
    assert _strip(runs["full"].rounds) == _strip(runs["off"].rounds)
    np.testing.assert_array_equal(runs["full"].global_vector, runs["off"].global_vector)


def _strip(rounds):
    return [{k: v for k, v in r.items() if k not in TIMING + ("upload_bytes_per_client",)}
            for r in rounds]


class _Killed(Exception):
    pass


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_resume_after_a_kill_gives_identical_metrics(tmp_path, strategy):
    config = SimConfig(**SMALL, strategy=strategy, secagg="off")
    whole, _ = _play(config, tmp_path / "whole")

    def kill_after_round_2(record):
        if record.round == 2:
            raise _Killed

    with pytest.raises(_Killed):
        _play(config, tmp_path / "killed", on_round=kill_after_round_2)
    assert main(["--resume", str(tmp_path / "killed"), "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert _without_timing(resumed["rounds"]) == _without_timing(whole.rounds)
    assert resumed["final_test_accuracy"] == whole.rounds[-1]["test_accuracy"]


def test_resume_of_a_secure_run_killed_before_its_first_round(tmp_path):
    out = tmp_path / "run"
    args = ["--clients", "20", "--cohort", "5", "--rounds", "2", "--local-epochs", "1",
            "--synthetic-per-label", "20", "--pretrain-epochs", "1", "--no-progress",
            "--out", str(out)]
    assert main(args) == 0
    whole = json.loads((out / "metrics.json").read_text())
    # rewind the checkpoint to "label discovery done, no rounds": what a kill in round 1 leaves
    from gptfl_secure.pipeline.state import load_checkpoint, save_checkpoint

    state = load_checkpoint(out)
    setup = prepare_data(state.config)
    fresh = start(state.config, setup, _quiet)
    fresh.label_discovery = state.label_discovery
    save_checkpoint(out, fresh)
    assert main(["--resume", str(out), "--no-progress"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert _without_timing(resumed["rounds"]) == _without_timing(whole["rounds"])
    assert resumed["label_discovery"] == whole["label_discovery"]


@settings(deadline=None)
@given(n=st.integers(1, 40), rate=st.floats(0, 0.99), seed=st.integers(0, 2**32 - 1))
def test_dropouts_are_a_subset_of_the_cohort_at_protocol_steps(n, rate, seed):
    cohort = list(range(100, 100 + n))
    drops = sample_dropouts(cohort, rate, np.random.default_rng([seed, 1, DROPOUT]))
    assert set(drops) <= set(cohort)
    assert set(drops.values()) <= set(STEPS)
    assert sample_dropouts(cohort, 0.0, np.random.default_rng(seed)) == {}


def test_a_client_whose_training_diverges_drops_instead_of_crashing(tmp_path, monkeypatch):
    import gptfl_secure.sim.run as run_module

    real = run_module.plain_local_training

    def diverging(model, global_vector, data, config, seed, client_id):
        delta = real(model, global_vector, data, config, seed, client_id)
        return np.full_like(delta, np.nan) if client_id % 2 else delta

    monkeypatch.setattr(run_module, "plain_local_training", diverging)
    config = SimConfig(**{**SMALL, "rounds": 2}, dropout=0.0, secagg="off", workers=1)
    state, setup = _play(config, tmp_path)
    for row in state.rounds:
        sampled = np.sort(np.random.default_rng([config.seed, row["round"], SAMPLING]).choice(
            config.clients, size=config.cohort, replace=False))
        even = int(np.sum(sampled % 2 == 0))
        assert row["clients_included"] == even or (row["skipped"] and even == 0)
    assert np.all(np.isfinite(state.global_vector))
