"""The audit's checks of one session record, run without any client secret.

Every check takes the parsed :class:`~.transcript.Transcript` and returns a :class:`CheckResult`.
Their docstrings say what a pass proves. What no check can see:

* the server's outgoing messages (key lists, share relays, U3, signature lists): what each client
  was *shown* is known only through what its signed replies imply;
* client-side aborts: a client that refused the server's message looks like one that dropped;
* messages the server received but left out of its record, except where leaving them out breaks
  a threshold, the survivor chain or the consistency round;
* whether the server's total is the unmasked sum (the record does not hold the total), or what
  the server did with what it collected beyond the shares it was sent.

A record is the server's own account: signatures make the clients' messages unforgeable, so a
failing check shows a deviation, but a passing audit shows only that this record is consistent
with an honest run. The message checks judge every recorded message, whoever is at fault: a
message a network or a client corrupted, which an honest server rightly dropped, fails them too
(the server records what it received, rejected messages included).

An aborted session's record (its ``aborted`` reason set) goes through every check for the part
that exists: the message checks, duplicates, consistency, shares and uniformity as for any
session; ``thresholds`` and ``survivors`` by an abort's rules (it ended where the threshold
first failed, recorded nothing after, included nobody).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocols import messages as m
from ..protocols.config import STEPS, Step
from ..protocols.derivation import share_commitment
from .transcript import Transcript
from .uniformity import assess

SELF, MASK = m.ShareKind.SELF_MASK, m.ShareKind.MASK_KEY


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    summary: str
    details: tuple[str, ...] = ()  # one line per finding (failures) or per measurement
    values: dict = field(default_factory=dict)  # machine-readable numbers (p-values, counts)


def _message_check(name: str, t: Transcript, ok: str) -> CheckResult:
    bad = t.problems(name)
    details = tuple(f"{msg.where()}: {msg.problem[1]}" for msg in bad)
    summary = (f"{len(t.messages)} messages: {ok}" if not bad
               else f"{len(bad)} of {len(t.messages)} messages fail")
    return CheckResult(name, not bad, summary, details)


def check_signatures(t: Transcript, **_) -> CheckResult:
    """Every message is a well-framed gptfl-secure message whose Ed25519 signature verifies under
    the identity key of the enrolled client its header names (``messages.open_signed``).

    Proves: that client wrote those bytes, for the session id and round in its header; no byte of
    it (header, body) was altered. Cannot prove the message reached the server when recorded."""
    return _message_check("signatures", t, "each well framed and signed by an enrolled client")


def check_session_ids(t: Transcript, **_) -> CheckResult:
    """Every message's header carries the record's session id.

    Proves: no message was replayed from another session (the signature binds the id, so a
    replay cannot be re-labelled)."""
    return _message_check("session_ids", t, "each carries the record's session id")


def check_steps(t: Transcript, **_) -> CheckResult:
    """Every message's type is the one of the round it was recorded at.

    Proves: no message was moved to another round (the signature binds the type)."""
    return _message_check("steps", t, "each of the type its round takes")


def check_senders(t: Transcript, **_) -> CheckResult:
    """The sender the server recorded is the client whose signed header names it.

    Proves: the server did not attribute one client's message to another."""
    return _message_check("senders", t, "each recorded under its signer's id")


def check_duplicates(t: Transcript, **_) -> CheckResult:
    """No client has two messages at one round.

    Proves: no client answered a round twice (an honest client answers each round once; the
    server drops every message of a client that did), so no message was replayed within the
    session."""
    details = tuple(f"{step}: client {s} has "
                    f"{sum(1 for msg in t.messages if msg.step == step and msg.sender == s)} "
                    "messages" for step in STEPS for s in sorted(t.duplicated.get(step, ())))
    summary = ("at most one message per client and round" if not details
               else f"{len(details)} (round, client) pairs with several messages")
    return CheckResult("duplicates", not details, summary, details)


def check_bodies(t: Transcript, **_) -> CheckResult:
    """Every authentic message's body parses strictly for its type: two X25519 keys, neither of
    small order; share entries addressed to exactly the sender's group in U1; a vector of d
    entries in [0, q); a 32-byte digest; one share per peer, each a field element.

    Proves: each client message the record holds is one the server would have accepted, by the
    protocol's own parsers and rules. Cannot say whether the server did accept it."""
    return _message_check("bodies", t, "each body well formed")


