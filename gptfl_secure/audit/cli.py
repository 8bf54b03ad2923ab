"""``python -m gptfl_secure.audit DIR``: check every recorded session under DIR.

Reads each ``session-<name>.json`` record (and its ``.bin``) under DIR, recursively, and runs
every check of :mod:`gptfl_secure.audit.checks` with nothing but the record: no client secret.
Then the checks of :mod:`gptfl_secure.audit.directory` across the records: no session id and no
signature in two records, and, when DIR (or, for ``OUT/transcripts``, OUT) holds the run's
``transcript_summary.json`` / ``metrics.json``, one record per session the run says it ran.
Prints a verdict per session (PASS, FAIL, or ABORTED with the reason for an aborted session
whose recorded part is consistent) and per check, with the uniformity p-values. Exit status: 0
when every check passes (consistent aborted sessions included); 1 when a check fails; 2 when DIR
is missing, holds no record, or holds a record or run report that cannot be read (truncated,
garbage, inconsistent), which takes precedence (the audit is incomplete).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..console import program
from .report import audit_directory, format_report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program("gptfl-audit", "gptfl_secure.audit"),
        description="Audit recorded masked-sum sessions without client secrets.")
    parser.add_argument("directory", help="directory holding session-*.json records "
                                          "(searched recursively)")
    parser.add_argument("--alpha", type=float, default=1e-3,
                        help="family-wise level of the uniformity test (default 1e-3)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print details (p-values included) of failing checks only")
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        parser.error(f"--alpha {args.alpha}: must be in (0, 1)")
    audit = audit_directory(args.directory, alpha=args.alpha)
    print(format_report(audit, verbose=not args.quiet))
    for msg in audit.unreadable:
        print(f"error: {msg}", file=sys.stderr)
    return audit.exit_code
