"""Deliberately weakened clients: the explorer must find a violation against each.

1. ``NoSessionBinding``: the session context is SHA-256 of the session id alone, so signatures
   and share ciphertexts verify across sessions under a reused id and across different key lists.
2. ``WeakThreshold``: no threshold rule: it accepts t <= n/2 (an unchecked SecAggConfig).
3. ``RevealsBoth``: at unmasking it also reveals the self-mask share of every peer it was told
   dropped (two entries for one peer).
4. ``NoConsistencyCheck``: unmasks without verifying any consistency signature.
5. ``TrustsConfigSize``: checks the threshold against ``cfg.num_clients`` and never compares it
   with the group it is given, so a server can offer n=2, t=2 to a trusted group of 4.
6. ``CountsDuplicateSigners``: counts a repeated consistency signature once per copy.
7. ``AcceptsU3WithNonsharers``: skips "U3 holds group members that never shared keys", so its U3
   can agree with everyone else's while its masked input carries fewer pairwise masks.
8. ``NoLedger``: ignores its SessionLedger, so it joins a second session under a used id (and,
   resubmitting its input there, lets a regrouping server difference the sums).

``REDUNDANT`` holds weakened clients that cannot lead to a violation while the client's other
checks stand (defence in depth): each class docstring says why. The explorer does not count them;
the short profile runs them and the test asserts none is "caught" (a catch would mean the reason
is wrong). Every mutant except the first five is made by :func:`_weakened`, which edits the real
method's source, so a mutant tracks the real client and fails loudly when the edited line moves.
"""

from __future__ import annotations
import __future__

import hashlib
import inspect
import textwrap
from dataclasses import dataclass
from unittest import mock

from gptfl_secure.protocols import ClientPolicy, PolicyViolation, SecAggClient, shamir
from gptfl_secure.protocols import client as client_module
from gptfl_secure.protocols import messages as m
from gptfl_secure.protocols.policy import majority_threshold


@dataclass(frozen=True)
class _LaxPolicy(ClientPolicy):
    size_from_config: bool = False  # mutant 5
    any_threshold: bool = False  # mutant 2

    def check(self, cfg, client_id, session_keys) -> None:
        for cid, key in session_keys.items():
            if self.trusted_keys.get(cid) != key:
                raise PolicyViolation(f"client {cid} not enrolled")
        n = cfg.num_clients if self.size_from_config else len(session_keys)
        if not self.size_from_config and cfg.num_clients != n:
            raise PolicyViolation("num_clients differs from the group")
        group = n if cfg.neighbors is None or cfg.neighbors >= n - 1 else cfg.neighbors + 1
        if not self.any_threshold and cfg.threshold < majority_threshold(group):
            raise PolicyViolation("threshold too low")


class NoSessionBinding(SecAggClient):
    def share_keys(self, key_list: bytes) -> bytes:
        def weak(session_id, digests):
            return hashlib.sha256(b"no-binding" + session_id).digest()
        with mock.patch.object(m, "session_context", weak):
            return super().share_keys(key_list)


class WeakThreshold(SecAggClient):
    def __init__(self, cfg, client_id, identity, identity_keys, session_id, **kw):
        kw["policy"] = _LaxPolicy(dict(identity_keys), any_threshold=True)
        super().__init__(cfg, client_id, identity, identity_keys, session_id, **kw)


class TrustsConfigSize(SecAggClient):
    def __init__(self, cfg, client_id, identity, identity_keys, session_id, **kw):
        kw["policy"] = _LaxPolicy(dict(identity_keys), size_from_config=True)
        super().__init__(cfg, client_id, identity, identity_keys, session_id, **kw)


class NoConsistencyCheck(SecAggClient):
    def unmasking(self, signatures: bytes) -> bytes:
        self._enter("unmasking")
        entries = [(v, *self._reveal(v)) for v in sorted(self._held)]
        out = self._seal(m.MsgType.UNMASK, m.unmask_body(entries))
        self._abort()
        return out

    def _reveal(self, v):
        kind, share = self._held[v].reveal()
        return kind, shamir.to_bytes(share)


