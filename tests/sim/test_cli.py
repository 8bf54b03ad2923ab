"""``python -m gptfl_secure.sim`` end to end on the embedded default, and its flag errors."""

import json
import subprocess
import sys

import pytest

from gptfl_secure.sim.cli import main


def test_default_run_discovers_all_digit_labels(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    found = metrics["label_discovery"]
    assert found["participants"] == 50 and found["complete"] is True
    assert sorted(found["counts"]) == [str(d) for d in range(10)]
    assert sum(found["counts"].values()) >= 50  # every client holds at least one label
    assert "participants: 50" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--clients", "0", "--clients 0: must be >= 1"),
        ("--alpha", "0", "--alpha 0.0: must be > 0"),
        ("--label-capacity", "-3", "--label-capacity -3: must be >= 1"),
        ("--seed", "-1", "--seed -1"),
        ("--dataset", "cifar", "invalid choice"),
        ("--secagg", "maybe", "invalid choice"),
        ("--clients", "1000", "min_size=5 for 1000 clients"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        main([flag, value, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_module_entry_point_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gptfl_secure.sim", "--clients", "10", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )
    assert "participants: 10" in done.stdout


@pytest.mark.parametrize("mode", ["plus", "off"])
def test_every_secagg_mode_gives_the_same_histogram(tmp_path, mode):
    runs = {}
    for m in ("full", mode):
        assert main(["--secagg", m, "--clients", "30", "--out", str(tmp_path / m)]) == 0
        runs[m] = json.loads((tmp_path / m / "metrics.json").read_text())["label_discovery"]
    assert runs["full"] == runs[mode]
