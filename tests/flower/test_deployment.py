"""End to end on Flower's deployment engine: a SuperLink and 4 SuperNodes on loopback, label
discovery and 2 rounds; one SuperNode is killed in round 2 after it shared its keys (in round
1's last exchange), before round 2's train + masked-input exchange, and the
round completes through dropout recovery with the sums the in-process sim computes for the same
seed and survivors."""

import json
import time

import pytest

pytest.importorskip("flwr")

from .parity import check_against_sim  # noqa: E402

pytestmark = pytest.mark.slow


def test_killed_supernode_is_recovered_and_sums_match_the_sim(tmp_path):
    from gptfl_secure.flower.deployment import LocalDeployment

    out = tmp_path / "run"
    cfg = {"clients": 4, "cohort": 4, "rounds": 2, "local-epochs": 1, "pretrain-epochs": 1,
           "synthetic-per-label": 10, "label-capacity": 20, "dropout": 0.0,
           "out-dir": str(out), "step-timeout": 40.0, "train-timeout": 120.0,
           "enroll-timeout": 60.0}
    victim = 3
    with LocalDeployment(tmp_path / "deploy", nodes=4) as deployment:
        run = deployment.start_run(cfg)
        deadline = time.monotonic() + 900
        killed = False
        while run.poll() is None and time.monotonic() < deadline:
            progress = out / "progress.jsonl"
            if not killed and progress.exists() and any(  # round 2's train + masked input
                    "round2/masked_input" in json.loads(line)["group"].split("+")
                    for line in progress.read_text().splitlines() if line.strip()):
                deployment.kill_node(victim)
                killed = True
            time.sleep(0.05)
        log = (tmp_path / "deploy" / "run.log").read_text(errors="replace")
        assert run.poll() == 0, log[-3000:]
    assert killed, log[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["clients_included"] for r in metrics["rounds"]] == [4, 3]
    assert [r["exchanges"] for r in metrics["rounds"]] == [3, 3]
    summary = json.loads((out / "transcript_summary.json").read_text())
    round2 = summary[-1]
    assert round2["steps"]["share_keys"]["messages"] == 4  # the victim shared its keys ...
    assert round2["steps"]["masked_input"]["messages"] == 3  # ... then died: masks rebuilt
    included = check_against_sim(out, cfg)
    assert included[2] == {0, 1, 2}
