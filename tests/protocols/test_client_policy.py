"""Finding 2: a client checks the server's proposal against its own policy before making a key.

Until this commit a client took the session's (n, t) and its group's identity keys from the
server. A server could then tell clients that trust many enrolled peers that they were in a
group of 2 with t = 2, run disjoint pairs as separate sessions and learn each pair's sum. Now a
``ClientPolicy`` (the client's registry and rules, never the server's word) refuses, with
``PolicyViolation`` raised by the ``SecAggClient`` constructor, before any X25519 key exists:

* a group with a key the registry does not hold (an unknown client, an altered key, this client's
  own key altered), or that leaves this client out;
* ``num_clients`` other than the size of the group, or a group below ``min_clients``;
* t below max(floor((n + T)/2) + 1, ceil(f n)) on the complete graph (T = max_colluders,
  f = min_threshold_fraction);
* SecAgg+ when not allowed, with t <= (k + 1)/2 or t below ceil(f (k + 1)), or with (k, t)
  failing ``secagg_plus_is_secure`` at the policy's corruption rate;
* with a ``SessionLedger``, a session id the client started before.

The rule is written out again below (``documented_rule``), independently of the library, and a
property test checks that ``ClientPolicy.check`` accepts exactly what it accepts.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from fractions import Fraction
from unittest import mock

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from gptfl_secure.protocols import (
    STEPS,
    ClientPolicy,
    IdentityKey,
    PolicyViolation,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SessionLedger,
    crypto,
    run_masked_sum,
)

D, Q = 4, 2**16
REGISTRY_SIZE = 10
IDENTITIES = {c: IdentityKey(hashlib.sha256(b"client-policy/identity/%d" % c).digest())
              for c in range(REGISTRY_SIZE + 2)}  # the last two are never enrolled
REGISTRY = {c: IDENTITIES[c].public for c in range(REGISTRY_SIZE)}
STRANGER = REGISTRY_SIZE  # an identity the clients never enrolled
SID = hashlib.sha256(b"client-policy/session").digest()
ME = 0


def sid(tag: str) -> bytes:
    return hashlib.sha256(b"client-policy/" + tag.encode()).digest()


def config(n: int, t: int, k: int | None = None) -> SecAggConfig:
    return SecAggConfig(num_clients=n, threshold=t, vector_length=D, modulus=Q, neighbors=k)


def unchecked_config(n: int, t: int, k: int | None = None) -> SecAggConfig:
    """A config SecAggConfig itself refuses (2t <= group), built without its validation: a
    server is free to send any numbers."""
    cfg = object.__new__(SecAggConfig)
    for name, value in (("num_clients", n), ("threshold", t), ("vector_length", D),
                        ("modulus", Q), ("neighbors", k)):
        object.__setattr__(cfg, name, value)
    return cfg


def group(*ids: int) -> dict[int, bytes]:
    return {c: IDENTITIES[c].public for c in ids}


@contextmanager
def counting_keys():
    """Counts the X25519 keys clients make while inside."""
    made = []

    class Counted(crypto.AgreementKey):
        def __init__(self, private=None):
            if private is None:
                made.append(1)
            super().__init__(private)

    with mock.patch.object(crypto, "AgreementKey", Counted):
        yield made


# ------------------------------------------------------------------- every refusal
EVERYONE = tuple(range(REGISTRY_SIZE))
ALTERED = {**REGISTRY, 3: IDENTITIES[STRANGER + 1].public}
ALTERED_ME = {**REGISTRY, ME: IDENTITIES[STRANGER + 1].public}

# (proposed cfg, proposed group, the client's policy options, the refusal's words)
REFUSALS = {
    "small_n_for_the_whole_registry": (config(3, 2), REGISTRY, {}, "num_clients=3 but"),
    "small_group_below_min_clients": (config(3, 2), group(0, 1, 2), {"min_clients": 10},
                                      "below this client's minimum of 10"),
    "unknown_client": (config(11, 6), {**REGISTRY, **group(STRANGER)}, {}, "not enrolled"),
    "altered_key": (config(10, 6), ALTERED, {}, "client 3 in the session group is not enrolled"),
    "my_own_key_altered": (config(10, 6), ALTERED_ME, {}, f"client {ME} in the session group"),
    "leaves_me_out": (config(9, 5), group(*EVERYONE[1:]), {}, "leaves out this client"),
    "t_below_majority": (unchecked_config(10, 5), REGISTRY, {}, "t >= 6"),
    "t_below_colluder_rule": (config(10, 6), REGISTRY, {"max_colluders": 2}, "t >= 7"),
    "t_below_colluder_rule_4": (config(10, 7), REGISTRY, {"max_colluders": 4}, "t >= 8"),
    "t_below_fraction": (config(10, 7), REGISTRY, {"min_threshold_fraction": 0.8}, "t >= 8"),
    "secagg_plus_not_allowed": (config(10, 3, k=4), REGISTRY, {"allow_secagg_plus": False},
                                "only the complete graph"),
    "secagg_plus_t_below_majority": (unchecked_config(10, 2, k=4), REGISTRY, {},
                                     "t >= 3"),
    "secagg_plus_t_below_fraction": (config(10, 3, k=4), REGISTRY,
                                     {"min_threshold_fraction": 0.8}, "t >= 4"),
    "secagg_plus_k_too_small_for_corruption": (config(10, 2, k=2), REGISTRY,
                                               {"corruption_rate": 0.1}, "misses this client"),
    "not_a_config": ({"num_clients": 10, "threshold": 6}, REGISTRY, {}, "SecAggConfig"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_weak_or_inconsistent_proposal_is_refused_before_any_key(case):
    cfg, proposed, options, words = REFUSALS[case]
    policy = ClientPolicy(REGISTRY, **options)
    with pytest.raises(PolicyViolation, match=words):
        policy.check(cfg, ME, proposed)
    with counting_keys() as made, pytest.raises(PolicyViolation, match=words) as exc:
        SecAggClient(cfg, ME, IDENTITIES[ME], proposed, SID, policy=policy)
    assert exc.value.step == "configure" and exc.value.peer == "server"
    assert not made, "a refused client made keys"


@pytest.mark.parametrize("cfg, proposed, options", [
    (config(10, 6), REGISTRY, {}),
    (config(10, 7), REGISTRY, {"max_colluders": 3}),
    (config(10, 8), REGISTRY, {"min_threshold_fraction": 0.8}),
    (config(10, 3, k=4), REGISTRY, {}),
    (config(10, 4, k=4), REGISTRY, {"min_threshold_fraction": 0.8}),
    (config(3, 2), group(0, 1, 2), {}),  # a sub-group: min_clients (2 by default) allows it
])
def test_an_acceptable_proposal_is_accepted_and_keys_are_made(cfg, proposed, options):
    """Control for the refusals: the same policies accept a proposal that meets them."""
    policy = ClientPolicy(REGISTRY, **options)
    policy.check(cfg, ME, proposed)
    with counting_keys() as made:
        client = SecAggClient(cfg, ME, IDENTITIES[ME], proposed, SID, policy=policy)
        assert isinstance(client.advertise_keys(), bytes)
    assert len(made) == 2


def test_a_refused_client_never_returns_bytes():
    """There is no client to call: the constructor raised. (Nothing was sent.)"""
    made = None
    try:
        made = SecAggClient(config(3, 2), ME, IDENTITIES[ME], REGISTRY, SID,
                            policy=ClientPolicy(REGISTRY))
    except PolicyViolation:
        pass
    assert made is None


def test_a_reused_session_id_is_refused_with_a_ledger():
    ledger = SessionLedger()
    policy = ClientPolicy(REGISTRY)
    first = SecAggClient(config(10, 6), ME, IDENTITIES[ME], REGISTRY, SID, policy=policy,
                         ledger=ledger)
    assert first.advertise_keys()
    with counting_keys() as made, pytest.raises(PolicyViolation, match="was used before"):
        SecAggClient(config(10, 6), ME, IDENTITIES[ME], REGISTRY, SID, policy=policy,
                     ledger=ledger)
    assert not made
    SecAggClient(config(10, 6), ME, IDENTITIES[ME], REGISTRY, sid("another"), policy=policy,
                 ledger=ledger)  # a fresh id is fine
    restored = SessionLedger.of(ledger.started)  # e.g. persisted in the node's state
    with pytest.raises(PolicyViolation, match="was used before"):
        SecAggClient(config(10, 6), ME, IDENTITIES[ME], REGISTRY, SID, policy=policy,
                     ledger=restored)


def test_without_a_policy_the_client_trusts_the_group_it_is_given():
    """The in-process default: the registry is the group passed in (the runner enrolls the
    clients itself); the threshold rule still applies."""
    SecAggClient(config(3, 2), ME, IDENTITIES[ME], group(0, 1, 2), SID)
    with pytest.raises(PolicyViolation, match="t >= 6"):
        SecAggClient(unchecked_config(10, 5), ME, IDENTITIES[ME], REGISTRY, SID)


def test_the_runner_keeps_a_refusing_client_silent():
    """run_masked_sum(policies=...): a client whose policy refuses says nothing; the others
    complete without it."""
    cfg = SecAggConfig(num_clients=5, threshold=3, vector_length=D, modulus=Q)
    rng = np.random.default_rng(9)
    inputs = {c: rng.integers(0, Q, D, dtype=np.uint64) for c in range(5)}
    result = run_masked_sum(cfg, inputs, policies={4: ClientPolicy(REGISTRY)})  # other keys
    assert "not enrolled" in result.stats.client_aborts[4]
    assert result.included == frozenset(range(4))
    assert result.total.tolist() == [int(sum(int(inputs[c][j]) for c in range(4)) % Q)
                                     for j in range(D)]


# ------------------------------------------------------------------- the split attack
TRUSTED = group(0, 1, 2, 3)  # four enrolled clients, each of which trusts all four
PAIRS = [(0, 1), (2, 3)]


def run_session(cfg, members, policy_for, session_id, inputs):
    """An honest session over ``members``; each client's policy from ``policy_for(member)``.
    Returns the total the server learns."""
    proposed = group(*members)
    clients = {c: SecAggClient(cfg, c, IDENTITIES[c], proposed, session_id,
                               policy=policy_for(c)) for c in members}
    server = SecAggServer(cfg, proposed, session_id)
    out = None
    for step in STEPS:
        replies = {}
        for c in sorted(clients if out is None else out):
            args = () if out is None else (out[c],)
            replies[c] = getattr(clients[c], step)(*(args + ((inputs[c],) if step ==
                                                             "masked_input" else ())))
        out = getattr(server, step)(replies)
    return out


def _inputs():
    rng = np.random.default_rng(21)
    return {c: rng.integers(0, Q, D, dtype=np.uint64) for c in TRUSTED}


def _sum(inputs, ids):
    return [int(sum(int(inputs[c][j]) for c in ids) % Q) for j in range(D)]


def test_split_attack_learns_a_pairs_sum_when_the_client_trusts_the_servers_group():
    """What the old client effectively did: its registry was whatever group the server named.
    The server runs {0, 1} and {2, 3} as two sessions with n = 2, t = 2 (both valid configs) and
    learns x_0 + x_1 and x_2 + x_3, though each client trusts a group of four."""
    inputs = _inputs()
    cfg = config(2, 2)
    for pair in PAIRS:
        out = run_session(cfg, pair, lambda c, pair=pair: ClientPolicy(group(*pair)),
                          sid(f"pair-{pair}"), inputs)
        assert out.included == frozenset(pair)
        assert out.total.tolist() == _sum(inputs, pair)  # two inputs, no one else's


@pytest.mark.parametrize("min_clients", [3, 4])
def test_split_attack_is_refused_by_the_clients_own_policy(min_clients):
    """The same proposals against the clients' own policy (registry of four, min_clients > 2):
    every client refuses before making a key; the server gets nothing."""
    cfg = config(2, 2)
    for pair in PAIRS:
        for c in pair:
            with counting_keys() as made, pytest.raises(PolicyViolation, match="minimum"):
                SecAggClient(cfg, c, IDENTITIES[c], group(*pair), sid(f"pair-{pair}"),
                             policy=ClientPolicy(TRUSTED, min_clients=min_clients))
            assert not made
    # n = 2 stated for the whole trusted group, or n = 4 for a pair: inconsistent, refused too
    with pytest.raises(PolicyViolation, match="num_clients=2 but"):
        ClientPolicy(TRUSTED).check(config(2, 2), 0, TRUSTED)
    with pytest.raises(PolicyViolation, match="num_clients=4 but"):
        ClientPolicy(TRUSTED).check(config(4, 3), 0, group(0, 1))
    # control: the whole trusted group, honestly proposed, is accepted and sums all four
    inputs = _inputs()
    out = run_session(config(4, 3), sorted(TRUSTED),
                      lambda c: ClientPolicy(TRUSTED, min_clients=min_clients), sid("all"),
                      inputs)
    assert out.total.tolist() == _sum(inputs, TRUSTED)


def test_min_clients_is_what_stops_a_pair_split():
    """By its documented rule (proofs/client-policy.md) a policy accepts any sub-group of its
    registry whose size reaches min_clients and whose threshold is a majority of it: with the
    default min_clients=2 a server can still run a trusted pair as a session of two. Pinned so
    that a change of that default is a deliberate one."""
    ClientPolicy(TRUSTED).check(config(2, 2), 0, group(0, 1))
    assert ClientPolicy(TRUSTED).min_clients == 2


# ------------------------------------------------------------------- the rule, as a property
def _binomial_tail(k: int, p: Fraction, at_least: int) -> Fraction:
    return sum((Fraction(math.comb(k, i)) * p**i * (1 - p) ** (k - i)
                for i in range(max(at_least, 0), k + 1)), Fraction(0))


def documented_rule(cfg, me: int, proposed: dict, registry: dict, *, min_clients=2,
                    max_colluders=0, min_threshold_fraction=0.0, allow_secagg_plus=True,
                    corruption_rate=0.0, security_bits=40) -> bool:
    """Whether the client may join, from the rule in proofs/client-policy.md, in exact
    arithmetic (fractions are drawn so that f * group is exact in floating point)."""
    if me not in proposed or any(registry.get(c) != key for c, key in proposed.items()):
        return False
    n, t, k = len(proposed), cfg.threshold, cfg.neighbors
    if cfg.num_clients != n or n < min_clients:
        return False
    f = Fraction(min_threshold_fraction)
    if k is None or k >= n - 1:  # the complete graph
        return 2 * t - n > max_colluders and t >= math.ceil(f * n)
    if (not allow_secagg_plus or not (2 * t > k + 1 and t <= k) or t < math.ceil(f * (k + 1))
            or 2 * t - (k + 1) <= max_colluders):
        return False
    p, bound = Fraction(corruption_rate), Fraction(1, 2 ** (security_bits + 1))
    return n * p ** (k // 2) <= bound and n * _binomial_tail(k, p, 2 * t - k - 1) <= bound


@st.composite
def proposals(draw):
    members = draw(st.sets(st.sampled_from(range(REGISTRY_SIZE)), min_size=1)) | {ME}
    proposed = group(*members)
    plausible = draw(st.booleans())  # half the proposals: consistent, only (n, t, k) in doubt
    tweak = "none" if plausible else draw(st.sampled_from(
        ["none"] * 3 + ["stranger", "altered", "without_me"]))
    if tweak == "stranger":
        proposed[STRANGER] = IDENTITIES[STRANGER].public
    elif tweak == "altered":
        proposed[draw(st.sampled_from(sorted(proposed)))] = IDENTITIES[STRANGER + 1].public
    elif tweak == "without_me":
        proposed.pop(ME, None)
    size = len(proposed)
    n = max(size if plausible else draw(st.sampled_from([size, size - 1, size + 1])), 1)
    k = draw(st.none() | st.sampled_from([2, 4, 6, 8]))
    group_size = n if k is None else k + 1
    t = draw(st.integers(1, group_size) | st.integers(group_size // 2, group_size))  # near the
    # boundary, mostly
    cfg = unchecked_config(n, t, k)  # a server sends any numbers; SecAggConfig may refuse them
    options = {
        "min_clients": draw(st.integers(1, 4)),
        "max_colluders": draw(st.sampled_from([0, 0, 1, 2, 3])),
        "min_threshold_fraction": draw(st.sampled_from([0] * 4 + list(range(9)))) / 8,  # exact
        "allow_secagg_plus": draw(st.booleans()),
        "corruption_rate": draw(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.25])),
        "security_bits": draw(st.sampled_from([10, 20, 40])),
    }
    return cfg, proposed, options


@given(case=proposals())
def test_policy_accepts_exactly_what_the_documented_rule_allows(case):
    cfg, proposed, options = case
    expected = documented_rule(cfg, ME, proposed, REGISTRY, **options)
    policy = ClientPolicy(REGISTRY, **options)
    try:
        policy.check(cfg, ME, proposed)
        accepted = True
    except PolicyViolation:
        accepted = False
    event(f"{'accepted' if accepted else 'refused'}"
          f"{'' if cfg.neighbors is None else ' (SecAgg+)'}")
    assert accepted == expected, (cfg, sorted(proposed), options)
    if not accepted:
        with counting_keys() as made, pytest.raises(PolicyViolation):
            SecAggClient(cfg, ME, IDENTITIES[ME], proposed, SID, policy=policy)
        assert not made


def test_threshold_fraction_is_exact_for_decimal_fractions():
    registry = {c: IdentityKey(hashlib.sha256(b"client-policy/many/%d" % c).digest()).public
                for c in range(100)}
    """0.55 of 100 is 55: the fraction is taken as the decimal it was written as, not as the
    float 0.55000000000000004 (whose product with 100 would ask for 56)."""
    ClientPolicy(registry, min_threshold_fraction=0.55).check(config(100, 55), 0, registry)
    with pytest.raises(PolicyViolation, match=r"t >= 55 \(2t - 100 > 0 colluders, t >= 0.55"):
        ClientPolicy(registry, min_threshold_fraction=0.55).check(config(100, 54), 0, registry)
