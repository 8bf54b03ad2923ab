"""Wire v2: the auditor derives the session context from the recorded ADVERTISE messages exactly
as the honest server does, and verifies every later signature under it."""

from __future__ import annotations

import pytest

from gptfl_secure.audit import audit_record, parse
from gptfl_secure.protocols import messages as m

from .helpers import config, flip, honest, index_of, replace, roundtrip, start


@pytest.fixture(scope="module")
def base():
    return honest(config(6, 4), seed=41)


def test_the_derived_context_is_the_servers(base, tmp_path):
    t = parse(roundtrip(base, tmp_path))
    assert t.senders("advertise_keys") == base.server.u1
    assert t.context == base.server.context and len(t.context) == m.DIGEST_BYTES


def test_the_server_s_u1_rules_are_followed_for_duplicated_and_invalid_adverts(tmp_path):
    """Client 5 advertises twice (the server drops it, whatever its first message was), client
    4's advertisement is corrupted, client 3's arrives only under client 6's id (so 6, heard
    twice, is dropped too): none of 3..6 is in U1, for the server and for the auditor, and both
    derive the same context."""
    driver = start(config(9, 5), seed=42)
    adverts = {c: driver.call(c, "advertise_keys") for c in driver.ids}
    incoming = [(c, a) for c, a in adverts.items() if c not in (3, 4)]
    incoming += [(5, adverts[5]), (4, flip(adverts[4], -3)), (6, adverts[3])]
    driver.server.advertise_keys(incoming)
    assert driver.server.u1 == frozenset({0, 1, 2, 7, 8})
    t = parse(roundtrip(driver, tmp_path))
    assert t.senders("advertise_keys") == driver.server.u1
    assert t.context == driver.server.context


def test_replay_from_another_session_under_the_same_session_id_is_caught(base, tmp_path):
    """The same clients, the same session id, another run: client 3's UNMASK message there is
    validly signed for this session id, but under the other run's context (other
    advertisements). v1 accepted it; v2 refuses it."""
    other = honest(base.cfg, seed=43, identities=base.identities, session_id=base.session_id)
    assert other.session_id == base.session_id and other.server.context != base.server.context
    tr = base.transcript()
    i = index_of(tr, "unmasking", 3)
    a = audit_record(roundtrip(base, tmp_path, replace(tr, i, data=other.replies["unmasking"][3])))
    assert a.failed == {"signatures"}
    assert "another session context" in a.check("signatures").details[0]
    assert f"#{i} (unmasking, from 3)" in a.check("signatures").details[0]


def test_an_advertisement_left_out_of_the_record_breaks_every_later_signature(base, tmp_path):
    """The server drops client 2's ADVERTISE from its record: the record's U1 is not the one the
    clients signed, so no later message verifies."""
    tr = [e for e in base.transcript() if not (e.step == "advertise_keys" and e.sender == 2)]
    a = audit_record(roundtrip(base, tmp_path, tr))
    assert "signatures" in a.failed
    assert len(a.check("signatures").details) == len(tr) - 5  # every message but the 5 adverts


def test_a_message_signed_without_the_context_is_caught(base, tmp_path):
    """Client 1's UNMASK body re-signed as wire v1 signed it (no context): a bad signature."""
    tr = base.transcript()
    i = index_of(tr, "unmasking", 1)
    env = m.open_envelope(tr[i].data, m.MsgType.UNMASK, base.session_id)
    forged = m.seal(m.MsgType.UNMASK, base.session_id, 1, bytes(env.body), base.identities[1])
    a = audit_record(roundtrip(base, tmp_path, replace(tr, i, data=forged)))
    assert a.failed == {"signatures"}


@pytest.mark.parametrize("junk", [b"\x00" * 100_000, None, 12345],
                         ids=["oversized", "none", "int"])
def test_a_rejected_payload_beside_a_valid_advert_leaves_server_and_auditor_agreeing(junk,
                                                                                    tmp_path):
    """Client 2 sends junk (over the step's size bound, None, a number) and then a valid
    advertisement: the server hears it twice and drops it. The junk is kept cut to the bound
    plus one byte (b"" for a non-bytes payload), so the auditor sees the same two messages, the
    same U1 and the same context, and the honest record passes."""
    driver = start(config(5, 3), seed=44)
    adverts = {c: driver.call(c, "advertise_keys") for c in driver.ids}
    incoming = [(2, junk)] + list(adverts.items())
    driver.server.advertise_keys(incoming)
    assert driver.server.u1 == frozenset({0, 1, 3, 4})
    stored = [e.data for e in driver.server.transcript if e.sender == 2]
    assert len(stored) == 2 and len(stored[0]) <= 174
    t = parse(roundtrip(driver, tmp_path))
    assert t.senders("advertise_keys") == driver.server.u1
    assert t.context == driver.server.context
