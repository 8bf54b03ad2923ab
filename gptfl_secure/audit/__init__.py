"""Audit recorded masked-sum sessions without any client secret.

Reads the records of :mod:`gptfl_secure.protocols.recording` with :mod:`gptfl_secure.protocols`
alone (no learning, no simulator, no torch) and checks the messages' signatures, session ids,
rounds and senders (every signature after ADVERTISE under the session context the record's
ADVERTISE messages determine), the thresholds, the survivor chain, the consistency round, that
no client's two shares were both revealed, and that masked inputs look uniform over Z_q. Aborted
sessions are recorded and checked too, for the part that exists. Across a directory it checks
that no session id or signature appears in two records and, beside a run's reports, that the
records are exactly the sessions the run ran.

    audit = audit_directory("runs/x/transcripts")      # or: python -m gptfl_secure.audit DIR
    audit.exit_code, [s.failed for s in audit.sessions]
"""

from __future__ import annotations

from .checks import CHECK_NAMES, CheckResult
from .directory import DIRECTORY_CHECK_NAMES
from .report import DirectoryAudit, SessionAudit, audit_directory, audit_record, format_report
from .transcript import Transcript, parse

__all__ = [
    "CHECK_NAMES", "DIRECTORY_CHECK_NAMES", "CheckResult", "DirectoryAudit", "SessionAudit",
    "Transcript", "audit_directory", "audit_record", "format_report", "parse",
]
