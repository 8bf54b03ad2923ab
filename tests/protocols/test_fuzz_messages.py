"""Fuzzing every wire decoder of the masked-sum protocol (gptfl_secure.protocols.messages).

Each test starts from VALID encodings (built by the matching body builders from hypothesis-drawn
content, or recorded from a real, deterministic session) and mutates them: truncation at any
point, bit flips, byte insertion and deletion, appended garbage, u32 fields overwritten with
oversized lengths and entry counts (2^32 - 1, MAX_ENTRIES + 1, ...), header fields replaced
(magic, version, type, session id, sender, body length), or the whole message replaced by random
bytes. The claims, for every decoder:

* it raises :class:`MessageError` and nothing else, or it parses;
* a successful parse is correct: the parsed value re-encodes to the very bytes that were parsed
  (every encoding is canonical, except a relay's entry order, checked by decode-encode-decode);
* a client's message whose signature verifies is byte-for-byte the message that was signed;
* every call returns within a second (in practice microseconds): no hang, no super-linear work.

Case counts follow the hypothesis profile (tests/conftest.py); no test raises max_examples.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from gptfl_secure.protocols import (
    STEPS,
    IdentityKey,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    shamir,
)
from gptfl_secure.protocols import messages as m
from gptfl_secure.protocols.errors import MessageError

from .seeded import deterministic_randomness

TIME_LIMIT_S = 1.0  # per decoder call; real calls take microseconds
SID = hashlib.sha256(b"fuzz-messages/session").digest()
OTHER_SID = hashlib.sha256(b"fuzz-messages/other-session").digest()
CTX = hashlib.sha256(b"fuzz-messages/session-context").digest()  # signs every later message
OTHER_CTX = hashlib.sha256(b"fuzz-messages/other-session-context").digest()
N_IDENTITIES = 6
IDENTITIES = {i: IdentityKey(hashlib.sha256(b"fuzz-identity/%d" % i).digest())
              for i in range(N_IDENTITIES)}
PUBLIC = {i: k.public for i, k in IDENTITIES.items()}
HEADER = m._HEADER.size
U32_MAX = 2**32 - 1
# Oversized lengths and entry counts, and values just around the limits the parser checks.
EXTREME_U32 = (U32_MAX, U32_MAX - 1, 2**31, 2**31 - 1, m.MAX_ENTRIES, m.MAX_ENTRIES + 1,
               2**24, 0x01010101, 0)


# ------------------------------------------------------------------- helpers
def timed(fn, *args):
    """``fn(*args)``: its value, or the MessageError it raised. Any other exception escapes
    (and fails the test); so does a call slower than TIME_LIMIT_S."""
    start = time.perf_counter()
    try:
        out = fn(*args)
    except MessageError as exc:
        out = exc
    elapsed = time.perf_counter() - start
    name = getattr(fn, "__name__", repr(fn))
    assert elapsed < TIME_LIMIT_S, f"{name} took {elapsed:.3f} s"
    if currently_in_test_context():
        event(f"{name}: {'MessageError' if isinstance(out, MessageError) else 'parsed'}")
    return out




# ------------------------------------------------------------------- mutations
MUTATIONS = ("truncate", "flip", "insert", "delete", "append", "u32", "replace")


@st.composite
def mutated(draw, data: bytes, min_ops: int = 1, max_ops: int = 4, ops=MUTATIONS) -> bytes:
    """``data`` after 1-4 hypothesis-chosen mutations."""
    out = bytearray(data)
    for _ in range(draw(st.integers(min_ops, max_ops))):
        op = draw(st.sampled_from(ops))
        n = len(out)
        if op == "truncate":
            del out[draw(st.integers(0, max(n - 1, 0))):]
        elif op == "flip" and n:
            for _ in range(draw(st.integers(1, 3))):
                out[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            pos = draw(st.integers(0, n))
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            start = draw(st.integers(0, n - 1))
            del out[start : draw(st.integers(start + 1, min(n, start + 40)))]
        elif op == "append":
            out += draw(st.binary(min_size=1, max_size=64))
        elif op == "u32" and n >= 4:
            pos = draw(st.integers(0, n - 4))
            rest = n - pos - 4  # a length "just right", or just off, for the bytes that follow
            value = draw(st.sampled_from(EXTREME_U32) | st.integers(0, U32_MAX)
                         | st.integers(max(rest - 8, 0), rest + 8))
            out[pos : pos + 4] = value.to_bytes(4, "big")
        elif op == "replace":
            out = bytearray(draw(st.binary(max_size=512)))
    return bytes(out)


# ------------------------------------------------------------------- valid bodies
u32s = st.integers(0, U32_MAX)
ids_sets = st.frozensets(u32s, max_size=24)
blobs = st.binary(max_size=160)
share_bytes = st.integers(0, shamir.PRIME - 1).map(shamir.to_bytes) | st.binary(min_size=33,
                                                                                max_size=33)

MODULI = (2, 7, 2**16, 2**32, 1_000_003, 2**61 - 1, 2**62)


@st.composite
def vector_cases(draw):
    """(body, d, modulus, element_bytes) of a valid masked input."""
    q = draw(st.sampled_from(MODULI))
    d = draw(st.integers(1, 24))
    eb = 4 if q <= 2**32 else 8
    y = np.array(draw(st.lists(st.integers(0, q - 1), min_size=d, max_size=d)), dtype=np.uint64)
    return m.vector_body(y, eb), d, q, eb


@st.composite
def share_entry_lists(draw):
    recipients = draw(st.lists(u32s, unique=True, max_size=8))
    return [m.ShareEntry(r, draw(st.binary(min_size=32, max_size=32)),
                         draw(st.binary(min_size=32, max_size=32)), draw(blobs))
            for r in recipients]


def context_of(type_: m.MsgType, context: bytes = CTX) -> bytes:
    """The context a client signs ``type_`` under: none for ADVERTISE, the session's after."""
    return b"" if type_ is m.MsgType.ADVERTISE else context


