"""A recorded transcript, parsed once: a verdict per message and the survivor set of each round.

Each message goes through the checks a server makes when it receives it, in this order, and the
first that fails is the message's problem (named after the audit check that reports it):

1. ``signatures``: the bytes are a well-framed gptfl-secure message;
2. ``steps``: its type is the one of the round it was recorded at;
3. ``session_ids``: its header carries the record's session id;
4. ``signatures``: its header names an enrolled client and the signature verifies under that
   client's identity key (``messages.open_signed``), under the session context for every round
   after the first (below). Passing 1-4 makes it *authentic*: that client wrote these bytes for
   this session, this round and, after ADVERTISE, this U1 with these advertisements;
5. ``senders``: the transport-level sender the server recorded is the client the header names;
6. ``bodies``: the body parses strictly for its type, with the server's own extra rules (no
   small-order X25519 key; SHARES addressed to exactly the sender's group in U1).

As the server does, a sender with two or more messages at one round (``duplicates``) has all of
them dropped. The messages left form the survivor sets U1..U5 (one per round, :data:`STEPS`
order). Authentic UNMASK messages are kept even when dropped: the server holds their shares
whatever it did with them next.

The session context (wire v2, ``messages.session_context``) is derived from the record exactly as
the honest server derives it in ``SecAggServer.advertise_keys``: U1 is the set of senders of
exactly one recorded ADVERTISE message (``_collect``: a sender heard twice is dropped, whatever
its first message was), that message well framed, signed by the sender it was recorded under
and with a well-formed body; the context hashes the session id and the digest
(``messages.advert_digest``) of each U1 member's ADVERTISE bytes. Every later message is verified
under that context, so a message signed for another U1, for other advertisements or in another
session fails ``signatures`` even when the session id matches. Rounds are parsed in order, since
each needs the one before. One thing the record cannot show: the server does not keep a message
over its round's size bound (``server.max_message_bytes``) or one that is not bytes, but counts
it as heard; a client that sent such a message and a valid ADVERTISE is out of the honest
server's U1 and in the auditor's, and then every later signature fails under the auditor's
context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocols import crypto, shamir
from ..protocols import messages as m
from ..protocols.config import STEPS, SecAggConfig, Step
from ..protocols.errors import MessageError
from ..protocols.graph import neighbours, public_seed
from ..protocols.recording import SessionRecord

STEP_TYPES: dict[Step, m.MsgType] = {
    Step.ADVERTISE_KEYS: m.MsgType.ADVERTISE,
    Step.SHARE_KEYS: m.MsgType.SHARES,
    Step.MASKED_INPUT: m.MsgType.MASKED_INPUT,
    Step.CONSISTENCY_CHECK: m.MsgType.CONSISTENCY,
    Step.UNMASKING: m.MsgType.UNMASK,
}
_HEADER = m._HEADER  # the wire header layout, documented in messages.py


@dataclass(frozen=True)
class Header:
    type: int
    session_id: bytes
    sender: int


@dataclass
class Message:
    """One recorded message and what the audit made of it."""

    index: int  # position in the transcript
    step: Step
    sender: int  # the transport-level sender the server recorded
    data: bytes
    header: Header | None = None
    problem: tuple[str, str] | None = None  # (check name, reason), the first check it fails
    authentic: bool = False  # a valid signature of the header's sender, this session and round
    body: object = None  # the parsed body, when it parses

    def where(self) -> str:
        return f"message #{self.index} ({self.step}, from {self.sender})"


@dataclass
class Transcript:
    """A parsed record: ``valid[step][sender]`` holds each round's surviving messages."""

    record: SessionRecord
    messages: list[Message]
    groups: dict[int, frozenset[int]]  # every enrolled client's group, itself included
    valid: dict[Step, dict[int, Message]] = field(default_factory=dict)
    duplicated: dict[Step, frozenset[int]] = field(default_factory=dict)
    digests: dict[int, bytes] = field(default_factory=dict)  # U1 -> its advertisement digest
    context: bytes = b""  # the session context every message after ADVERTISE is signed under

    @property
    def aborted(self) -> str | None:
        return self.record.aborted

    @property
    def cfg(self) -> SecAggConfig:
        return self.record.config

    def senders(self, step: Step) -> frozenset[int]:
        """The round's survivors: senders of one valid message at ``step``."""
        return frozenset(self.valid.get(step, {}))

    def problems(self, check: str) -> list[Message]:
        return [msg for msg in self.messages if msg.problem and msg.problem[0] == check]

    def authentic(self, step: Step) -> list[Message]:
        """Every authentic message of ``step`` whose body parsed, dropped ones included."""
        return [msg for msg in self.messages
                if msg.step == step and msg.authentic and msg.body is not None]


