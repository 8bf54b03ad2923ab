"""The session record format: what is written is read back exactly; anything else is refused with
a RecordError (a ValueError) that names the defect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gptfl_secure.audit import audit_record
from gptfl_secure.protocols import TranscriptEntry, run_masked_sum
from gptfl_secure.protocols.recording import (
    BIN_MAGIC,
    RecordError,
    SessionRecord,
    decode_messages,
    encode_messages,
    find_orphans,
    find_records,
    read_record,
    record_result,
    record_session,
)

from .helpers import config, honest


@pytest.fixture(scope="module")
def session():
    return honest(config(5, 3, d=64), seed=11, dropouts={4: "consistency_check"})


def test_round_trip_is_exact(tmp_path, session):
    path = session.record(tmp_path, "round-0001")
    assert path == tmp_path / "session-round-0001.json"
    assert (tmp_path / "session-round-0001.bin").read_bytes().startswith(BIN_MAGIC)
    rec = read_record(path)
    assert rec.name == "round-0001"
    assert rec.config == session.cfg
    assert rec.session_id == session.session_id
    assert dict(rec.identity_keys) == session.public
    assert rec.transcript == tuple(session.transcript())
    assert rec.included == session.server.u3 == frozenset(range(5))  # 4 dropped after input
    meta = json.loads(path.read_text())
    assert meta["identity_keys"]["0"] == session.public[0].hex()  # public keys only, in hex


def test_secagg_plus_config_and_large_modulus_round_trip(tmp_path):
    driver = honest(config(8, 3, k=4, q=2**62 - 57, d=32), seed=2)
    rec = read_record(driver.record(tmp_path))
    assert rec.config.neighbors == 4 and rec.config.modulus == 2**62 - 57
    assert rec.transcript == tuple(driver.transcript())


def test_refuses_to_overwrite(tmp_path, session):
    session.record(tmp_path)
    with pytest.raises(FileExistsError):
        session.record(tmp_path)


def test_record_result_takes_a_masked_sum_result(tmp_path, session):
    """The lead's wiring: run_masked_sum's result plus its session id and identity keys."""
    result = SimpleNamespace(session_id=session.session_id, identity_keys=session.public,
                             transcript=tuple(session.transcript()), included=session.server.u3)
    rec = read_record(record_result(tmp_path, "r", result, session.cfg))
    assert rec.transcript == result.transcript and rec.config == session.cfg
    carrying = SimpleNamespace(**vars(result), config=session.cfg)  # if results carry configs
    assert read_record(record_result(tmp_path, "r3", carrying)).config == session.cfg
    with pytest.raises(ValueError, match="differs"):
        record_result(tmp_path, "r4", carrying, config(5, 4, d=64))
    with pytest.raises(TypeError, match="no session id or identity keys"):
        record_result(tmp_path, "r2", SimpleNamespace(transcript=(), included=frozenset()),
                      session.cfg)


def test_record_result_of_run_masked_sum_passes_the_audit(tmp_path):
    """run_masked_sum's own result, recorded as the simulator records it, audits clean."""
    cfg = config(6, 4, d=500)
    rng = np.random.default_rng(3)
    inputs = {c: rng.integers(0, 50, 500, dtype=np.uint64) for c in range(6)}
    result = run_masked_sum(cfg, inputs, {5: "masked_input", 4: "unmasking"}, seed=1)
    rec = read_record(record_result(tmp_path, "r", result, cfg))
    assert rec.transcript == result.transcript and rec.included == result.included
    assert rec.session_id == result.session_id and rec.identity_keys == result.identity_keys
    audit = audit_record(rec, alpha=1e-6)  # fresh keys each run: keep false alarms at 1e-6
    assert audit.passed, {c.name: c.details for c in audit.checks if not c.passed}


@pytest.mark.parametrize("bad, match", [
    (dict(name="has space"), "record name"),
    (dict(name="../escape"), "record name"),
    (dict(session_id=b"short"), "session id"),
    (dict(identity_public_keys={0: b"x" * 31}), "identity key"),
    (dict(included=[99]), "not enrolled"),
    (dict(transcript=[TranscriptEntry("warm_up", 0, b"")]), "unknown round"),
    (dict(transcript=[TranscriptEntry("unmasking", -1, b"")]), "sender"),
])
def test_writer_refuses_malformed_records(tmp_path, session, bad, match):
    args = dict(name="s", session_id=session.session_id, identity_public_keys=session.public,
                transcript=session.transcript(), included=session.server.u3)
    args.update(bad)
    if "identity_public_keys" in bad:
        args["identity_public_keys"] = {**session.public, **bad["identity_public_keys"]}
    with pytest.raises(RecordError, match=match):
        record_session(tmp_path, args.pop("name"), session.cfg, **args)
    assert not list(tmp_path.iterdir())  # nothing half-written


def _write(tmp_path: Path, session) -> tuple[Path, Path, dict]:
    path = session.record(tmp_path)
    return path, path.with_suffix(".bin"), json.loads(path.read_text())


