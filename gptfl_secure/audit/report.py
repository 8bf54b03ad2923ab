"""Audit one record or a directory of records, and print the verdicts.

A session whose record says it aborted is reported as ``ABORTED`` when its recorded part passes
every check (an abort is not a failure: the server revealed nothing), ``FAIL`` otherwise. A
directory also gets the checks of :mod:`.directory` (no session id or signature in two records,
records matching the sessions the run reports); any failing one fails the audit (exit 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..protocols.recording import (
    RecordError,
    SessionRecord,
    find_orphans,
    find_records,
    read_record,
)
from .checks import CHECKS, CheckResult
from .directory import (
    RecordPrint,
    RunFileError,
    check_run_sessions,
    check_session_reuse,
    check_signature_reuse,
    find_run_dir,
    fingerprint,
)
from .privacy import format_privacy, read_privacy
from .transcript import parse


@dataclass(frozen=True)
class SessionAudit:
    """The checks of one session record, in :data:`~.checks.CHECKS` order."""

    name: str
    path: Path | None
    checks: tuple[CheckResult, ...]
    aborted: str | None = None  # the record's abort reason, for a session that aborted

    @property
    def passed(self) -> bool:
        """Every check passed (for an aborted session: its recorded part is consistent)."""
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        if not self.passed:
            return "FAIL" + (f" (aborted session: {self.aborted})" if self.aborted else "")
        return f"ABORTED, recorded part consistent: {self.aborted}" if self.aborted else "PASS"

    @property
    def failed(self) -> frozenset[str]:
        return frozenset(c.name for c in self.checks if not c.passed)

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)


@dataclass
class DirectoryAudit:
    root: Path
    sessions: list[SessionAudit] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one clear message per bad input
    checks: list[CheckResult] = field(default_factory=list)  # across records (.directory)
    run_dir: Path | None = None  # where the run's reports were found, if anywhere
    privacy: dict | None = None  # the run's metrics.json privacy section, when found

    @property
    def aborted(self) -> list[SessionAudit]:
        return [s for s in self.sessions if s.aborted]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.sessions) and all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0: every check of every session and of the directory passed (aborted sessions
        included, when consistent); 2: some input could not be read (or there was none),
        whatever else happened; 1: otherwise."""
        if self.unreadable or not self.sessions:
            return 2
        return 0 if self.passed else 1


def audit_record(record: SessionRecord, path: Path | None = None, *,
                 alpha: float = 1e-3) -> SessionAudit:
    """Run every check on ``record``; ``alpha`` is the uniformity test's family-wise level."""
    t = parse(record)
    return SessionAudit(record.name, path, tuple(fn(t, alpha=alpha) for _, fn in CHECKS),
                        record.aborted)


def audit_prints(prints: list[RecordPrint], run_dir: Path | None = None) -> list[CheckResult]:
    """The checks across records: session ids and signatures not reused, and, when ``run_dir``
    holds the run's reports, records matching the sessions they list (RunFileError when a
    report is malformed)."""
    checks = [check_session_reuse(prints), check_signature_reuse(prints)]
    if run_dir is not None:
        checks.append(check_run_sessions(run_dir, prints))
    return checks


def audit_directory(root: str | os.PathLike[str], *, alpha: float = 1e-3) -> DirectoryAudit:
    """Audit every ``session-*.json`` record under ``root``, recursively, then the records
    together (:mod:`.directory`)."""
    root = Path(root)
    out = DirectoryAudit(root)
    if not root.is_dir():
        out.unreadable.append(f"{root}: not a directory")
        return out
    paths = find_records(root)
    for orphan in find_orphans(root):
        out.unreadable.append(f"{orphan}: message file without its {orphan.stem}.json")
    if not paths and not out.unreadable:
        out.unreadable.append(f"{root}: no session records (session-*.json) found")
    prints = []
    for path in paths:
        try:
            record = read_record(path)
        except RecordError as exc:
            out.unreadable.append(f"unreadable record: {exc}")
            continue
        out.sessions.append(audit_record(record, path, alpha=alpha))
        prints.append(fingerprint(record, path))
    out.run_dir = find_run_dir(root)
    out.privacy = read_privacy(out.run_dir)
    try:
        out.checks = audit_prints(prints, out.run_dir)
    except RunFileError as exc:
        out.checks = audit_prints(prints)
        out.unreadable.append(str(exc))
    return out


def format_session(s: SessionAudit, *, verbose: bool = True) -> list[str]:
    where = f" ({s.path})" if s.path else ""
    return [f"session {s.name}{where}: {s.verdict}", *_format_checks(s.checks, verbose)]


def _format_checks(checks, verbose: bool) -> list[str]:
    lines = []
    width = max((len(c.name) for c in checks), default=0)
    for c in checks:
        lines.append(f"  [{'PASS' if c.passed else 'FAIL'}] {c.name:<{width}}  {c.summary}")
        if verbose or not c.passed:
            lines.extend(f"      {d}" for d in c.details)
    return lines


def format_report(audit: DirectoryAudit, *, verbose: bool = True) -> str:
    lines: list[str] = []
    for s in audit.sessions:
        lines += format_session(s, verbose=verbose)
    if audit.checks:
        ok = all(c.passed for c in audit.checks)
        lines.append(f"directory {audit.root}: {'PASS' if ok else 'FAIL'}")
        lines += _format_checks(audit.checks, verbose)
        if audit.run_dir is None:
            lines.append("  (no metrics.json or transcript_summary.json here or, for "
                         "OUT/transcripts, in OUT: records not matched against a run)")
    lines += format_privacy(audit.privacy)
    for msg in audit.unreadable:
        lines.append(f"UNREADABLE: {msg}")
    passed = sum(s.passed for s in audit.sessions)
    aborted = len(audit.aborted)
    failed_dir = [c.name for c in audit.checks if not c.passed]
    lines.append(f"audit of {audit.root}: {len(audit.sessions)} sessions"
                 + (f" ({aborted} aborted)" if aborted else "")
                 + f", {passed} passed, {len(audit.sessions) - passed} failed, "
                 f"{len(audit.unreadable)} unreadable"
                 + (f"; directory checks failed: {', '.join(failed_dir)}" if failed_dir else "")
                 + f" -> exit {audit.exit_code}")
    return "\n".join(lines)


def failed_checks(audits: Iterable[SessionAudit]) -> dict[str, frozenset[str]]:
    return {s.name: s.failed for s in audits}