@st.composite
def key_list_cases(draw):
    """(U1, its listed advertisement digests, advertisement blobs) of a valid key list body."""
    u1 = draw(ids_sets)
    digests = {i: draw(st.binary(min_size=m.DIGEST_BYTES, max_size=m.DIGEST_BYTES))
               for i in sorted(u1)}
    return u1, draw(st.lists(blobs, max_size=8)), digests


def _reencode_key_list(parsed) -> bytes:
    u1, digests, adverts = parsed
    return m.key_list_body(u1, adverts, digests)


def _unmask_body(entries: dict) -> bytes:
    return m.unmask_body([(p, k, s) for p, (k, s) in entries.items()])


def _reencode_shares(parsed) -> bytes:
    commitment, entries = parsed
    return m.shares_body(commitment, list(entries.values()))


class Body:
    """A body decoder, a strategy of valid bodies for it, and its canonical re-encoder."""

    def __init__(self, name, valid, decode, reencode):
        self.name, self.valid, self.decode, self.reencode = name, valid, decode, reencode

    def __repr__(self) -> str:
        return self.name


BODIES = [
    Body("read_ids", ids_sets.map(m.ids_body), m.read_ids, m.ids_body),
    Body("read_key_list", key_list_cases().map(lambda a: m.key_list_body(*a)), m.read_key_list,
         _reencode_key_list),
    Body("read_advertise", st.tuples(st.binary(min_size=32, max_size=32),
                                     st.binary(min_size=32, max_size=32)).map(
        lambda a: m.advertise_body(*a)), m.read_advertise, lambda p: m.advertise_body(*p)),
    Body("read_list", st.lists(blobs, max_size=10).map(m.list_body), m.read_list, m.list_body),
    Body("read_shares", st.tuples(st.binary(min_size=32, max_size=32), share_entry_lists()).map(
        lambda a: m.shares_body(*a)), m.read_shares, _reencode_shares),
    Body("read_relay", st.dictionaries(u32s, blobs, max_size=8).map(m.relay_body), m.read_relay,
         None),  # relay entries may come in any order: checked by decode-encode-decode
    Body("read_unmask", st.dictionaries(u32s, st.tuples(st.sampled_from(m.ShareKind),
                                                        share_bytes), max_size=8).map(
        _unmask_body), m.read_unmask, _unmask_body),
]
BODY_IDS = [b.name for b in BODIES]


def check_body_parse(body: Body, data: bytes, as_view: bool) -> None:
    """Decode ``data``: MessageError or a correct parse, in bounded time."""
    out = timed(body.decode, memoryview(data) if as_view else data)
    if isinstance(out, MessageError):
        return
    if body.reencode is not None:
        assert body.reencode(out) == data, f"{body.name} accepted a non-canonical body"
    else:  # read_relay
        assert body.decode(m.relay_body(out)) == out