def check_thresholds(t: Transcript, **_) -> CheckResult:
    """The threshold t held wherever the protocol requires it.

    * server rule, every round: at least t clients sent a valid message (the server aborts
      below t);
    * client rule, every round after the first: each client that answered saw at least t
      members of its group survive the previous round (an honest client aborts otherwise:
      |group & U1|, |group & U2|, |group & U3|, signers of U3 in its group, each >= t). With the
      complete graph the group is everyone and this is the server rule again; with SecAgg+ it is
      per neighbourhood;
    * reconstruction, at unmasking: for each u in U3 and each v in U2 \\ U3, at least t members
      of its group sent UNMASK (the server needs t shares to rebuild b_u or v's mask key).

    For an aborted session (the record's ``aborted`` reason) the server rule says where it
    ended: at the first round with fewer than t valid senders, or at unmasking when a secret
    could not be rebuilt (the reconstruction rule, or shares that do not open their
    commitments). The check then requires t valid senders in every round before that one, no
    message recorded after it (the server stopped there), the client rule for every round
    recorded, and the round named in the reason to be that round.

    Proves: the session met t in every round and neighbourhood, so each secret was t-out-of-
    group shared and rebuilt from t shares; an aborted session aborted where and because its
    messages say it had to. Cannot see what the server claimed to the clients."""
    cfg, details = t.cfg, []
    thr = cfg.threshold
    below = [step for step in STEPS if len(t.senders(step)) < thr]
    end = below[0] if below else None  # where an honest server stops
    shown = STEPS[: STEPS.index(end) + 1] if t.aborted and end else STEPS
    counts = [str(len(t.senders(step))) for step in shown]
    if t.aborted:
        details += _abort_findings(t, end, thr)
    else:
        details += [f"{step}: {len(t.senders(step))} clients sent a valid message, below t={thr}"
                    for step in below]
    for prev, step in zip(STEPS, STEPS[1:], strict=False):
        before = t.senders(prev)
        for c in sorted(t.senders(step)):
            seen = len(t.groups[c] & before)
            if seen < thr:
                details.append(f"{step}: client {c} answered though only {seen} of its group "
                               f"sent {prev}, below t={thr}")
    short = _reconstruction_shortfalls(t, thr)
    if not t.aborted:
        details += short
    summary = f"t={thr}; valid senders per round: " + ", ".join(counts)
    if t.aborted and end:
        summary += f"; aborted at {end} ({len(t.senders(end))} < t)"
        summary += " as the messages require" * (not details)
    elif t.aborted:
        summary += ("; aborted at unmasking: " + (f"fewer than t shares of {len(short)} secrets"
                    if short else "shares that do not rebuild a committed secret (see shares)"))
    else:
        summary += " (all >= t)" * (not details)
    return CheckResult("thresholds", not details, summary, tuple(details))


def _reconstruction_shortfalls(t: Transcript, thr: int) -> list[str]:
    """The reconstruction rule's failures: secrets of which fewer than t holders sent UNMASK."""
    u2, u3, u5 = (t.senders(s) for s in (Step.SHARE_KEYS, Step.MASKED_INPUT, Step.UNMASKING))
    out = []
    if u5:
        for owner in sorted(u2):
            holders = len(t.groups[owner] & u5)
            if holders < thr:
                what = "b_u" if owner in u3 else "mask key"
                out.append(f"unmasking: {holders} of client {owner}'s group revealed a "
                           f"share of its {what}, below t={thr}")
    return out


_ABORTED_AT = re.compile(r"aborted at (\w+)")


