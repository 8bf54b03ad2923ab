"""``python -m gptfl_secure.sim`` end to end: outputs, flag and config errors, --resume."""

import csv
import json
import subprocess
import sys

import pytest

from gptfl_secure.sim.cli import main

SMALL = ["--clients", "20", "--cohort", "5", "--rounds", "3", "--local-epochs", "1",
         "--synthetic-per-label", "20", "--pretrain-epochs", "1", "--no-progress"]


def _run(tmp_path, *extra, name="run"):
    out = tmp_path / name
    assert main([*SMALL, *extra, "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_run_writes_every_output_with_the_design_schema(tmp_path, capsys):
    out, metrics = _run(tmp_path)
    assert set(metrics) == {"config", "label_discovery", "pretrain", "rounds",
                            "initial_test_accuracy", "final_test_accuracy", "privacy",
                            "execution"}
    found = metrics["label_discovery"]
    assert found["participants"] == 20 and found["complete"] is True
    assert sorted(found["counts"]) == [str(d) for d in range(10)]
    assert len(metrics["rounds"]) == 3
    for i, row in enumerate(metrics["rounds"], start=1):
        assert row["round"] == i
        assert {"test_accuracy", "clients_sampled", "clients_included", "gradient_diversity",
                "upload_bytes_per_client", "secagg_seconds"} <= set(row)
        assert row["clients_sampled"] == 5 and 0 <= row["clients_included"] <= 5
        assert 0.0 <= row["test_accuracy"] <= 1.0
    assert metrics["final_test_accuracy"] == metrics["rounds"][-1]["test_accuracy"]
    assert metrics["config"]["cohort"] == 5 and metrics["config"]["secagg"] == "full"
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["round"]) for r in rows] == [1, 2, 3]
    for png in ("accuracy.png", "gradient_diversity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "transcript_summary.json").read_text())
    assert [s["session"] for s in summary] == ["label_discovery", "round 1", "round 2", "round 3"]
    assert summary[0]["included"] == 20
    assert "participants: 20" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--clients", "0", "--clients 0: must be >= 1"),
        ("--alpha", "0", "--alpha 0.0: must be > 0"),
        ("--label-capacity", "-3", "--label-capacity -3: must be >= 1"),
        ("--seed", "-1", "--seed -1: must be >= 0"),
        ("--dataset", "cifar", "--dataset cifar: not 'digits' and not a folder"),
        ("--secagg", "maybe", "invalid choice"),
        ("--strategy", "fedsgd", "invalid choice"),
        ("--clients", "1000", "min_size=5 for 1000 clients"),
        ("--cohort", "60", "--cohort 60: must be in [1, --clients=50]"),
        ("--rounds", "0", "--rounds 0: must be >= 1"),
        ("--dropout", "1.0", "--dropout 1.0: must be < 1 (allowed range [0, 1))"),
        ("--lr", "-0.1", "--lr -0.1: must be > 0"),
        ("--lr", "nan", "--lr nan: must be finite"),
        ("--local-epochs", "0", "--local-epochs 0: must be >= 1"),
        ("--batch-size", "0", "--batch-size 0: must be >= 1"),
        ("--momentum", "1", "--momentum 1.0: must be < 1"),
        ("--server-lr", "0", "--server-lr 0.0: must be > 0"),
        ("--beta2", "1.5", "--beta2 1.5: must be < 1"),
        ("--clip", "0", "--clip 0.0: must be > 0"),
        ("--level-bits", "70", "--level-bits 70: must be <= 50"),
        ("--level-bits", "0", "--level-bits 0: must be >= 1"),
        ("--weight-cap", "0", "--weight-cap 0: must be >= 1"),
        ("--model", "resnet50", "invalid choice"),
        ("--model", "resnet18", "resnet18 needs image_size 32"),
        ("--test-fraction", "1", "--test-fraction 1.0: must be < 1"),
        ("--clients", "many", "invalid int value"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        main([flag, value, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_config_file_sets_options_and_flags_win(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('clients = 20\ncohort = 4\nrounds = 2\nlocal-epochs = 1\n'
                      'strategy = "fedyogi"\nsecagg = "off"\ninit = "random"\n')
    out = tmp_path / "out"
    assert main(["--config", str(config), "--rounds", "1", "--no-progress",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = metrics["config"]
    assert (cfg["clients"], cfg["cohort"], cfg["strategy"], cfg["secagg"]) == (
        20, 4, "fedyogi", "off")
    assert cfg["rounds"] == 1 and len(metrics["rounds"]) == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("clients = 0\n", "--clients 0: must be >= 1"),
        ("cohrot = 3\n", "unknown key 'cohrot'"),
        ("alpha = \"lots\"\n", "--alpha 'lots': must be a number"),
        ("rounds = 2.5\n", "--rounds 2.5: must be int"),
        ("clients = [\n", "not valid TOML"),
    ],
)
def test_bad_config_files_fail_before_any_work(tmp_path, capsys, text, message):
    config = tmp_path / "run.toml"
    config.write_text(text)
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--out", str(tmp_path / "out")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_config_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "nope.toml")])
    assert "nope.toml: no such file" in capsys.readouterr().err


def test_resume_refuses_other_flags_and_missing_checkpoints(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--resume", str(tmp_path), "--rounds", "5"])
    assert "drop --rounds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--resume", str(tmp_path)])
    assert "no checkpoint.npz" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gptfl_secure.sim", *SMALL, "--rounds", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )
    assert "participants: 20" in done.stdout
    assert "final test accuracy" in done.stdout


@pytest.mark.parametrize("mode", ["plus", "off"])
def test_every_secagg_mode_gives_the_same_histogram(tmp_path, mode):
    found = {}
    for m in ("full", mode):
        _, metrics = _run(tmp_path, "--secagg", m, "--rounds", "1", name=m)
        found[m] = metrics["label_discovery"]
    assert found["full"] == found[mode]
