"""``--record-transcript`` records every masked-sum session of a sim run, aborted rounds and
label-discovery retries included, and the auditor matches the records against the run's own
reports (a missing or an extra record fails)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest

from gptfl_secure.audit import audit_directory, format_report
from gptfl_secure.audit.cli import main
from gptfl_secure.iblt import IbltParams
from gptfl_secure.pipeline.aggregation import SecureAggregator
from gptfl_secure.pipeline.config import SimConfig
from gptfl_secure.pipeline.discovery import discover_labels
from gptfl_secure.pipeline.outputs import SessionRecorder
from gptfl_secure.protocols.recording import read_record, write_record
from gptfl_secure.sim.cli import main as sim_main

# seed 0, 30% dropout: rounds 1 and 2 abort (at share_keys and consistency_check), round 3 sums
RUN = ["--clients", "12", "--cohort", "5", "--rounds", "3", "--local-epochs", "1",
       "--init", "random", "--dropout", "0.3", "--seed", "0", "--record-transcript",
       "--no-progress"]
ALPHA = 1e-6  # fresh keys on every run: keep the uniformity test's false alarms negligible


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "run"
    assert sim_main([*RUN, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_every_session_is_recorded_and_the_audit_passes_with_the_aborted_listed(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    skipped = [r["round"] for r in metrics["rounds"] if r["skipped"]]
    assert skipped, "the fixed seed and dropout make some round abort"
    names = sorted(p.name for p in (run / "transcripts").glob("session-*.json"))
    assert names == ["session-label-discovery.json"] + [f"session-round-{r:04d}.json"
                                                        for r in range(1, 4)]
    summary = json.loads((run / "transcript_summary.json").read_text())
    listed = [s for entry in summary for s in entry["sessions"]]
    assert [s["record"] for s in listed] == ["label-discovery", "round-0001", "round-0002",
                                             "round-0003"]
    for r in skipped:
        rec = read_record(run / "transcripts" / f"session-round-{r:04d}.json")
        reason = metrics["rounds"][r - 1]["skip_reason"]
        assert rec.aborted == reason and listed[r]["aborted"] == reason
        assert listed[r]["session_id"] == rec.session_id.hex() and not rec.included

    assert main(["--alpha", str(ALPHA), str(run / "transcripts")]) == 0
    out = capsys.readouterr().out
    for r in skipped:
        assert re.search(rf"session round-{r:04d} \(.*\): ABORTED, recorded part consistent: "
                         r"secure aggregation aborted at \w+", out)
    assert f"[PASS] run_sessions     4 sessions in transcript_summary.json ({len(skipped)} " \
           "aborted), 4 records: one each" in out
    assert f"4 sessions ({len(skipped)} aborted), 4 passed, 0 failed" in out
    assert main(["--alpha", str(ALPHA), str(run)]) == 0  # the run folder itself works too


def _run_sessions(audit):
    return next(c for c in audit.checks if c.name == "run_sessions")


def test_a_missing_record_is_a_gap(copy):
    aborted = json.loads((copy / "metrics.json").read_text())["rounds"]
    r = next(row["round"] for row in aborted if row["skipped"])
    for suffix in ("json", "bin"):
        (copy / "transcripts" / f"session-round-{r:04d}.{suffix}").unlink()
    audit = audit_directory(copy / "transcripts", alpha=ALPHA)
    assert audit.exit_code == 1 and all(s.passed for s in audit.sessions)
    details = _run_sessions(audit).details
    assert "the run says it ran 4 recorded masked-sum sessions" in details[0]
    assert "the directory holds 3 records" in details[0]
    assert f"no record of round {r} an aborted session: session-round-{r:04d}.json is " \
           "missing" in details[1]
    assert "directory checks failed: run_sessions" in format_report(audit)


def test_a_record_duplicated_under_another_name_is_an_extra_and_a_reuse(copy):
    rec = read_record(copy / "transcripts" / "session-round-0003.json")
    write_record(copy / "transcripts", dataclasses.replace(rec, name="round-0004"))
    audit = audit_directory(copy / "transcripts", alpha=ALPHA)
    assert audit.exit_code == 1
    assert {c.name for c in audit.checks if not c.passed} == {"session_reuse", "signature_reuse",
                                                              "run_sessions"}
    assert any("record round-0004 (" in d and "is not one of the sessions "
               "transcript_summary.json lists" in d for d in _run_sessions(audit).details)


def test_a_record_of_another_session_under_a_listed_name_is_caught(copy, run):
    """round-0003's record replaced by label discovery's, renamed: the session id differs."""
    t = copy / "transcripts"
    rec = read_record(t / "session-label-discovery.json")
    write_record(t, dataclasses.replace(rec, name="round-0003"), overwrite=True)
    audit = audit_directory(t, alpha=ALPHA)
    assert audit.exit_code == 1
    assert any("the run's round 3 had" in d for d in _run_sessions(audit).details)


def test_without_the_summary_metrics_json_says_how_many_sessions_ran(copy):
    (copy / "transcript_summary.json").unlink()
    assert audit_directory(copy / "transcripts", alpha=ALPHA).exit_code == 0
    for suffix in ("json", "bin"):
        (copy / "transcripts" / f"session-round-0002.{suffix}").unlink()
    audit = audit_directory(copy / "transcripts", alpha=ALPHA)
    assert audit.exit_code == 1
    assert any("no record of round 2" in d for d in _run_sessions(audit).details)


def test_an_older_summary_without_session_lists_counts_skipped_rounds(copy):
    path = copy / "transcript_summary.json"
    path.write_text(json.dumps([{k: v for k, v in e.items() if k != "sessions"}
                                for e in json.loads(path.read_text())]))
    assert audit_directory(copy / "transcripts", alpha=ALPHA).exit_code == 0


def test_a_malformed_run_report_is_unreadable(copy):
    (copy / "metrics.json").write_text("{not json")
    audit = audit_directory(copy / "transcripts", alpha=ALPHA)
    assert audit.exit_code == 2 and "unreadable run report" in audit.unreadable[0]


def test_label_discovery_retries_are_each_recorded(tmp_path):
    """A table too small for 60 labels: the first decode is incomplete, the retry (a second
    masked-sum session) records as label-discovery-2."""
    config = SimConfig(record_transcript=True)
    recorder = SessionRecorder(config, tmp_path, "label-discovery")
    labels = {c: {f"label{i}" for i in range(60)} for c in range(4)}
    found = discover_labels(labels, IbltParams(capacity=1), recorder.wrap(SecureAggregator()))
    assert found.attempts == 2
    assert [s["record"] for s in recorder.sessions] == ["label-discovery", "label-discovery-2"]
    assert audit_directory(tmp_path, alpha=ALPHA).exit_code == 0


def test_an_aborted_label_discovery_attempt_is_recorded_as_aborted(tmp_path):
    """The first attempt loses 3 of 4 clients at share_keys (t=3) and aborts; label discovery
    retries (a fresh session). Both are recorded, the first as aborted, and both audit clean."""
    calls = []

    def flaky(vectors, modulus, dropouts=None):
        calls.append(len(calls))
        drops = {c: "share_keys" for c in sorted(vectors)[:3]} if len(calls) == 1 else None
        return SecureAggregator()(vectors, modulus, drops)

    recorder = SessionRecorder(SimConfig(record_transcript=True), tmp_path, "label-discovery")
    labels = {c: {"cat", "dog"} for c in range(4)}
    found = discover_labels(labels, IbltParams(capacity=4), recorder.wrap(flaky))
    assert found.complete and len(calls) == 2
    first, second = recorder.sessions
    assert first["record"] == "label-discovery" and "aborted at share_keys" in first["aborted"]
    assert second["record"] == "label-discovery-2" and second["aborted"] is None
    audit = audit_directory(tmp_path, alpha=ALPHA)
    assert audit.exit_code == 0, format_report(audit)
    assert [s.name for s in audit.aborted] == ["label-discovery"]
