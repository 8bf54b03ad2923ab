"""Ctrl-C (SIGINT) and SIGTERM end a run cleanly: the completed rounds' outputs, the --resume
command, exit status 128 + signal; and --resume then ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gptfl_secure.pipeline.state import CHECKPOINT, load_checkpoint
from gptfl_secure.sim import rounds as sim_rounds
from gptfl_secure.sim.cli import main

TINY = ["--clients", "12", "--cohort", "4", "--rounds", "4", "--local-epochs", "1",
        "--init", "random", "--no-progress"]


def _accuracies(metrics: dict) -> list:
    return [(r["round"], r["test_accuracy"], r["clients_included"], r["gradient_diversity"])
            for r in metrics["rounds"]]


def test_interrupt_during_round_3_keeps_rounds_1_2_and_resume_matches(tmp_path, capsys,
                                                                       monkeypatch):
    whole = tmp_path / "whole"
    assert main([*TINY, "--out", str(whole)]) == 0
    expected = json.loads((whole / "metrics.json").read_text())
    capsys.readouterr()

    real_train = sim_rounds.train_client
    calls = []

    def train_then_ctrl_c(train, model, vector, data, local, at):
        calls.append(at.round)
        if at.round == 3 and calls.count(3) == 2:  # Ctrl-C during round 3's second client
            os.kill(os.getpid(), signal.SIGINT)
        return real_train(train, model, vector, data, local, at)

    monkeypatch.setattr(sim_rounds, "train_client", train_then_ctrl_c)
    out = tmp_path / "cut"
    # one worker: the patched trainer runs in this process (the pool's own interrupt is tested
    # in test_workers.py, and the real-signal tests below run the default worker count)
    assert main([*TINY, "--workers", "1", "--out", str(out)]) == 130
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    assert "interrupted by Ctrl-C (SIGINT) after 2 rounds of 4" in printed.out
    assert f"resume with: python -m gptfl_secure.sim --resume {out}" in printed.out
    cut = json.loads((out / "metrics.json").read_text())
    assert [r["round"] for r in cut["rounds"]] == [1, 2]
    assert _accuracies(cut) == _accuracies(expected)[:2]
    for name in ("metrics.csv", "accuracy.png", "gradient_diversity.png",
                 "transcript_summary.json"):
        assert (out / name).is_file() and name in printed.out

    monkeypatch.setattr(sim_rounds, "train_client", real_train)
    assert main(["--resume", str(out), "--no-progress"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert _accuracies(resumed) == _accuracies(expected)
    assert resumed["final_test_accuracy"] == expected["final_test_accuracy"]
    assert resumed["initial_test_accuracy"] == expected["initial_test_accuracy"]


def test_interrupt_before_the_first_checkpoint_says_there_is_nothing_to_resume(
        tmp_path, capsys, monkeypatch):
    import gptfl_secure.sim.cli as cli

    def ctrl_c(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "start", ctrl_c)
    assert main([*TINY, "--out", str(tmp_path / "run")]) == 130
    printed = capsys.readouterr().out
    assert "nothing to resume" in printed and "--resume" not in printed
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("signum, code", [
    pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow),  # in-process above, too
    (signal.SIGTERM, 143)])
def test_a_real_signal_after_round_2_ends_the_process_cleanly(tmp_path, signum, code):
    out = tmp_path / "run"
    args = [*TINY, "--rounds", "200", "--local-epochs", "2", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "gptfl_secure.sim", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / CHECKPOINT).is_file() and len(load_checkpoint(out).rounds) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stdout + stderr
    assert f"resume with: python -m gptfl_secure.sim --resume {out}" in stdout
    done = load_checkpoint(out).rounds
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds"] == done and 2 <= len(done) < 200