def check_vector_parse(data: bytes, d: int, q: int, eb: int, as_view: bool) -> None:
    out = timed(m.read_vector, memoryview(data) if as_view else data, d, q, eb)
    if isinstance(out, MessageError):
        return
    assert out.shape == (d,) and int(out.max()) < q
    assert m.vector_body(out, eb) == data


# ------------------------------------------------------------------- body decoders
@pytest.mark.parametrize("body", BODIES, ids=BODY_IDS)
@given(data=st.data(), as_view=st.booleans())
def test_body_decoder_on_mutated_valid_body(body, data, as_view):
    valid = data.draw(body.valid, label="valid body")
    check_body_parse(body, valid, as_view)  # the starting point parses and round-trips
    assert not isinstance(body.decode(valid), MessageError)
    check_body_parse(body, data.draw(mutated(valid), label="mutated"), as_view)


@pytest.mark.parametrize("body", BODIES, ids=BODY_IDS)
@given(data=st.data(), as_view=st.booleans())
def test_body_decoder_on_oversized_length_fields(body, data, as_view):
    """Any u32 of a valid body (a count, a blob length, an id) set to an extreme value."""
    valid = bytearray(data.draw(body.valid, label="valid body"))
    if len(valid) < 4:
        valid = bytearray(4)
    pos = data.draw(st.integers(0, len(valid) - 4), label="offset")
    valid[pos : pos + 4] = data.draw(st.sampled_from(EXTREME_U32)).to_bytes(4, "big")
    check_body_parse(body, bytes(valid), as_view)


@pytest.mark.parametrize("body", BODIES, ids=BODY_IDS)
@given(raw=st.binary(max_size=2048), as_view=st.booleans())
def test_body_decoder_on_random_bytes(body, raw, as_view):
    check_body_parse(body, raw, as_view)


@given(case=vector_cases(), data=st.data(), as_view=st.booleans())
def test_read_vector_on_mutated_valid_body(case, data, as_view):
    valid, d, q, eb = case
    check_vector_parse(valid, d, q, eb, as_view)
    check_vector_parse(data.draw(mutated(valid), label="mutated"), d, q, eb, as_view)


@given(case=vector_cases(), data=st.data())
def test_read_vector_with_a_wrong_length_or_out_of_range_entry(case, data):
    """A masked input announcing another length, or holding an entry >= q (or any u32 set to an
    extreme value): rejected, never mis-read."""
    valid, d, q, eb = case
    raw = bytearray(valid)
    pos = data.draw(st.integers(0, len(raw) - 4))
    raw[pos : pos + 4] = data.draw(st.sampled_from(EXTREME_U32) | st.integers(0, 64)).to_bytes(
        4, "big")
    check_vector_parse(bytes(raw), d, q, eb, data.draw(st.booleans()))
    if q < 2 ** (8 * eb):  # an entry that does not fit the modulus
        y = np.frombuffer(valid, dtype="<u4" if eb == 4 else "<u8", offset=4).copy()
        y[data.draw(st.integers(0, d - 1))] = data.draw(st.integers(q, 2 ** (8 * eb) - 1))
        with pytest.raises(MessageError, match="out of range"):
            m.read_vector(m.vector_body(y, eb), d, q, eb)


@given(raw=st.binary(max_size=2048), d=st.integers(0, 64), q=st.sampled_from(MODULI))
def test_read_vector_on_random_bytes(raw, d, q):
    check_vector_parse(raw, d, q, 4 if q <= 2**32 else 8, False)


def _sample_bodies() -> dict[str, bytes]:
    adverts = [m.seal(m.MsgType.ADVERTISE, SID, i, bytes(64), IDENTITIES[i]) for i in range(3)]
    return {
        "read_ids": m.ids_body([0, 3, 7, 2**32 - 2]),
        "read_key_list": m.key_list_body([0, 1, 2], adverts),
        "read_advertise": m.advertise_body(bytes(range(32)), bytes(range(32, 64))),
        "read_list": m.list_body([b"", b"abc", bytes(70)]),
        "read_shares": m.shares_body(bytes(32), [m.ShareEntry(1, bytes(32), b"\x01" * 32, b""),
                                                 m.ShareEntry(2, bytes(32), b"\x02" * 32,
                                                              bytes(82))]),
        "read_relay": m.relay_body({1: bytes(82), 5: b"", 9: b"x"}),
        "read_unmask": _unmask_body({1: (m.ShareKind.SELF_MASK, shamir.to_bytes(5)),
                                     4: (m.ShareKind.MASK_KEY, shamir.to_bytes(shamir.PRIME - 1))}),
    }


