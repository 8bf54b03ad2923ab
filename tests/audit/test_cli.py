"""``python -m gptfl_secure.audit DIR``: the report, the p-values, and the exit status (0 all pass,
1 a check fails, 2 unreadable input), in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gptfl_secure.audit.cli import main
from gptfl_secure.protocols import messages as m

from .helpers import config, honest, index_of, replace

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gptfl_secure.audit", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """One honest complete-graph session, one honest SecAgg+ session (in a subfolder); beside
    the SecAgg+ one, a tampered copy of the first: a plain input, signed by its client."""
    good = honest(config(6, 4), seed=31, dropouts={5: "masked_input"})
    plus = honest(config(8, 3, k=4), seed=32, dropouts={1: "unmasking"})
    honest_dir = tmp_path_factory.mktemp("honest")
    good.record(honest_dir, "round-0001")
    plus.record(honest_dir / "plus", "round-0002")
    tr = good.transcript()
    plain = good.sign(2, "masked_input", m.vector_body(good.inputs[2], good.cfg.element_bytes))
    mixed_dir = tmp_path_factory.mktemp("mixed")
    plus.record(mixed_dir, "round-0001")
    good.record(mixed_dir, "round-0002",
                replace(tr, index_of(tr, "masked_input", 2), data=plain))
    return honest_dir, mixed_dir


def test_honest_records_pass_with_exit_0_and_p_values_printed(sessions):
    honest_dir, _ = sessions
    proc = run_cli(str(honest_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert len(re.findall(r"^session .*: PASS$", out, re.M)) == 2 and "[FAIL]" not in out
    assert re.search(r"^directory .*: PASS$", out, re.M)
    for check in ("session_reuse", "signature_reuse"):
        assert re.search(rf"\[PASS\] {check}\b", out)
    assert "session round-0002" in out and str(Path("plus") / "session-round-0002.json") in out
    for check in ("signatures", "thresholds", "consistency", "shares", "uniformity"):
        assert re.search(rf"\[PASS\] {check}\b", out)
    p_lines = re.findall(r"client (\d+): chi-square p=([0-9.e-]+) KS p=([0-9.e-]+)", out)
    assert len(p_lines) == 5 + 8  # each masked input's p-values (client 5 never sent one)
    assert all(0 < float(p) <= 1 for _, chi, ks in p_lines for p in (chi, ks))
    assert "Fisher p:" in out and "-> exit 0" in out


def test_a_failing_session_gives_exit_1_and_names_the_check(sessions):
    _, mixed_dir = sessions
    proc = run_cli(str(mixed_dir))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "session round-0001" in proc.stdout and "session round-0002" in proc.stdout
    assert re.search(r"session round-0002 \(.*\): FAIL", proc.stdout)
    assert re.search(r"\[FAIL\] uniformity", proc.stdout)
    assert "BELOW THRESHOLD: client 2 chi-square p=" in proc.stdout
    assert "1 passed, 1 failed, 0 unreadable -> exit 1" in proc.stdout


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_record_gives_exit_2_with_a_clear_message(sessions, tmp_path, damage):
    honest_dir, _ = sessions
    good = honest(config(4, 3, d=200), seed=33)
    path = good.record(tmp_path, "x")
    if damage == "truncated":
        bin_path = path.with_suffix(".bin")
        bin_path.write_bytes(bin_path.read_bytes()[:100])
    else:
        path.write_bytes(os.urandom(64))
    proc = run_cli(str(tmp_path))
    assert proc.returncode == 2
    expected = ("session-x.bin has 100 bytes, the record announces" if damage == "truncated"
                else "not a JSON session record")
    assert expected in proc.stderr and "session-x.json" in proc.stderr
    assert "UNREADABLE" in proc.stdout


def test_missing_or_empty_directory_gives_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no session records" in capsys.readouterr().err


def test_orphan_message_file_gives_exit_2(sessions, tmp_path, capsys):
    honest(config(4, 3, d=50), seed=34).record(tmp_path, "ok")
    (tmp_path / "session-lost.bin").write_bytes(b"GSAREC")
    assert main([str(tmp_path)]) == 2
    assert "session-lost.bin: message file without its session-lost.json" in \
        capsys.readouterr().err


def test_quiet_prints_failing_details_only(sessions, capsys):
    _, mixed_dir = sessions
    assert main(["--quiet", str(mixed_dir)]) == 1
    out = capsys.readouterr().out
    assert "BELOW THRESHOLD: client 2" in out
    assert out.count("chi-square p=") == 5 + 2  # the failing session only: 5 inputs, 2 flags


def test_alpha_must_be_a_probability(sessions, capsys):
    honest_dir, _ = sessions
    with pytest.raises(SystemExit) as exc:
        main(["--alpha", "1.5", str(honest_dir)])
    assert exc.value.code == 2


def test_audit_imports_neither_torch_nor_learning_nor_the_pipeline():
    code = ("import sys, gptfl_secure.audit, gptfl_secure.audit.cli; "
            "bad = [n for n in sys.modules if n.split('.')[0] == 'torch' or "
            "n.startswith(('gptfl_secure.learning', 'gptfl_secure.sim', 'gptfl_secure.synth', "
            "'gptfl_secure.pipeline'))];"
            " print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
