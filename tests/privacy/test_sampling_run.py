"""A DP run says which sampling ran and which bound its ε comes from; its ε is the composition
of one without-replacement round per aggregated round; a Poisson run resumes identically."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from gptfl_secure.pipeline.codecs import make_dp_codec
from gptfl_secure.pipeline.config import SimConfig
from gptfl_secure.pipeline.dp import cohorts_known_privacy, update_privacy
from gptfl_secure.pipeline.sampling import cohort_sampling
from gptfl_secure.pipeline.setup import prepare_data
from gptfl_secure.pipeline.state import load_checkpoint, save_checkpoint
from gptfl_secure.privacy.accounting import PrivacyAccountant, RdpLedger
from gptfl_secure.sim.cli import main
from gptfl_secure.sim.run import run_rounds, start

DP = dict(clients=20, cohort=5, rounds=4, local_epochs=1, init="random",
          dp_noise_multiplier=1.0)
DIM = 5000


def _row(r, included, skipped=False):
    return {"round": r, "clients_included": 0 if skipped else included, "skipped": skipped}


def _quiet(_message):
    pass


def _play(config, out, **kwargs):
    setup = prepare_data(config)
    return run_rounds(start(config, setup, _quiet), setup, out, _quiet, progress=False,
                      **kwargs)


@pytest.mark.parametrize("mode, name", [("auto", "poisson"),
                                        ("fixed", "fixed_without_replacement")])
def test_epsilon_composes_one_without_replacement_round_per_aggregated_round(mode, name):
    config = SimConfig(**DP, client_sampling=mode)
    rows = [_row(1, 5), _row(2, 3), _row(3, 0, skipped=True), _row(4, 5)]
    report = update_privacy(config, DIM, rows)
    codec = make_dp_codec(config, DIM)
    ledger = RdpLedger()
    for m in (5, 3, 5):  # built here from the accountant's own parameters, not the codec's
        ledger.add(PrivacyAccountant(
            "skellam", noise_multiplier=(m / 5) ** 0.5, sampling_rate=m / 20,
            scaled_clip=codec.scaled_clip, dim=codec.vector_length, cohort=m,
            l2_sensitivity=codec.l2_bound, sampling="without_replacement"))
    assert report["epsilon"] == pytest.approx(ledger.epsilon(1e-5), rel=1e-12)
    assert report["sampling"] == name and report["rounds"] == 3
    assert report["neighbouring"].startswith("replace_one")
    assert "Wang, Balle, Kasiviswanathan" in report["bound"]["name"]
    assert "1808.00087" in report["bound"]["reference"]


def test_the_epsilon_against_the_server_has_no_amplification():
    everyone = SimConfig(**{**DP, "cohort": 20}, client_sampling="fixed")  # q = 1
    rows = [_row(r, 20) for r in (1, 2, 3)]
    known = cohorts_known_privacy(everyone, DIM, rows)
    assert known["epsilon"] == pytest.approx(update_privacy(everyone, DIM, rows)["epsilon"])
    assert known["most_rounds_one_client_was_sampled_in"] == 3
    # Poisson: the worst client is charged, without amplification, for every round the public
    # plan sampled it in (equal m here, so one accountant at q = 1 for that many rounds)
    config = SimConfig(**{**DP, "rounds": 12})
    rows = [_row(r, 5) for r in range(1, 13)]
    joined = np.zeros(20, dtype=int)
    for r in range(1, 13):
        joined[cohort_sampling(config).round_cohort(config.seed, r)[0]] += 1
    codec = make_dp_codec(config, DIM)
    unamplified = codec.accountant(1.0, num_included=5, sampling="without_replacement")
    known = cohorts_known_privacy(config, DIM, rows)
    assert known["most_rounds_one_client_was_sampled_in"] == joined.max() < 12
    assert known["epsilon"] == pytest.approx(unamplified.epsilon(int(joined.max()), 1e-5))
    off = cohorts_known_privacy(SimConfig(**DP, secagg="off"), DIM, rows)
    assert off["epsilon"] is None and "--secagg off" in off["reason"]


def test_a_poisson_dp_run_writes_sampling_and_bound_and_skips_small_cohorts(tmp_path):
    out = tmp_path / "run"
    args = ["--clients", "20", "--cohort", "2", "--rounds", "6", "--local-epochs", "1",
            "--init", "random", "--dropout", "0", "--dp-noise-multiplier", "1.0",
            "--secagg", "off", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    privacy, rounds = m["privacy"], m["rounds"]
    assert privacy["sampling"] == "poisson" and "Wang" in privacy["bound"]["name"]
    assert privacy["rounds"] == sum(not r["skipped"] for r in rounds)
    sizes = [r["clients_sampled"] for r in rounds]
    assert len(set(sizes)) > 1  # a Poisson cohort varies (q = 0.1 over 20 clients)
    small = [r for r in rounds if r["clients_sampled"] < 2]
    assert small and all(r["skipped"] and "minimum group" in r["skip_reason"] for r in small)
    assert all(r["clients_included"] == r["clients_sampled"] for r in rounds if not r["skipped"])
    assert privacy["cohorts_known"]["epsilon"] is None  # --secagg off: see the reason


@pytest.mark.parametrize("dp", [False, True])
def test_resume_under_poisson_gives_identical_metrics(tmp_path, dp):
    """A run checkpointed after round 2 (what a kill then leaves: rounds draw from (seed, r)
    alone) and resumed to round 4 matches the uninterrupted run. Without DP noise it is
    identical; with it (the noise comes from each client's OS-seeded generator, by design never
    replayable) the cohorts, counts and ε are."""
    config = SimConfig(**{**DP, "dp_noise_multiplier": 1.0 if dp else None}, secagg="off",
                       dropout=0.0, client_sampling="poisson")
    whole = _play(config, tmp_path / "whole")
    assert len({r["clients_sampled"] for r in whole.rounds}) > 1
    cut = tmp_path / "cut"
    _play(replace(config, rounds=2), cut)
    state = load_checkpoint(cut)
    assert state.next_round == 3
    state.config = config
    save_checkpoint(cut, state)
    assert main(["--resume", str(cut), "--no-progress"]) == 0
    resumed = json.loads((cut / "metrics.json").read_text())
    keep = ("round", "clients_sampled", "clients_included", "skipped", "skip_reason",
            "upload_bytes_per_client") + (() if dp else ("test_accuracy", "gradient_diversity"))

    def strip(rows):
        return [{k: r[k] for k in keep} for r in rows]

    assert strip(resumed["rounds"]) == strip(whole.rounds)
    if dp:
        assert resumed["privacy"]["epsilon"] == update_privacy(
            config, len(whole.global_vector), whole.rounds)["epsilon"]
    else:
        assert resumed["final_test_accuracy"] == whole.rounds[-1]["test_accuracy"]