class RevealsBoth(SecAggClient):
    def consistency_check(self, survivors: bytes) -> bytes:
        self._kept = {v: h._self_mask for v, h in self._held.items()}
        return super().consistency_check(survivors)

    def unmasking(self, signatures: bytes) -> bytes:
        dropped = [v for v, h in self._held.items() if h.fate.value == "dropped"]
        out = super().unmasking(signatures)
        env = m.open_envelope(out, m.MsgType.UNMASK, self.session_id)
        body = bytes(env.body)
        extra = [(v, m.ShareKind.SELF_MASK, shamir.to_bytes(self._kept[v])) for v in dropped]
        count = int.from_bytes(body[:4], "big") + len(extra)
        body = count.to_bytes(4, "big") + body[4:] + b"".join(
            m._UNMASK_ENTRY.pack(p, k, s) for p, k, s in extra)
        return self._seal(m.MsgType.UNMASK, body)


def _weakened(method, *edits: tuple[str, str]):
    """``method`` recompiled from its source with each (old, new) edit; each old text must occur
    exactly once (else the real client changed and the mutant must be rewritten)."""
    src = textwrap.dedent(inspect.getsource(method))
    for old, new in edits:
        if src.count(old) != 1:
            raise AssertionError(f"mutant edit of {method.__qualname__} no longer applies: {old!r}")
        src = src.replace(old, new)
    ns: dict = {}
    code = compile(src, f"<mutant of {method.__qualname__}>", "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, vars(client_module), ns)  # noqa: S102 - the real client's own source, edited
    return ns[method.__name__]


_C = SecAggClient


class CountsDuplicateSigners(SecAggClient):
    """Counts every copy of a signature: one honest signer repeated t times passes unmasking."""

    unmasking = _weakened(
        _C.unmasking,
        ("signers: set[int] = set()", "signers: list[int] = []"),
        (" or env.sender in signers:", ":"),
        ("signers.add(env.sender)", "signers.append(env.sender)"),
        ('self._require(step, frozenset(signers), "signed U3")',
         'if len(signers) < self.cfg.threshold:\n'
         '            raise self._fail(step, "server", "too few signatures")'))


class AcceptsU3WithNonsharers(SecAggClient):
    """Signs a U3 naming group members whose shares it never received (not in its U2)."""

    consistency_check = _weakened(
        _C.consistency_check, ("if not (u3 & self._group) <= self._shared:", "if False:"))


class NoLedger(SecAggClient):
    """Never claims its session id in the ledger: it joins a used id again."""

    def __init__(self, cfg, client_id, identity, identity_keys, session_id, **kw):
        kw["ledger"] = None
        super().__init__(cfg, client_id, identity, identity_keys, session_id, **kw)


# ------------------------------------------------------------------ redundant (not gated)
class IgnoresOwnDigest(SecAggClient):
    """Skips "key list lists another advertisement for me". Redundant: it is in U1 (checked) and
    in its own group, so ``set(advertised) == group & U1`` forces its own advertisement into the
    list; that must be byte-equal to the one it sent ("my own advertisement was altered"), and
    every listed advertisement must match its listed digest, so its own listed digest is that of
    its own fresh advertisement anyway: the context cannot be an old session's."""

    share_keys = _weakened(
        _C.share_keys, ("if digests[self.id] != m.advert_digest(self._own_advert):", "if False:"))


class IgnoresAdvertDigests(SecAggClient):
    """Skips "advertisement does not match its listed digest", so its context no longer binds
    its peers' advertisements (its own digest is still checked). Redundant: a peer's keys are
    used only for a peer in U2 (masks, held shares) or to encrypt my shares to it. A peer is in
    U2 only if its ciphertext opened under AD = my context with the key from the advertisement I
    hold for it: the sender instance computed my context (whose entry for it is its own
    advertisement's digest, which it checks), and the X25519 secrets match only if the
    advertisement I hold is that very instance's. My shares encrypted to a mismatched
    advertisement open only for an instance with my context, i.e. the listed one, which does not
    hold that key. Signers are bound to my context, where each id's only possible signer is the
    instance whose digest is listed. So every effective view is a consistent one; a colluder's
    instances are fully known whichever is used."""

    share_keys = _weakened(
        _C.share_keys, ("if digests.get(env.sender) != m.advert_digest(raw):", "if False:"))


class AeadWithoutContext(SecAggClient):
    """Share ciphertexts' AD omits the context (seal and open). Redundant while signatures bind
    the context and contexts bind every advertisement: the t signers of my U3 share my context,
    hence my exact key list, so they hold each other's shares (whatever the AEAD binds); a
    surviving partner p in U3 is protected by p and the other t - 1 signers, leaving at most
    n - t < t holders (2t > n + T) to reveal p's mask key, and my b_u is likewise withheld by
    them; shares exchanged with instances of other contexts only concern partners the signers'
    common U3 declares dropped, whose mask keys the honest server learns too. (An argument, not
    a proof; no schedule of the families, including cross-session-mix, finds a violation.)"""

    share_keys = _weakened(
        _C.share_keys, ("self.session_id, self.id, v, self._context))",
                        "self.session_id, self.id, v, b\"\"))"))
    masked_input = _weakened(
        _C.masked_input, ("self.session_id, v, self.id, self._context))",
                          "self.session_id, v, self.id, b\"\"))"))


class CountsSignersOutsideU3(SecAggClient):
    """Counts any valid signer of its U3 in its context, also one outside U3 or its group.
    Redundant on the complete graph (group = everyone): an honest client never signs a U3 that
    leaves it out, so only colluders can sign from outside U3, and the server can instead relay
    the colluders' shares to everyone and put them in every U3, which changes only masks and
    shares it already knows. NOT shown redundant for SecAgg+ with k >= 4, where honest
    non-neighbours in U3 could stand in for neighbours (outside this bounded space: k=2, t=2
    leaves a surviving partner's mask key to one holder < t)."""

    unmasking = _weakened(
        _C.unmasking,
        ("if env.sender not in self._survivors & self._group or env.sender in signers:",
         "if env.sender in signers:"),
        ('self._require(step, frozenset(signers), "signed U3")',
         'if len(signers) < self.cfg.threshold:\n'
         '            raise self._fail(step, "server", "too few signatures")'))


class AcceptsU3WithoutItself(SecAggClient):
    """Skips "survivor list leaves me out". Redundant: its own signature then does not count (the
    signers must be in U3), t signers in its context sign that U3, and any two U3s accepted in one
    context share an honest signer (2t - n > T), who signs one U3 only; its shares are held only
    by instances of its context (AEAD). So every honest holder agrees it dropped: b_u is never
    revealed and its masked input stays masked, as when a client drops after masked_input."""

    consistency_check = _weakened(
        _C.consistency_check, ("if self.id not in u3:", "if False:"))


class AcceptsU3BelowThreshold(SecAggClient):
    """Skips the t-in-U3 check when signing. Redundant: signing reveals no secret, and unmasking
    still needs t signers from U3 & group, so a U3 with fewer than t group members never gets
    any share revealed."""

    consistency_check = _weakened(
        _C.consistency_check, ('self._require(step, u3, "in U3")', "pass"))


MUTANTS = {
    "no-session-binding": NoSessionBinding,
    "accepts-t<=n/2": WeakThreshold,
    "reveals-both-shares": RevealsBoth,
    "skips-consistency-check": NoConsistencyCheck,
    "trusts-config-size": TrustsConfigSize,
    "counts-duplicate-signers": CountsDuplicateSigners,
    "accepts-u3-with-nonsharers": AcceptsU3WithNonsharers,
    "no-ledger": NoLedger,
}

REDUNDANT = {
    "ignores-own-digest": IgnoresOwnDigest,
    "ignores-advert-digests": IgnoresAdvertDigests,
    "aead-without-context": AeadWithoutContext,
    "counts-signers-outside-u3": CountsSignersOutsideU3,
    "accepts-u3-without-itself": AcceptsU3WithoutItself,
    "accepts-u3-below-threshold": AcceptsU3BelowThreshold,
}
