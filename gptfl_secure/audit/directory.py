"""Checks across the records of one directory, which no single record can make.

* ``session_reuse``: no two records carry the same session id. A session id is fresh per
  session; two records under one id are one session recorded twice (e.g. a record copied under
  another name, which would count its clients twice) or a reused id.
* ``signature_reuse``: no signature (the same 64 bytes) and no signed message (the same header and
  body) appears in two records. Each client signature binds the session id and, after
  ADVERTISE, the session context, so an honest run never produces the same one twice; one seen
  in two records was copied from one into the other.
* ``run_sessions``: when the run that wrote the records left its reports beside them
  (``transcript_summary.json`` and/or ``metrics.json``, in DIR or, for ``DIR = OUT/transcripts``,
  in OUT), the records are exactly the masked-sum sessions the run says it ran: none missing,
  none extra, each with the session id and the completed/aborted status the run reports. The
  simulator lists every session of every entry of ``transcript_summary.json`` under
  ``"sessions"`` (``{"record": name or null, "session_id": hex, "aborted": null | reason}``);
  for reports without that list (older runs, other drivers) the expected records are one per
  masked-sum entry and one per round that ran the protocol, skipped (aborted) ones included.

These checks read what the records and the run's reports say; like the per-record checks, they
cannot see a session that neither mentions.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..protocols import messages as m
from ..protocols.crypto import SIGNATURE_BYTES
from ..protocols.recording import SessionRecord
from .checks import CheckResult

RUN_FILES = ("transcript_summary.json", "metrics.json")
DIRECTORY_CHECK_NAMES = ("session_reuse", "signature_reuse", "run_sessions")


class RunFileError(ValueError):
    """A run report beside the records is unreadable or not in the format the sim writes."""


@dataclass(frozen=True)
class Signed:
    """One signed message of a record: where it is and what identifies it."""

    index: int
    step: str
    sender: int
    signature: bytes
    message: bytes  # SHA-256 of the signed part (header and body)


@dataclass
class RecordPrint:
    """What the directory checks need of one record (kept instead of the whole record)."""

    name: str
    path: Path | None
    session_id: bytes
    aborted: str | None
    signed: list[Signed] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.path})" if self.path else self.name


def fingerprint(record: SessionRecord, path: Path | None = None) -> RecordPrint:
    out = RecordPrint(record.name, path, record.session_id, record.aborted)
    header = m._HEADER
    for i, e in enumerate(record.transcript):
        if len(e.data) < header.size:
            continue
        magic, _, _, _, _, length = header.unpack_from(e.data)
        if magic != m.MAGIC or len(e.data) != header.size + length + SIGNATURE_BYTES:
            continue  # not a framed, signed message: nothing to compare
        signed = e.data[:-SIGNATURE_BYTES]
        out.signed.append(Signed(i, e.step, e.sender, e.data[-SIGNATURE_BYTES:],
                                 hashlib.sha256(signed).digest()))
    return out


def check_session_reuse(prints: list[RecordPrint]) -> CheckResult:
    by_id: dict[bytes, list[RecordPrint]] = {}
    for p in prints:
        by_id.setdefault(p.session_id, []).append(p)
    details = tuple(
        f"session id {sid.hex()[:16]}... is used by {len(ps)} records: "
        + ", ".join(p.label for p in ps) + " (one session recorded twice, or a reused id)"
        for sid, ps in by_id.items() if len(ps) > 1)
    summary = (f"{len(prints)} records, {len(by_id)} distinct session ids" if not details
               else f"{len(details)} session ids used by more than one record")
    return CheckResult("session_reuse", not details, summary, details)


def check_signature_reuse(prints: list[RecordPrint]) -> CheckResult:
    seen: dict[tuple[str, bytes], tuple[int, Signed]] = {}  # first record holding each
    shared: dict[tuple[int, int], dict] = {}
    total = 0
    for r, p in enumerate(prints):
        for s in p.signed:
            total += 1
            for kind, key in (("signatures", s.signature), ("messages", s.message)):
                first = seen.setdefault((kind, key), (r, s))
                if first[0] == r:
                    continue
                pair = shared.setdefault((first[0], r), {"signatures": 0, "messages": 0,
                                                         "example": (first[1], s)})
                pair[kind] += 1
    details = []
    for (a, b), pair in sorted(shared.items()):
        x, y = pair["example"]
        details.append(
            f"records {prints[a].label} and {prints[b].label} share {pair['signatures']} "
            f"signatures and {pair['messages']} signed messages, e.g. client {x.sender}'s "
            f"{x.step} message #{x.index} in {prints[a].name} and {y.sender}'s {y.step} message "
            f"#{y.index} in {prints[b].name}: copied from one session into another")
    summary = (f"{total} signed messages in {len(prints)} records, no signature or signed "
               "message in two records" if not details
               else f"{len(details)} pairs of records share signatures or signed messages")
    return CheckResult("signature_reuse", not details, summary, tuple(details))


# ------------------------------------------------------------------- the run's own account
@dataclass(frozen=True)
class RunSession:
    """One masked-sum session the run reports: its record's name (None: not recorded), its
    session id and whether it aborted (None: the report does not say)."""

    what: str
    name: str | None
    session_id: bytes | None
    aborted: bool | None


def find_run_dir(root: Path) -> Path | None:
    """Where the run's reports are: ``root`` itself, or its parent when ``root`` is the sim's
    ``OUT/transcripts``; None when neither holds one."""
    candidates = [root] + ([root.parent] if root.name == "transcripts" else [])
    for d in candidates:
        if any((d / f).is_file() for f in RUN_FILES):
            return d
    return None


def _load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunFileError(f"{path}: unreadable run report ({exc})") from exc


def _legacy_name(session: str) -> str | None:
    if session == "label_discovery":
        return "label-discovery"
    match = re.fullmatch(r"round (\d+)", session)
    return f"round-{int(match.group(1)):04d}" if match else None


def expected_sessions(run_dir: Path) -> tuple[list[RunSession], str, list[str]]:
    """The masked-sum sessions the run says it ran, the report that says so, and
    inconsistencies between its two reports. Raises RunFileError for a malformed report."""
    summary_path, metrics_path = (run_dir / f for f in RUN_FILES)
    metrics = _load(metrics_path) if metrics_path.is_file() else None
    summary = _load(summary_path) if summary_path.is_file() else None
    secagg = None
    rounds: list = []
    if metrics is not None:
        try:
            secagg = metrics["config"]["secagg"]
            rounds = list(metrics["rounds"])
            round_ids = [int(row["round"]) for row in rounds]
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFileError(f"{metrics_path}: no config.secagg or rounds[].round ({exc})") \
                from exc
    notes: list[str] = []
    if summary is None:
        if secagg == "off":
            return [], metrics_path.name, notes
        out = [RunSession("label discovery", "label-discovery", None, None)]
        out += [RunSession(f"round {r}", f"round-{r:04d}", None, None) for r in round_ids]
        return out, metrics_path.name, notes
    if not isinstance(summary, list) or not all(isinstance(e, dict) for e in summary):
        raise RunFileError(f"{summary_path}: not a list of session entries")
    if secagg is None:
        protocols = {e.get("protocol") for e in summary}
        secagg = "off" if "plain sum (secagg off)" in protocols else "on"
    out = []
    try:
        for entry in summary:
            what = str(entry["session"])
            if "sessions" in entry:
                for s in entry["sessions"]:
                    sid = bytes.fromhex(s["session_id"]) if s["session_id"] else None
                    reason = s["aborted"]
                    out.append(RunSession(what, s["record"], sid, reason is not None))
            elif entry.get("protocol") == "masked sum" or (
                    entry.get("protocol") == "none" and secagg != "off"):
                # an older report: one session per masked sum; "none" is a skipped round (an
                # aborted session) or DP label discovery (a session not summarized)
                out.append(RunSession(what, _legacy_name(what), None,
                                      False if entry["protocol"] == "masked sum" else None))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFileError(f"{summary_path}: malformed session entry ({exc})") from exc
    if metrics is not None:
        listed = sum(1 for e in summary if re.fullmatch(r"round \d+", str(e.get("session"))))
        if listed != len(rounds):
            notes.append(f"{metrics_path.name} lists {len(rounds)} rounds, {summary_path.name} "
                         f"{listed}")
    return out, summary_path.name, notes


def check_run_sessions(run_dir: Path, prints: list[RecordPrint]) -> CheckResult:
    """Every session the run reports has its record, and every record is one of them."""
    expected, source, details = expected_sessions(run_dir)
    by_name: dict[str, list[RecordPrint]] = {}
    for p in prints:
        by_name.setdefault(p.name, []).append(p)
    matched: set[int] = set()
    recorded = [s for s in expected if s.name is not None]
    for s in recorded:
        found = by_name.get(s.name, [])
        sid = f" (session id {s.session_id.hex()[:16]}...)" if s.session_id else ""
        if not found:
            status = " an aborted session" if s.aborted else ""
            details.append(f"no record of {s.what}{status}: session-{s.name}.json is missing"
                           + sid)
            continue
        for p in found:
            matched.add(id(p))
            if s.session_id is not None and p.session_id != s.session_id:
                details.append(f"record {p.label} has session id {p.session_id.hex()[:16]}..., "
                               f"the run's {s.what} had {s.session_id.hex()[:16]}...")
            if s.aborted is not None and s.aborted != (p.aborted is not None):
                details.append(f"record {p.label} is {'aborted' if p.aborted else 'complete'}, "
                               f"the run reports {s.what} as "
                               f"{'aborted' if s.aborted else 'complete'}")
    retries = 0  # metrics.json does not count label-discovery retries: accept their records
    for p in prints:
        if id(p) in matched:
            continue
        if source == RUN_FILES[1] and re.fullmatch(r"label-discovery-\d+", p.name):
            retries += 1
        else:
            details.append(f"record {p.label} is not one of the sessions {source} lists")
    aborted = sum(1 for s in recorded if s.aborted)
    if len(recorded) != len(prints) - retries:
        details.insert(0, f"the run says it ran {len(recorded)} recorded masked-sum sessions "
                          f"({source} in {run_dir}), the directory holds {len(prints)} records")
    summary = (f"{len(recorded)} sessions in {source} ({aborted} aborted), {len(prints)} "
               "records: one each" if not details
               else f"records do not match the sessions {source} lists")
    return CheckResult("run_sessions", not details, summary, tuple(details))