@pytest.mark.parametrize("body", BODIES, ids=BODY_IDS)
def test_every_u32_offset_set_to_every_extreme_value(body):
    """Exhaustive companion of the hypothesis test: each byte offset of a fixed valid body,
    each extreme value."""
    valid = _sample_bodies()[body.name]
    check_body_parse(body, valid, False)
    for pos in range(len(valid) - 3):
        for value in EXTREME_U32:
            data = valid[:pos] + value.to_bytes(4, "big") + valid[pos + 4 :]
            check_body_parse(body, data, False)
            check_body_parse(body, data[:-1], True)


def test_huge_entry_counts_are_refused_before_any_work():
    """A count of up to 2^32 - 1 entries announced by a few bytes: refused at once, for every
    list-shaped body (no loop over the announced count)."""
    for count in (m.MAX_ENTRIES + 1, U32_MAX, m.MAX_ENTRIES):
        head = m.u32(count)
        for decode, body in [(m.read_ids, head), (m.read_list, head), (m.read_relay, head),
                             (m.read_unmask, head), (m.read_key_list, m.u32(0) + head),
                             (m.read_key_list, head), (m.read_shares, bytes(32) + head)]:
            assert isinstance(timed(decode, body + bytes(64)), MessageError)
    d = 2**30  # a masked input announcing a billion entries, and the matching d
    assert isinstance(timed(m.read_vector, m.u32(d) + bytes(64), d, 2**32, 4), MessageError)


# ------------------------------------------------------------------- envelopes
SIGNED_TYPES = sorted(m.CLIENT_TYPES)
SERVER_TYPES = sorted(set(m.MsgType) - m.CLIENT_TYPES)
HEADER_FIELDS = {"magic": (0, 3), "version": (3, 4), "type": (4, 5), "session": (5, 37),
                 "sender": (37, 41), "length": (41, 45)}


@st.composite
def header_tampered(draw, data: bytes) -> bytes:
    """``data`` with one header field replaced: any value, or a near-miss of the real one."""
    name = draw(st.sampled_from(sorted(HEADER_FIELDS)))
    lo, hi = HEADER_FIELDS[name]
    if name == "length":
        new = draw(st.sampled_from(EXTREME_U32) | u32s | st.integers(
            max(len(data) - HEADER - 80, 0), len(data))).to_bytes(4, "big")
    elif name == "session":
        new = draw(st.sampled_from([OTHER_SID, bytes(32)]) | st.binary(min_size=32, max_size=32))
    else:
        new = draw(st.binary(min_size=hi - lo, max_size=hi - lo))
    return data[:lo] + new + data[hi:]


@st.composite
def sealed(draw, signed: bool):
    """(message, type, sender, body): a valid message of a random type and body."""
    type_ = draw(st.sampled_from(SIGNED_TYPES if signed else SERVER_TYPES))
    body = draw(st.binary(max_size=300))
    if signed:
        sender = draw(st.sampled_from(sorted(IDENTITIES)))
        return (m.seal(type_, SID, sender, body, IDENTITIES[sender], context_of(type_)), type_,
                sender, body)
    return m.seal(type_, SID, m.SERVER, body), type_, m.SERVER, body


def check_envelope(data, expected: m.MsgType, session_id: bytes) -> m.Envelope | MessageError:
    out = timed(m.open_envelope, data, expected, session_id)
    if isinstance(out, MessageError):
        return out
    assert out.type == expected and out.session_id == session_id
    reframed = m.seal(expected, session_id, out.sender, bytes(out.body))
    assert reframed + (out.signature or b"") == bytes(data), "non-canonical frame accepted"
    assert bytes(out.signed_part) == reframed
    return out


@pytest.mark.parametrize("signed", [True, False], ids=["client", "server"])
@given(data=st.data())
def test_open_envelope_on_mutated_message(signed, data):
    raw, type_, _, _ = data.draw(sealed(signed), label="message")
    assert not isinstance(check_envelope(raw, type_, SID), MessageError)
    bad = data.draw(mutated(raw) | header_tampered(raw), label="mutated")
    expected = data.draw(st.just(type_) | st.sampled_from(list(m.MsgType)), label="expected")
    check_envelope(bad, expected, data.draw(st.sampled_from([SID, OTHER_SID])))
    check_envelope(bytearray(bad), expected, SID)
    check_envelope(memoryview(bad), expected, SID)


