"""Aborted sessions are recorded and audited (reported as aborted when the recorded part is
consistent), and a directory whose records reuse a session id or a signature fails."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from gptfl_secure.audit import audit_directory, audit_record, format_report
from gptfl_secure.audit.cli import main
from gptfl_secure.protocols import SecAggAbort, TranscriptEntry, run_masked_sum
from gptfl_secure.protocols.recording import read_record, record_result, write_record

from .helpers import config, honest, index_of, replace, roundtrip, start

SIG = 64


# ------------------------------------------------------------------- aborted sessions
def test_an_aborted_run_masked_sum_is_recorded_and_audited_as_aborted(tmp_path, capsys):
    """Two of five clients drop before their masked input: U3 = 3 < t = 4, the server aborts at
    masked_input. ``abort.partial`` is recorded with the reason; the audit passes it as an
    aborted session, and says so."""
    cfg = config(5, 4, d=300)
    rng = np.random.default_rng(7)
    inputs = {c: rng.integers(0, 50, 300, dtype=np.uint64) for c in range(5)}
    with pytest.raises(SecAggAbort) as exc:
        run_masked_sum(cfg, inputs, {0: "masked_input", 1: "masked_input"})
    partial = exc.value.partial
    assert partial is not None and partial.abort_reason == str(exc.value)
    path = record_result(tmp_path, "round-0001", partial)
    meta = json.loads(path.read_text())
    assert meta["version"] == 2 and meta["aborted"] == str(exc.value)
    assert meta["included"] == []
    rec = read_record(path)
    assert rec.aborted == str(exc.value) and rec.transcript == partial.transcript
    assert {e.step for e in rec.transcript} == {"advertise_keys", "share_keys", "masked_input"}

    a = audit_record(rec, alpha=1e-6)  # fresh keys each run: keep false alarms at 1e-6
    assert a.passed, {c.name: c.details for c in a.checks if not c.passed}
    assert a.aborted == str(exc.value)
    assert "aborted at masked_input (3 < t) as the messages require" in \
        a.check("thresholds").summary
    assert set(a.check("uniformity").values["per_client"]) == {2, 3, 4}  # still tested

    assert main(["--alpha", "1e-6", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"session round-0001 \(.*\): ABORTED, recorded part consistent: secure "
                     r"aggregation aborted at masked_input: 3 survivors < threshold 4", out)
    assert "1 sessions (1 aborted), 1 passed, 0 failed, 0 unreadable -> exit 0" in out


@pytest.fixture(scope="module")
def aborted():
    """n=6, t=4: clients 0, 1, 2 drop before CONSISTENCY; the server aborts there (3 < 4)."""
    driver = start(config(6, 4, d=500), seed=51)
    with pytest.raises(SecAggAbort) as exc:
        driver.run({0: "consistency_check", 1: "consistency_check", 2: "consistency_check"})
    return driver, str(exc.value)


def audit_aborted(driver, reason, tmp_path, transcript=None, included=frozenset()):
    path = driver.record(tmp_path, "s", transcript, included, aborted=reason)
    return audit_record(read_record(path))


def test_an_aborted_session_passes_every_check_for_the_part_that_exists(aborted, tmp_path):
    driver, reason = aborted
    assert "aborted at consistency_check" in reason
    a = audit_aborted(driver, reason, tmp_path)
    assert a.passed and a.verdict.startswith("ABORTED")
    assert a.check("survivors").summary == "6 >= 6 >= 6 >= 3 >= 0; included 0"


def test_a_message_recorded_after_the_abort_is_caught(aborted, tmp_path):
    """An UNMASK message can only exist if the session went on past its abort."""
    driver, reason = aborted
    tr = driver.transcript()
    late = TranscriptEntry("unmasking", 3, tr[index_of(tr, "consistency_check", 3)].data)
    a = audit_aborted(driver, reason, tmp_path, [*tr, late])
    assert "thresholds" in a.failed and a.verdict.startswith("FAIL (aborted session:")
    assert any("after the abort at consistency_check" in d for d in a.check("thresholds").details)


def test_an_abort_claimed_at_another_round_is_caught(aborted, tmp_path):
    driver, reason = aborted
    a = audit_aborted(driver, reason.replace("consistency_check", "masked_input"), tmp_path)
    assert a.failed == {"thresholds"}
    assert "the record says the session aborted at masked_input, but consistency_check is the " \
           "first round" in a.check("thresholds").details[0]


def test_an_aborted_session_that_includes_clients_is_caught(aborted, tmp_path):
    driver, reason = aborted
    a = audit_aborted(driver, reason, tmp_path, included=frozenset({3, 4, 5}))
    assert a.failed == {"survivors"}


def test_an_abort_without_a_reason_in_the_messages_is_caught(tmp_path):
    """A complete session recorded as aborted: every round has t valid senders and nothing
    failed to rebuild, so an honest server had no reason to abort."""
    driver = honest(config(5, 3, d=200), seed=52)
    a = audit_aborted(driver, "secure aggregation aborted at unmasking: 2 survivors < "
                      "threshold 3", tmp_path)
    assert "thresholds" in a.failed


# ------------------------------------------------------------------- reuse across records
@pytest.fixture(scope="module")
def pair():
    """Two honest sessions of the same enrolled clients."""
    first = honest(config(6, 4, d=400), seed=53)
    second = honest(first.cfg, seed=54, identities=first.identities)
    return first, second


def test_a_record_duplicated_under_another_name_fails_with_the_reuse_named(pair, tmp_path,
                                                                           capsys):
    first, second = pair
    first.record(tmp_path, "round-0001")
    second.record(tmp_path, "round-0002")
    copy = dataclasses.replace(read_record(tmp_path / "session-round-0001.json"),
                               name="round-0003")
    write_record(tmp_path, copy)
    audit = audit_directory(tmp_path)
    assert all(s.passed for s in audit.sessions)  # each record alone is consistent
    assert audit.exit_code == 1
    failed = {c.name for c in audit.checks if not c.passed}
    assert failed == {"session_reuse", "signature_reuse"}
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"session id {first.session_id.hex()[:16]}\.\.\. is used by 2 records: "
                     r"round-0001 \(.*\), round-0003 \(.*\)", out)
    n = len(first.transcript())
    assert re.search(rf"records round-0001 \(.*\) and round-0003 \(.*\) share {n} signatures and "
                     rf"{n} signed messages", out)
    assert "round-0002" not in "".join(line for line in out.splitlines() if "share" in line)
    assert "directory checks failed: session_reuse, signature_reuse -> exit 1" in out


def test_a_signature_copied_into_another_sessions_record_fails(pair, tmp_path):
    """Client 3's UNMASK signature from the first session pasted over its UNMASK signature in
    the second: the second record fails its signature check, and the directory names the
    copy."""
    first, second = pair
    first.record(tmp_path, "round-0001")
    tr = second.transcript()
    i = index_of(tr, "unmasking", 3)
    stolen = first.transcript()[index_of(first.transcript(), "unmasking", 3)].data[-SIG:]
    second.record(tmp_path, "round-0002", replace(tr, i, data=tr[i].data[:-SIG] + stolen))
    audit = audit_directory(tmp_path)
    assert audit.exit_code == 1
    by_name = {s.name: s for s in audit.sessions}
    assert by_name["round-0001"].passed and by_name["round-0002"].failed == {"signatures"}
    reuse = next(c for c in audit.checks if c.name == "signature_reuse")
    assert not reuse.passed
    assert re.search(r"records round-0001 \(.*\) and round-0002 \(.*\) share 1 signatures and 0 "
                     rf"signed messages, e.g. client 3's unmasking message #\d+ in round-0001 "
                     rf"and 3's unmasking message #{i} in round-0002", reuse.details[0])
    assert next(c for c in audit.checks if c.name == "session_reuse").passed


def test_a_whole_message_copied_into_another_session_is_named(pair, tmp_path):
    first, second = pair
    first.record(tmp_path, "a")
    tr = second.transcript()
    copied = first.transcript()[index_of(first.transcript(), "masked_input", 2)]
    second.record(tmp_path, "b", [*tr, copied])
    audit = audit_directory(tmp_path, alpha=1e-6)
    reuse = next(c for c in audit.checks if c.name == "signature_reuse")
    assert "share 1 signatures and 1 signed messages" in reuse.details[0]
    assert audit.exit_code == 1


def test_distinct_honest_sessions_pass_the_directory_checks(pair, tmp_path):
    first, second = pair
    first.record(tmp_path, "a")
    second.record(tmp_path, "b")
    audit = audit_directory(tmp_path)
    assert audit.exit_code == 0, format_report(audit)
    assert [c.name for c in audit.checks] == ["session_reuse", "signature_reuse"]
    assert "records not matched against a run" in format_report(audit)


def test_roundtrip_of_a_complete_record_keeps_aborted_none(pair, tmp_path):
    assert roundtrip(pair[0], tmp_path).aborted is None