def _abort_findings(t: Transcript, end: Step | None, thr: int) -> list[str]:
    """What makes an aborted record inconsistent with an honest server's abort."""
    out = []
    said = _ABORTED_AT.search(t.aborted or "")
    said_step = said.group(1) if said else None
    if said_step is not None and said_step not in STEPS:
        out.append(f"the abort reason names no round of the protocol: {t.aborted!r}")
    where = end or Step.UNMASKING
    if said_step in STEPS and said_step != where:
        out.append(f"the record says the session aborted at {said_step}, but "
                   + (f"{end} is the first round with fewer than t={thr} valid senders"
                      if end else f"every round has at least t={thr} valid senders"))
    if end is None and "rebuilt" not in (t.aborted or ""):
        out.append(f"the record says the session aborted ({t.aborted!r}), but every round has "
                   f"at least t={thr} valid senders and the reason is not a failed "
                   "reconstruction")
    if end is not None:
        later = [msg for msg in t.messages if STEPS.index(msg.step) > STEPS.index(end)]
        if later:
            steps = sorted({msg.step for msg in later}, key=STEPS.index)
            out.append(f"{len(later)} messages recorded at {', '.join(steps)}, after the abort "
                       f"at {end} (an honest server stops there)")
    return out


def check_survivors(t: Transcript, **_) -> CheckResult:
    """Survivors only shrink: the senders of each round are among those of the previous round,
    and the record's included set is U3, the senders of a valid masked input (empty for an
    aborted session, which sums nothing).

    Proves: the server dealt each round only with clients that completed the previous one (it
    expects no one else), and summed exactly the inputs it received."""
    details = []
    for prev, step in zip(STEPS, STEPS[1:], strict=False):
        extra = t.senders(step) - t.senders(prev)
        if extra:
            details.append(f"{step}: clients {sorted(extra)} sent no valid {prev} message")
    u3, included = t.senders(Step.MASKED_INPUT), t.record.included
    if t.aborted and included:
        details.append(f"included {sorted(included)} in a session that aborted (it sums "
                       "nobody)")
    elif not t.aborted and included != u3:
        details.append(f"included {sorted(included)} is not U3 {sorted(u3)} (the senders of a "
                       "valid masked input)")
    summary = " >= ".join(str(len(t.senders(s))) for s in STEPS) + f"; included {len(included)}"
    return CheckResult("survivors", not details, summary, tuple(details))


def check_consistency(t: Transcript, **_) -> CheckResult:
    """Every valid CONSISTENCY message signs SHA-256 of one and the same U3, and that U3 is the
    set of clients whose valid masked input the record holds.

    Proves: every client that passed the consistency round was shown the same survivor list, the
    true one; so none was told a peer dropped while another was told it survived. Cannot tell
    what clients that did not sign were shown."""
    u3 = t.senders(Step.MASKED_INPUT)
    want = m.survivors_digest(m.ids_body(u3))
    signed = t.valid.get(Step.CONSISTENCY_CHECK, {})
    by_digest: dict[bytes, list[int]] = {}
    for c, msg in signed.items():
        by_digest.setdefault(msg.body, []).append(c)
    details = [f"clients {sorted(cs)} signed a U3 that is not the recorded one "
               f"(digest {d.hex()[:16]}...)" for d, cs in by_digest.items() if d != want]
    if len(by_digest) > 1:
        details.insert(0, f"the signers signed {len(by_digest)} different survivor lists")
    summary = f"{len(signed)} signatures on U3 of {len(u3)} clients"
    return CheckResult("consistency", not details, summary, tuple(details))