def _rewrite_bin(path: Path, meta: dict, blob: bytes) -> None:
    """Replace the .bin and update its size and digest: defects the digest cannot catch."""
    path.with_suffix(".bin").write_bytes(blob)
    meta["messages"].update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("how, match", [
    ("truncated_bin", "truncated or altered"),
    ("flipped_bin", "SHA-256 differs"),
    ("missing_bin", "cannot read"),
    ("garbage_json", "not a JSON session record"),
    ("empty_json", "not a JSON session record"),
    ("json_list", "must be a JSON object"),
    ("unknown_key", "unknown keys"),
    ("missing_key", "missing keys"),
    ("duplicate_key", "duplicate key"),
    ("bad_format", "format"),
    ("bad_version", "version"),
    ("version_1", "record version 1 is not supported"),
    ("empty_aborted", "aborted must be null"),
    ("number_aborted", "aborted must be null"),
    ("renamed", "does not match the file name"),
    ("weak_threshold", "config refused"),
    ("bool_threshold", "must be an integer"),
    ("bad_hex", "hex digits"),
    ("short_key", "hex digits"),
    ("bad_client_id", "not a decimal integer"),
    ("missing_client", "identity keys for num_clients"),
    ("unsorted_included", "strictly increasing"),
    ("count_mismatch", "announces"),
    ("bin_bad_magic", "bad magic"),
    ("bin_unknown_round", "unknown round"),
    ("bin_truncated_entry", "entry"),
    ("bin_trailing", "trailing bytes"),
    ("nan", "not a JSON session record"),
])
def test_reader_refuses_damaged_records(tmp_path, session, how, match):
    path, bin_path, meta = _write(tmp_path, session)
    blob = bin_path.read_bytes()
    if how == "truncated_bin":
        bin_path.write_bytes(blob[:-7])
    elif how == "flipped_bin":
        bin_path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    elif how == "missing_bin":
        bin_path.unlink()
    elif how == "garbage_json":
        path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif how == "empty_json":
        path.write_text("")
    elif how == "json_list":
        path.write_text("[]")
    elif how == "duplicate_key":
        path.write_text(path.read_text().replace('"version": 2', '"version": 2, "version": 2'))
    elif how == "nan":
        path.write_text(path.read_text().replace('"version": 2', '"version": NaN'))
    elif how == "renamed":
        path.rename(tmp_path / "session-other.json")
        path = tmp_path / "session-other.json"
    elif how.startswith("bin_"):
        if how == "bin_bad_magic":
            blob = b"XXXXXXXX" + blob[8:]
        elif how == "bin_unknown_round":
            blob = blob[:12] + bytes([200]) + blob[13:]  # entry 0's round
        elif how == "bin_truncated_entry":
            blob = blob[:-3]
        elif how == "bin_trailing":
            blob = blob + b"\x00"
        _rewrite_bin(path, meta, blob)
    else:
        edits = {
            "unknown_key": lambda d: d.update(extra=1),
            "missing_key": lambda d: d.pop("included"),
            "bad_format": lambda d: d.update(format="something-else"),
            "bad_version": lambda d: d.update(version=3),
            "version_1": lambda d: (d.update(version=1), d.pop("aborted")),
            "empty_aborted": lambda d: d.update(aborted=""),
            "number_aborted": lambda d: d.update(aborted=1),
            "weak_threshold": lambda d: d["config"].update(threshold=2),  # 2t <= n
            "bool_threshold": lambda d: d["config"].update(threshold=True),
            "bad_hex": lambda d: d.update(session_id="zz" * 32),
            "short_key": lambda d: d["identity_keys"].update({"0": "ab" * 31}),
            "bad_client_id": lambda d: d["identity_keys"].update({"01": "ab" * 32}),
            "missing_client": lambda d: d["identity_keys"].pop("4"),
            "unsorted_included": lambda d: d.update(included=[1, 0]),
            "count_mismatch": lambda d: d["messages"].update(count=d["messages"]["count"] + 1),
        }
        edits[how](meta)
        path.write_text(json.dumps(meta))
    with pytest.raises(RecordError, match=match) as exc:
        read_record(path)
    assert isinstance(exc.value, ValueError)
    assert str(path.name) in str(exc.value)  # the message says which record


def test_decode_rejects_every_truncation(session):
    blob = encode_messages(session.transcript()[:6])
    assert decode_messages(blob) == tuple(session.transcript()[:6])
    for cut in range(len(blob)):
        with pytest.raises(RecordError):
            decode_messages(blob[:cut])


def test_find_records_is_recursive_and_reports_orphans(tmp_path, session):
    session.record(tmp_path / "a", "x")
    session.record(tmp_path / "b" / "c", "y")
    (tmp_path / "b" / "session-z.bin").write_bytes(b"")
    assert [p.name for p in find_records(tmp_path)] == ["session-x.json", "session-y.json"]
    assert [p.name for p in find_orphans(tmp_path)] == ["session-z.bin"]


def test_session_record_is_immutable(session):
    rec = SessionRecord("s", session.cfg, session.session_id, session.public,
                        tuple(session.transcript()), session.server.u3)
    with pytest.raises(TypeError):
        rec.identity_keys[0] = b"\x00" * 32
