"""``python -m tests.model_check [--short]``: run the profile, print one summary line last."""

from __future__ import annotations

import sys

from .explorer import explore, findings, summary
from .mutants import MUTANTS


def main(argv: list[str]) -> int:
    if "--findings" in argv:
        findings()
        return 0
    profile = "short" if "--short" in argv else "full"
    out = explore(profile, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"({profile} profile: {out.seconds:.1f} s)", file=sys.stderr)
    print(summary(out))
    ok = not out.violations and len(out.caught) == len(MUTANTS) and not out.redundant_caught
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