def check_shares(t: Transcript, **_) -> CheckResult:
    """Never both shares of one client. Over every authentic UNMASK message the server holds
    (dropped ones included):

    * no holder revealed a SELF_MASK share and a MASK_KEY share of the same peer;
    * no peer had SELF_MASK shares revealed by some holders and MASK_KEY shares by others (the
      trace of a split view: clients told different survivor lists);
    * SELF_MASK shares only of peers in U3 (their masked input arrived), MASK_KEY shares only of
      peers not in U3;
    * each holder revealed one share for exactly its group members in U2, as the server requires;
    * each revealed share opens the commitment its owner signed in its SHARES message for that
      holder under the kind it is labelled (so a label cannot hide the other kind).

    Proves: the server received no pair (b_v, mask key of v) shares from which it could unmask
    v's input alone. Cannot see shares the server obtained outside the record."""
    u2, u3 = t.senders(Step.SHARE_KEYS), t.senders(Step.MASKED_INPUT)
    commits = {}
    for msg in t.authentic(Step.SHARE_KEYS):
        for holder, e in msg.body.items():
            commits[(msg.header.sender, holder)] = {SELF: e.commit_self_mask,
                                                    MASK: e.commit_mask_key}
    details: list[str] = []
    revealed: dict[int, dict[m.ShareKind, set[int]]] = {}  # owner -> kind -> holders
    by_holder: dict[int, dict[int, set[m.ShareKind]]] = {}
    count = 0
    for msg in t.authentic(Step.UNMASKING):
        holder = msg.header.sender
        if set(msg.body) != t.groups[holder] & u2:
            details.append(f"client {holder} revealed shares of {sorted(msg.body)}, not of its "
                           f"group in U2 {sorted(t.groups[holder] & u2)}")
        for owner, (kind, share) in msg.body.items():
            count += 1
            revealed.setdefault(owner, {}).setdefault(kind, set()).add(holder)
            by_holder.setdefault(holder, {}).setdefault(owner, set()).add(kind)
            commit = commits.get((owner, holder))
            if commit is None:
                details.append(f"client {holder} revealed a share of {owner}, which sent it none")
            elif share_commitment(kind, t.record.session_id, owner, holder,
                                  share) != commit[kind]:
                details.append(f"client {holder}'s {kind.name} share of {owner} does not open "
                               "its owner's commitment")
    for holder, owners in sorted(by_holder.items()):
        for owner, kinds in sorted(owners.items()):
            if len(kinds) > 1:
                details.append(f"client {holder} revealed BOTH shares of client {owner}")
    for owner, kinds in sorted(revealed.items()):
        if SELF in kinds and MASK in kinds:
            details.append(f"split view: SELF_MASK shares of client {owner} from "
                           f"{sorted(kinds[SELF])}, MASK_KEY shares from {sorted(kinds[MASK])}")
        if MASK in kinds and owner in u3:
            details.append(f"MASK_KEY shares of client {owner}, whose masked input is in U3, "
                           f"from {sorted(kinds[MASK])}")
        if SELF in kinds and owner not in u3:
            details.append(f"SELF_MASK shares of client {owner}, not in U3, from "
                           f"{sorted(kinds[SELF])}")
    selfs = sum(1 for k in revealed.values() if SELF in k)
    masks = sum(1 for k in revealed.values() if MASK in k)
    summary = (f"{count} shares revealed: self-mask shares of {selfs} clients, mask-key shares "
               f"of {masks}")
    return CheckResult("shares", not details, summary, tuple(details))


def check_uniformity(t: Transcript, *, alpha: float = 1e-3, **_) -> CheckResult:
    """Each valid masked input looks uniform over Z_q (chi-square on the top bits, KS; Fisher
    across clients; Bonferroni at ``alpha``): see :mod:`.uniformity` for what it can and cannot
    prove."""
    vectors = {c: msg.body for c, msg in t.valid.get(Step.MASKED_INPUT, {}).items()}
    if not vectors:
        return CheckResult("uniformity", True, "no masked input to test")
    u = assess(vectors, t.cfg.modulus, t.record.session_id, alpha)

    def fmt(p: float | None) -> str:
        return "n/a" if p is None else f"{p:.3g}"

    details = [f"client {c}: chi-square p={fmt(chi)} KS p={fmt(ks)}"
               for c, (chi, ks) in u.per_client.items()]
    details += [f"BELOW THRESHOLD: {f}" for f in u.failing]
    summary = (f"{len(vectors)} masked inputs; Fisher p: chi-square {fmt(u.fisher_chi2)}, "
               f"KS {fmt(u.fisher_ks)}; reject below alpha/m = {u.threshold:.3g} "
               f"(alpha={alpha:g}, m={u.tests})")
    values = {"per_client": {c: {"chi2": chi, "ks": ks} for c, (chi, ks) in u.per_client.items()},
              "fisher_chi2": u.fisher_chi2, "fisher_ks": u.fisher_ks, "threshold": u.threshold}
    return CheckResult("uniformity", u.passed, summary, tuple(details), values)


CHECKS: tuple[tuple[str, Callable[..., CheckResult]], ...] = (
    ("signatures", check_signatures),
    ("session_ids", check_session_ids),
    ("steps", check_steps),
    ("senders", check_senders),
    ("duplicates", check_duplicates),
    ("bodies", check_bodies),
    ("thresholds", check_thresholds),
    ("survivors", check_survivors),
    ("consistency", check_consistency),
    ("shares", check_shares),
    ("uniformity", check_uniformity),
)
CHECK_NAMES = tuple(name for name, _ in CHECKS)