@given(raw=st.binary(max_size=600), expected=st.sampled_from(list(m.MsgType)),
       sid=st.sampled_from([SID, OTHER_SID]) | st.binary(min_size=32, max_size=32),
       header=st.booleans())
def test_open_envelope_on_random_bytes(raw, expected, sid, header):
    """Random bytes, optionally behind a valid-looking magic and version."""
    if header:
        raw = m.MAGIC + bytes([m.VERSION, int(expected)]) + sid + raw
    check_envelope(raw, expected, sid)


@given(st.one_of(st.none(), st.integers(), st.text(max_size=50), st.floats(),
                 st.lists(st.integers(0, 255), max_size=60), st.tuples(st.binary()),
                 st.builds(lambda b: np.frombuffer(b, np.uint8), st.binary(max_size=80))),
       st.sampled_from(list(m.MsgType)))
def test_open_envelope_on_objects_that_are_not_bytes(obj, expected):
    out = timed(m.open_envelope, obj, expected, SID)
    assert isinstance(out, MessageError)


def check_signed(data, expected: m.MsgType, session_id: bytes, original: bytes | None):
    """open_signed: MessageError, or a message whose signature verifies, which must then be
    byte-for-byte the one that was signed (``original``)."""
    out = timed(m.open_signed, data, expected, session_id, PUBLIC, context_of(expected))
    if not isinstance(out, MessageError):
        assert bytes(data) == original, "a mutated client message passed its signature check"
    return out


@given(msg=sealed(True), data=st.data())
def test_open_signed_on_mutated_message(msg, data):
    raw, type_, sender, body = msg
    env = check_signed(raw, type_, SID, raw)
    assert env.sender == sender and bytes(env.body) == body
    bad = data.draw(mutated(raw) | header_tampered(raw), label="mutated")
    check_signed(bad, type_, SID, raw)


@given(msg=sealed(True), data=st.data())
def test_open_signed_rejects_replays_across_sessions_steps_and_senders(msg, data):
    """A message signed in another session, for another step, by another client or in another
    session context (under the same session id), re-framed so that its header names this
    session, the expected step or the claimed sender."""
    _, type_, sender, body = msg
    how = data.draw(st.sampled_from(["session", "step", "sender", "signature", "context"]))
    other_type = data.draw(st.sampled_from([t for t in m.MsgType if t != type_]))
    other_sender = data.draw(st.sampled_from([i for i in IDENTITIES if i != sender]
                                             + [N_IDENTITIES, U32_MAX]))
    signed_as = {"session": (type_, OTHER_SID, sender), "step": (other_type, SID, sender),
                 "sender": (type_, SID, other_sender), "signature": (type_, SID, sender),
                 "context": (type_, SID, sender)}[how]
    context = context_of(type_)
    if how == "context":  # another session's context; for ADVERTISE, any context at all
        context = data.draw(st.sampled_from([OTHER_CTX, bytes(32)] + ([] if context else [CTX])
                                            + ([b""] if context else [])))
    key = IDENTITIES[sender]
    sig = key.sign(m.signing_digest(m.seal(*signed_as, body), context))
    if how == "signature":  # a signature by another enrolled client
        sig = IDENTITIES[(sender + 1) % N_IDENTITIES].sign(m.signing_digest(m.seal(*signed_as,
                                                                                   body), context))
    forged = m.seal(type_, SID, sender, body) + sig
    assert isinstance(check_signed(forged, type_, SID, None), MessageError)


@given(st.binary(max_size=600))
def test_survivors_digest_takes_any_bytes(raw):
    digest = timed(m.survivors_digest, raw)
    assert isinstance(digest, bytes) and len(digest) == 32


# ------------------------------------------------------------------- a recorded real session
def _record_session() -> tuple[dict[str, list[bytes]], bytes]:
    """Every message of an honest 5-client session (client 4 drops before masked_input, so the
    unmask messages hold both share kinds), keyed by message type name; and the session context
    the clients signed under after ADVERTISE."""
    cfg = SecAggConfig(num_clients=5, threshold=3, vector_length=6, modulus=2**16)
    out: dict[str, list[bytes]] = {t.name: [] for t in m.MsgType}
    with deterministic_randomness(1234):
        clients = {c: SecAggClient(cfg, c, IDENTITIES[c], _public(5), SID) for c in range(5)}
        server = SecAggServer(cfg, _public(5), SID)
        outgoing = None
        for step in STEPS:
            replies = {}
            for c in sorted(clients) if outgoing is None else sorted(outgoing):
                if c == 4 and step == "masked_input":
                    continue
                client = clients[c]
                if step == "advertise_keys":
                    replies[c] = client.advertise_keys()
                elif step == "masked_input":
                    replies[c] = client.masked_input(outgoing[c], np.arange(6, dtype=np.uint64))
                else:
                    replies[c] = getattr(client, step)(outgoing[c])
            for raw in replies.values():
                out[m.MsgType(raw[4]).name].append(raw)
            outgoing = getattr(server, step)(replies)
            if step != "unmasking":
                for raw in outgoing.values():
                    out[m.MsgType(raw[4]).name].append(raw)
    assert all(c._context == server.context for c in clients.values())
    return out, server.context


