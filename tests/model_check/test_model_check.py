"""The model check's short profile (the full one: ``make model-check``) and its oracle."""

from __future__ import annotations

import os

from gptfl_secure.protocols import SecAggClient

from .adversary import World, cfg
from .explorer import explore
from .mutants import MUTANTS, REDUNDANT
from .oracle import P, Row, allowed, knowledge, knowledge_of
from .strategies import flow


def test_short_profile_real_client_clean_and_every_mutant_caught():
    out = explore("short", log=lambda s: None)
    assert out.violations == []
    assert sorted(out.caught) == sorted(MUTANTS)
    # A redundant mutant is one the other checks make harmless: a violation would refute that.
    assert out.redundant_caught == {}


def test_every_redundant_mutant_says_why_and_differs_from_the_real_client():
    assert not set(REDUNDANT) & set(MUTANTS)
    for name, cls in REDUNDANT.items():
        assert "Redundant" in (cls.__doc__ or ""), name
        weakened = [k for k in vars(cls) if k in vars(SecAggClient)]
        assert weakened and all(vars(cls)[k] is not vars(SecAggClient)[k] for k in weakened), name


# ------------------------------------------------------------------ the oracle on symbols
def _session(n: int, pairs_known=(), selves_known=()):
    """Rows of an n-client complete-graph session: y_u = x_u + b_u + sum_{v>u} s_uv - ..."""
    rows = []
    for u in range(n):
        masks = {("b", u): 1}
        for v in range(n):
            if v != u:
                masks[("s", min(u, v), max(u, v))] = 1 if v > u else P - 1
        rows.append(Row(u, masks))
    known = {("b", u) for u in selves_known} | {("s", *p) for p in pairs_known}
    return rows, known


def test_oracle_honest_session_gives_exactly_the_sum():
    rows, known = _session(4, selves_known=range(4))
    funcs = knowledge(rows, known)
    assert funcs == [dict.fromkeys(range(4), 1)] or all(
        len(set(f.values())) == 1 and set(f) == set(range(4)) for f in funcs)
    assert allowed(funcs, list(range(4)), 0, 3) is None


def test_oracle_individual_input_when_b_and_all_pairwise_keys_known():
    rows, known = _session(4, pairs_known=[(0, 1), (0, 2), (0, 3)], selves_known=[0])
    funcs = knowledge(rows, known)
    assert [set(f) for f in funcs] == [{0}]
    assert "single out [0]" in allowed(funcs, list(range(4)), 0, 3)


def test_oracle_nothing_when_nothing_revealed():
    rows, known = _session(4)
    assert knowledge(rows, known) == []
    rows, known = _session(4, pairs_known=[(0, 1), (0, 2), (0, 3)])  # no self mask: still none
    assert knowledge(rows, known) == []


def test_oracle_two_disjoint_sums_are_allowed_only_at_or_above_the_threshold():
    """x0 + x1 and x2 + x3: two disjoint sums. The ideal functionality allows that when each has
    >= t inputs (two worlds of t = 2), not when t = 3."""
    rows, known = _session(4, pairs_known=[(0, 2), (0, 3), (1, 2), (1, 3)],
                           selves_known=range(4))
    funcs = knowledge(rows, known)
    assert allowed(funcs, list(range(4)), 0, 2) is None
    assert "single out [0, 1]" in allowed(funcs, list(range(4)), 0, 3)
    assert allowed(funcs, list(range(4)), 1, 3) is None  # one colluder in each world


def test_oracle_flags_overlapping_sums_and_weighted_combinations():
    """x0+x1+x2 and x2+x3+x4 overlap in client 2: classes {0,1}, {2}, {3,4}."""
    funcs = [{0: 1, 1: 1, 2: 1}, {2: 1, 3: 1, 4: 1}]
    assert "single out [2]" in allowed(funcs, list(range(5)), 0, 3)
    assert "single out [4]" in allowed([{0: 1, 1: 1, 2: 1, 3: 1, 4: 2}], list(range(5)), 0, 3)


def test_oracle_on_a_real_honest_session_and_one_with_a_dropout():
    w = World(4, SecAggClient)
    s = w.start(os.urandom(32), cfg(4, 3))
    funcs, both = knowledge_of(flow(w, [s]))
    assert both == [] and len(funcs) == 1 and set(funcs[0]) == {(0, c) for c in range(4)}
    assert len(set(funcs[0].values())) == 1
    w = World(4, SecAggClient)
    s = w.start(os.urandom(32), cfg(4, 3))
    funcs, both = knowledge_of(flow(w, [s], silent={(0, 3): "masked_input"}))
    assert both == [] and len(funcs) == 1 and set(funcs[0]) == {(0, c) for c in range(3)}


def test_oracle_sees_nothing_when_the_session_stops_before_unmasking():
    w = World(4, SecAggClient)
    s = w.start(os.urandom(32), cfg(4, 3))
    funcs, _ = knowledge_of(flow(w, [s], sigs="none"))  # every client aborts at unmasking
    assert funcs == []
