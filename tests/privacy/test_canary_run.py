"""``--dp-audit-canaries`` end to end in ``python -m gptfl_secure.sim``: canaries go through the
rounds' masked sums as clients beyond ``--clients``, are not counted as included (nor by the
accountant), and ``metrics.json`` and ``python -m gptfl_secure.audit`` report the empirical ε
beside the accountant's; the initial model survives a checkpoint."""

import json

import numpy as np

from gptfl_secure.audit.cli import main as audit_main
from gptfl_secure.pipeline.canaries import with_empirical_privacy
from gptfl_secure.pipeline.config import RunConfig
from gptfl_secure.pipeline.state import RunState, load_checkpoint, save_checkpoint
from gptfl_secure.privacy.canary import CanaryDesign
from gptfl_secure.protocols.recording import find_records, read_record
from gptfl_secure.sim.cli import main

CLIENTS, COHORT, ROUNDS, CANARIES = 20, 5, 3, 60


def test_canaries_join_the_masked_sum_and_the_estimate_is_reported(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--clients", str(CLIENTS), "--cohort", str(COHORT), "--rounds", str(ROUNDS),
                 "--local-epochs", "1", "--init", "random", "--dropout", "0", "--no-progress",
                 "--dp-noise-multiplier", "1.0", "--dp-audit-canaries", str(CANARIES),
                 "--record-transcript", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    privacy = metrics["privacy"]
    # real clients only (under DP the cohort is Poisson-sampled: its size varies by round)
    assert all(r["clients_included"] == r["clients_sampled"] for r in metrics["rounds"])
    emp = privacy["empirical"]
    assert emp["canaries"] == CANARIES and emp["held_out"] == CANARIES
    # 60 canaries over 3 rounds measure little (a wide interval), so the estimate is not compared
    # with the accountant's here: tests/privacy/test_canary_audit.py does that at a scale where
    # the estimate is precise
    assert privacy["empirical_epsilon"] >= 0 and privacy["epsilon"] > 0
    lo, hi = emp["interval"]
    assert lo <= privacy["empirical_epsilon"] <= hi and emp["confidence"] == 0.95

    # every canary inclusion went through a masked sum, under an id beyond --clients
    design = CanaryDesign(CANARIES, 1, 0, COHORT / CLIENTS)
    expected = {r: {CLIENTS + int(j) for j in design.participants(r)} for r in range(1, 4)}
    for r in range(1, ROUNDS + 1):
        record = read_record(out / "transcripts" / f"session-round-{r:04d}.json")
        assert {c for c in record.included if c >= CLIENTS} == expected[r]
        real = metrics["rounds"][r - 1]["clients_sampled"]
        assert len([c for c in record.included if c < CLIENTS]) == real
    assert emp["canary_inclusions"] == sum(len(v) for v in expected.values())

    capsys.readouterr()
    assert audit_main([str(out / "transcripts"), "-q"]) == 0
    report = capsys.readouterr().out
    assert f"accountant epsilon = {privacy['epsilon']:.3g}" in report
    assert f"empirical epsilon = {privacy['empirical_epsilon']:.3g}" in report
    assert len(find_records(out / "transcripts")) == ROUNDS + 1


def test_the_initial_model_is_checkpointed(tmp_path):
    config = RunConfig(dp_noise_multiplier=1.0, dp_audit_canaries=5)
    state = RunState(config, {}, None, np.ones(7, dtype=np.float32), {"m": None, "v": None},
                     initial_vector=np.arange(7.0))
    save_checkpoint(tmp_path, state)
    assert np.array_equal(load_checkpoint(tmp_path).initial_vector, np.arange(7.0))
    state.initial_vector = None
    save_checkpoint(tmp_path, state)
    assert load_checkpoint(tmp_path).initial_vector is None


def test_a_run_that_inserted_no_canaries_reports_no_estimate():
    config = RunConfig(dp_noise_multiplier=1.0, dp_audit_canaries=5)
    state = RunState(config, {}, None, np.ones(64, dtype=np.float32), {"m": None, "v": None})
    privacy = with_empirical_privacy({"epsilon": 3.0, "delta": 1e-5}, state)
    assert privacy["epsilon"] == 3.0 and privacy["empirical_epsilon"] is None
    assert "no canaries were inserted" in privacy["empirical"]["error"]
    plain = RunState(RunConfig(dp_noise_multiplier=1.0), {}, None, np.ones(4), {})
    assert with_empirical_privacy({"epsilon": 3.0}, plain) == {"epsilon": 3.0}


def test_the_round_hook_sums_canaries_but_counts_real_clients_only():
    import pytest

    from gptfl_secure.pipeline.aggregation import plain_sum
    from gptfl_secure.pipeline.canaries import CanaryInsertion, join_canaries
    from gptfl_secure.pipeline.rounds import RoundPlan
    from gptfl_secure.privacy.distributed import DistributedDPCodec
    from gptfl_secure.protocols import SecAggAbort

    codec = DistributedDPCodec(64, 1.0, 1.0, 2, max_clients=2 + 8)
    insertion = CanaryInsertion(CanaryDesign(8, 64, 0, 0.5), codec, first_id=10)
    plan = RoundPlan(round=1, seed=0, sampled=[3, 4])
    canaries = insertion.contributions(plan)
    assert canaries and all(10 <= c < 18 for c in canaries)
    real = {3: np.zeros(codec.vector_length, np.uint64), 4: np.zeros(codec.vector_length,
                                                                     np.uint64)}
    result = join_canaries(insertion, plan, plain_sum)(real, codec.modulus)
    assert result.included == frozenset({3, 4})
    alone = plain_sum(canaries, codec.modulus)
    assert np.array_equal(result.total, alone.total)
    assert join_canaries(None, plan, plain_sum) is plain_sum
    with pytest.raises(ValueError, match="used by canaries"):
        join_canaries(insertion, plan, plain_sum)({min(canaries): real[3]}, codec.modulus)
    with pytest.raises(SecAggAbort, match="only canaries"):
        join_canaries(insertion, plan, plain_sum)(real, codec.modulus,
                                                  {3: "masked_input", 4: "masked_input"})


def test_the_audit_verdict_reads_the_interval():
    from gptfl_secure.audit.privacy import format_privacy

    def lines(emp, interval):
        return format_privacy({"epsilon": 5.0, "delta": 1e-5, "empirical_epsilon": emp,
                               "empirical": {"interval": interval, "confidence": 0.95,
                                             "canaries": 100}})

    assert "below the accountant's" in lines(3.0, [2.0, 6.0])[1]
    assert "inconclusive" in lines(6.0, [4.0, 8.0])[1]
    assert "ABOVE the accountant's, whole interval" in lines(9.0, [7.0, 11.0])[1]
    assert "not measured (why)" in format_privacy(
        {"epsilon": 5.0, "delta": 1e-5, "empirical_epsilon": None,
         "empirical": {"error": "why"}})[1]
    assert format_privacy({"epsilon": 5.0, "delta": 1e-5}) == [
        "privacy (metrics.json): accountant epsilon = 5 at delta = 1e-05"]
    assert format_privacy(None) == []
