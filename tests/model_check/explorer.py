"""Run every schedule of a profile against the real client and each mutant (``MUTANTS``, gated)
and, in the short profile, each ``REDUNDANT`` one (reported as "redundant: <reason>", never
counted; a violation against one would mean its reason is wrong)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gptfl_secure.protocols import SecAggClient

from .mutants import MUTANTS, REDUNDANT
from .oracle import analyse
from .strategies import FAMILIES, FINDINGS, FULL, Setting


@dataclass
class Outcome:
    strategies: set = field(default_factory=set)
    schedules: int = 0
    violations: list = field(default_factory=list)  # (label, problems) on the real client
    caught: dict = field(default_factory=dict)  # mutant -> (label, problems)
    redundant_caught: dict = field(default_factory=dict)  # REDUNDANT mutant -> (label, problems)
    seconds: float = 0.0


def schedules(profile: str):
    """(family name, label, play) of every schedule in ``profile`` ("full" or "short")."""
    if profile == "full":
        plan = [(st, name) for st in FULL for name in FAMILIES]
    else:
        plan = [(Setting(5, 3), "split-u3"), (Setting(4, 3), "weak-config"),
                (Setting(5, 3), "cross-session-mix"),
                (Setting(5, 3), "partner-exclusion"), (Setting(5, 3), "ledger-reuse"),
                (Setting(3, 2), "honest"), (Setting(5, 2, 2), "honest")]
    for st, name in plan:
        for c in range(st.max_colluders + 1):
            col = frozenset(range(st.n - c, st.n))  # by symmetry: the highest ids collude
            for label, play in FAMILIES[name](st, col):
                if profile == "short" and not _short_keep(name, label):
                    continue
                yield f"{name} [{st}]", label, play


def _short_keep(name: str, label: str) -> bool:
    """The short profile: victim 0 only (the complete graph is symmetric up to relabelling)."""
    if name in ("split-u3", "weak-config", "partner-exclusion"):
        return "victim=0 " in label
    if name == "cross-session-mix":
        return "target=(1,0)" in label
    return True


def explore(profile: str = "full", log=print) -> Outcome:
    out = Outcome()
    start = time.perf_counter()
    classes = {"real": SecAggClient, **MUTANTS}
    redundant = REDUNDANT if profile == "short" else {}
    for name, cls in REDUNDANT.items():
        log(f"redundant {name}: {reason(cls)}")
    for strategy, label, play in schedules(profile):
        out.strategies.add(strategy)
        out.schedules += 1
        for name, cls in {**classes, **redundant}.items():
            if name in out.caught or name in out.redundant_caught:
                continue
            problems = analyse(play(cls))
            if not problems:
                continue
            if name == "real":
                out.violations.append((label, problems))
                log(f"VIOLATION (real client): {label}: {problems}")
            elif name in MUTANTS:
                out.caught[name] = (label, problems)
                log(f"caught {name}: {label}: {problems[0]}")
            else:
                out.redundant_caught[name] = (label, problems)
                log(f"REDUNDANT MUTANT CAUGHT (its reason is wrong) {name}: {label}: "
                    f"{problems[0]}")
    out.seconds = time.perf_counter() - start
    return out


def reason(cls) -> str:
    """A redundant mutant's docstring, on one line."""
    return " ".join((cls.__doc__ or "").split())


def findings(log=print) -> list[str]:
    """The ``--findings`` families (outside the gate): what the real client allows there."""
    lines = []
    for name, family in FINDINGS.items():
        for label, play in family(Setting(5, 3), frozenset()):
            w = play(SecAggClient)
            for mode, same in (("fresh inputs per run", False), ("same inputs in both runs", True)):
                problems = analyse(w, same_inputs=same)
                lines.append(f"finding {name} ({mode}): {label}: {problems or 'nothing'}")
                log(lines[-1])
    return lines


def summary(out: Outcome) -> str:
    return (f"model-check: {len(out.strategies)} strategies, {out.schedules} schedules, "
            f"{len(out.violations)} violations; mutants caught {len(out.caught)}/{len(MUTANTS)}")