def peek_header(data: bytes) -> Header | None:
    """The header fields, or None when the bytes do not start with a gptfl-secure header."""
    if len(data) < _HEADER.size:
        return None
    magic, version, type_, sid, sender, _ = _HEADER.unpack_from(data)
    if magic != m.MAGIC or version != m.VERSION:
        return None
    return Header(type_, sid, sender)


def groups_of(record: SessionRecord) -> dict[int, frozenset[int]]:
    """Each client's group as every party derives it: itself and its neighbours in the graph
    over the enrolled clients (everyone, for the complete graph)."""
    enrolled = frozenset(record.identity_keys)
    seed = public_seed(record.session_id, enrolled)
    return {c: p | {c} for c, p in neighbours(enrolled, record.config.neighbors, seed).items()}


def _authenticate(msg: Message, record: SessionRecord, context: bytes) -> None:
    expected = STEP_TYPES[msg.step]
    header = msg.header = peek_header(msg.data)
    if header is None:
        msg.problem = ("signatures", "not a gptfl-secure message (bad length, magic or version)")
        return
    if header.type != expected:
        try:
            name = m.MsgType(header.type).name
        except ValueError:
            name = f"type-{header.type}"
        msg.problem = ("steps", f"a {name} message recorded at {msg.step}, which takes "
                                f"{expected.name}")
        return
    if header.session_id != record.session_id:
        msg.problem = ("session_ids", f"header session id {header.session_id.hex()[:16]}... is "
                                      "not the record's (a message from another session)")
        return
    try:
        m.open_signed(msg.data, expected, record.session_id, record.identity_keys,
                      b"" if msg.step == Step.ADVERTISE_KEYS else context)
    except MessageError as exc:
        msg.problem = ("signatures", str(exc))
        return
    msg.authentic = True
    if header.sender != msg.sender:
        msg.problem = ("senders", f"signed by client {header.sender}, recorded as sent by "
                                  f"{msg.sender}")


def _parse_body(msg: Message, t: Transcript) -> None:
    cfg = t.cfg
    env = m.open_envelope(msg.data, STEP_TYPES[msg.step], t.record.session_id)
    owner = env.sender
    try:
        if msg.step == Step.ADVERTISE_KEYS:
            keys = m.read_advertise(env.body)
            if any(crypto.is_low_order(k) for k in keys):
                raise MessageError("advertised a small-order X25519 key")
            msg.body = keys
        elif msg.step == Step.SHARE_KEYS:
            _, entries = m.read_shares(env.body)
            want = t.groups[owner] & t.senders(Step.ADVERTISE_KEYS)
            if set(entries) != want:
                raise MessageError(f"addressed to {sorted(entries)}, not to the sender's group "
                                   f"in U1 {sorted(want)}")
            for v, e in entries.items():
                if (v == owner) != (e.ciphertext == b""):
                    raise MessageError("a ciphertext for each peer, none for the sender itself")
            msg.body = entries
        elif msg.step == Step.MASKED_INPUT:
            msg.body = m.read_vector(env.body, cfg.vector_length, cfg.modulus,
                                     cfg.element_bytes)
        elif msg.step == Step.CONSISTENCY_CHECK:
            if len(env.body) != len(m.survivors_digest(b"")):
                raise MessageError(f"a {len(env.body)}-byte body, not a SHA-256 digest")
            msg.body = bytes(env.body)
        else:
            entries = m.read_unmask(env.body)
            for v, (_, share) in entries.items():
                if int.from_bytes(share, "big") >= shamir.PRIME:
                    raise MessageError(f"share of peer {v} is not a field element")
            msg.body = entries
    except MessageError as exc:
        msg.body = None
        if msg.problem is None:
            msg.problem = ("bodies", str(exc))


def parse(record: SessionRecord) -> Transcript:
    """Check every message of ``record`` and derive the survivor set of every round."""
    messages = [Message(i, e.step, e.sender, e.data) for i, e in enumerate(record.transcript)]
    t = Transcript(record, messages, groups_of(record))
    for step in STEPS:  # in round order: the session context and SHARES addressing need U1
        at_step = [msg for msg in messages if msg.step == step]
        for msg in at_step:
            _authenticate(msg, record, t.context)
        counts: dict[int, int] = {}
        for msg in at_step:
            counts[msg.sender] = counts.get(msg.sender, 0) + 1
        t.duplicated[step] = frozenset(s for s, c in counts.items() if c > 1)
        for msg in at_step:
            if msg.authentic:
                _parse_body(msg, t)
        t.valid[step] = {msg.sender: msg for msg in at_step
                         if msg.problem is None and msg.sender not in t.duplicated[step]}
        if step == Step.ADVERTISE_KEYS:  # as SecAggServer.advertise_keys derives it
            t.digests = {c: m.advert_digest(msg.data)
                         for c, msg in sorted(t.valid[step].items())}
            t.context = m.session_context(record.session_id, t.digests)
    return t