def _public(n: int) -> dict[int, bytes]:
    return {i: PUBLIC[i] for i in range(n)}


RECORDED, RECORDED_CTX = _record_session()
SESSION_CFG = SecAggConfig(num_clients=5, threshold=3, vector_length=6, modulus=2**16)


def _parse_as_receiver(raw: bytes, type_: m.MsgType):
    """The whole parse its receiver runs on a message of ``type_``: the frame, the signature
    (client messages), the body, and the signed messages a server message carries."""
    if type_ in m.CLIENT_TYPES:
        env = m.open_signed(raw, type_, SID, _public(5), context_of(type_, RECORDED_CTX))
        if type_ is m.MsgType.ADVERTISE:
            return m.read_advertise(env.body)
        if type_ is m.MsgType.SHARES:
            return m.read_shares(env.body)
        if type_ is m.MsgType.MASKED_INPUT:
            return m.read_vector(env.body, SESSION_CFG.vector_length, SESSION_CFG.modulus,
                                 SESSION_CFG.element_bytes)
        if type_ is m.MsgType.UNMASK:
            return m.read_unmask(env.body)
        return bytes(env.body)  # CONSISTENCY: a digest, compared by the server
    env = m.open_envelope(raw, type_, SID)
    if type_ is m.MsgType.KEY_LIST:
        u1, digests, adverts = m.read_key_list(env.body)
        return u1, digests, [m.read_advertise(m.open_signed(a, m.MsgType.ADVERTISE, SID,
                                                            _public(5)).body) for a in adverts]
    if type_ is m.MsgType.SHARE_RELAY:
        return m.read_relay(env.body)
    if type_ is m.MsgType.SURVIVORS:
        return m.read_ids(env.body)
    return [m.open_signed(s, m.MsgType.CONSISTENCY, SID, _public(5), RECORDED_CTX) and s
            for s in m.read_list(env.body)]


def test_recorded_session_is_complete():
    assert all(RECORDED[t.name] for t in m.MsgType)
    kinds = {k for raw in RECORDED["UNMASK"] for k, _ in
             m.read_unmask(m.open_signed(raw, m.MsgType.UNMASK, SID, _public(5),
                                         RECORDED_CTX).body).values()}
    assert kinds == set(m.ShareKind)
    u1, digests, adverts = m.read_key_list(m.open_envelope(RECORDED["KEY_LIST"][0],
                                                           m.MsgType.KEY_LIST, SID).body)
    assert m.session_context(SID, digests) == RECORDED_CTX  # the key list fixes the context
    assert digests == {m.open_envelope(a, m.MsgType.ADVERTISE, SID).sender: m.advert_digest(a)
                       for a in adverts}


@pytest.mark.parametrize("type_", list(m.MsgType), ids=[t.name for t in m.MsgType])
@given(data=st.data())
def test_recorded_message_mutated_then_parsed_by_its_receiver(type_, data):
    raw = data.draw(st.sampled_from(RECORDED[type_.name]), label="recorded")
    expected = _parse_as_receiver(raw, type_)
    bad = data.draw(mutated(raw) | header_tampered(raw), label="mutated")
    out = timed(_parse_as_receiver, bad, type_)
    if isinstance(out, MessageError) or bad == raw:
        return
    if type_ in m.CLIENT_TYPES:
        raise AssertionError("a mutated client message passed its signature check")
    # A server message is not signed: a mutation may survive only if the receiver reads the
    # same content (the header's sender field of a server message is not used), or if it
    # produced another well-formed body.
    assert _parse_as_receiver(bad, type_) == out
    if bad[:37] == raw[:37] and bad[41:] == raw[41:]:  # only the sender field differs
        assert out == expected
