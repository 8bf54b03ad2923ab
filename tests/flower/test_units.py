"""Pieces of the Flower integration that need no Flower engine."""

import numpy as np
import pytest

pytest.importorskip("flwr")

from gptfl_secure.flower.options import default_run_config, parse_run_config  # noqa: E402
from gptfl_secure.flower.wire import SessionHeader  # noqa: E402
from gptfl_secure.pipeline.config import ConfigError, SimConfig  # noqa: E402
from gptfl_secure.protocols import (  # noqa: E402
    STEPS,
    IdentityKey,
    SecAggClient,
    SecAggConfig,
    SecAggServer,  # noqa: E402
)


def test_client_survives_a_save_and_load_between_every_step_with_dropout_recovery():
    cfg = SecAggConfig(5, 4, 16, 2**32)
    session = bytes(range(32))
    ids = {c: IdentityKey() for c in range(5)}
    public = {c: k.public for c, k in ids.items()}
    saved = {c: SecAggClient(cfg, c, ids[c], public, session).export_state() for c in range(5)}
    server = SecAggServer(cfg, public, session)
    inputs = {c: np.full(16, c + 1, dtype=np.uint64) for c in range(5)}
    outgoing = None
    for step in STEPS:
        replies = {}
        for c in sorted(saved) if outgoing is None else sorted(outgoing):
            if c == 4 and step == "masked_input":
                continue  # shared its keys, never uploads: its masks are rebuilt from shares
            client = SecAggClient.restore_state(saved[c], ids[c])
            args = () if outgoing is None else (outgoing[c],)
            if step == "masked_input":
                args += (inputs[c],)
            replies[c] = getattr(client, step)(*args)
            saved[c] = client.export_state()
            reloaded = SecAggClient.restore_state(saved[c], ids[c])
            assert reloaded._context == client._context  # the session context, from share_keys
            assert (len(client._context) == 32) == (step != "advertise_keys")
            assert set(vars(reloaded)) == set(vars(client))
        outgoing = getattr(server, step)(replies)
    assert outgoing.included == {0, 1, 2, 3}
    assert np.array_equal(outgoing.total, np.full(16, 1 + 2 + 3 + 4, dtype=np.uint64))


def test_session_header_round_trips():
    header = SessionHeader(SecAggConfig(7, 4, 10, 2**20, neighbors=4),
                           {3: b"a" * 32, 9: b"b" * 32}, "round", round=3)
    assert SessionHeader.from_bytes(header.to_bytes()) == header
    with pytest.raises(ValueError):
        SessionHeader.from_bytes(b"{}")


def test_run_config_uses_the_sim_keys():
    config, options = parse_run_config({"clients": 20, "local-epochs": 2, "server-lr": "",
                                        "step-timeout": 5.0, "out-dir": "x"})
    assert config == SimConfig(clients=20, local_epochs=2)
    assert options.step_timeout == 5.0 and options.out_dir == "x"
    with pytest.raises(ConfigError, match="unknown key"):
        parse_run_config({"no-such-key": 1})
    with pytest.raises(ConfigError, match="--lr"):
        parse_run_config({"lr": -1.0})
    with pytest.raises(ConfigError, match="step-timeout"):
        parse_run_config({"step-timeout": 0})


def test_run_config_refuses_what_the_flower_app_does_not_run():
    # DP is sim-only, and so is the Poisson sampling its accountant assumes: a Flower run must
    # not silently sample another way than the one asked for
    with pytest.raises(ConfigError, match="client-sampling=poisson"):
        parse_run_config({"client-sampling": "poisson"})
    with pytest.raises(ConfigError, match="dp-noise-multiplier"):
        parse_run_config({"dp-noise-multiplier": 1.0})
    assert parse_run_config({"client-sampling": "fixed"})[0].client_sampling == "fixed"


def test_the_app_pyproject_lists_every_key_with_the_sim_default():
    import tomllib
    from pathlib import Path

    app = Path(__file__).resolve().parents[2] / "flower-app" / "pyproject.toml"
    listed = tomllib.loads(app.read_text())["tool"]["flwr"]["app"]["config"]
    defaults = default_run_config()
    missing, unknown = set(defaults) - set(listed), set(listed) - set(defaults)
    assert not missing, f"add to [tool.flwr.app.config] of {app}: {sorted(missing)}"
    assert not unknown, f"remove from [tool.flwr.app.config] of {app}: {sorted(unknown)}"
    parse_run_config(listed)


# --------------------------------------------------------------------------------------------
# Untrusted input at both ends of the Flower transport. The nodes below are the real ClientApp
# handlers, each with its own Context, called in-process by a stand-in for FlowerTransport.

import json  # noqa: E402

from flwr.app import ConfigRecord, Context, RecordDict  # noqa: E402

from gptfl_secure.flower import client_app, server_app, wire  # noqa: E402
from gptfl_secure.flower.options import FlowerOptions  # noqa: E402
from gptfl_secure.pipeline.discovery import LabelDiscoveryFailed  # noqa: E402
from gptfl_secure.protocols import SecAggAbort  # noqa: E402
from gptfl_secure.protocols.recording import read_record, record_result  # noqa: E402
from gptfl_secure.protocols.server import max_message_bytes  # noqa: E402

from .fakes import LABELS, MOD, NO_RUN, D, FakeNodes, _message, _node_context  # noqa: E402


@pytest.fixture
def sketches(monkeypatch):
    from gptfl_secure.iblt import IbltParams, IbltSketch

    def label_sketch(labels, capacity, seed):
        return IbltSketch.from_keys(IbltParams(capacity=capacity, seed=seed),
                                    sorted(labels)).to_vector()

    monkeypatch.setattr(client_app, "label_sketch", label_sketch)
    return label_sketch


def _round_header(nodes: FakeNodes, threshold: int = 4) -> wire.SessionHeader:
    keys = nodes.keys()
    return wire.SessionHeader(SecAggConfig(len(keys), threshold, D, MOD), keys,
                              wire.PURPOSE_ROUND, round=1)


def _masked_sum(nodes: FakeNodes, header: wire.SessionHeader):
    return server_app.masked_sum(nodes, "round1", header, set(header.identity_keys), 1.0)


MALFORMED = {
    "payload of the wrong type": lambda rec: {**rec, "payload": "not bytes"},
    "payload None": lambda rec: {**rec, "payload": None},
    "payload missing": lambda rec: {k: v for k, v in rec.items() if k != "payload"},
    "non-numeric seconds": lambda rec: {**rec, "seconds": "fast"},
    "NaN seconds": lambda rec: {**rec, "seconds": float("nan")},
    "a huge integer for bytes": lambda rec: {**rec, "payload": 2**62},
    "a list for bytes": lambda rec: {**rec, "payload": [1, 2, 3]},
    "an abort reason of 10^6 chars and a bad type": lambda rec: {"abort": ["x"] * 10**6},
}


@pytest.mark.parametrize("step", ["advertise_keys", "masked_input"])
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_step_reply_makes_its_node_a_dropout(kind, step):
    def tamper(group, cid, rec):
        return MALFORMED[kind](dict(rec)) if (cid == 4 and group == f"round1/{step}") else rec

    nodes = FakeNodes(5, tamper)
    vectors = nodes.give_inputs(1)
    result = _masked_sum(nodes, _round_header(nodes))
    assert result.included == {0, 1, 2, 3}
    assert np.array_equal(result.total, sum(vectors[c] for c in range(4)) % MOD)
    if "abort" not in kind:
        assert "malformed reply" in result.session.stats.server_rejected[4]
        assert any("client 4 sent a malformed reply" in line for line in nodes.lines)


def test_an_oversized_payload_is_refused_before_it_is_read():
    cfg = SecAggConfig(5, 4, D, MOD)
    limit = max_message_bytes(cfg, "masked_input")
    assert server_app.read_step_reply({"payload": b"x" * limit}, cfg, "masked_input")[0]
    with pytest.raises(server_app.MalformedReply, match="bytes"):
        server_app.read_step_reply({"payload": b"x" * (limit + 1)}, cfg, "masked_input")


def test_malformed_enroll_replies_are_left_out():
    bad = {1: {"partition-id": "1"}, 2: {"partition-id": 2.0}, 3: {"partition-id": 99},
           4: {"partition-id": True}, 5: {"identity": b"k" * 31}, 6: {"identity": 2**62},
           7: {"identity": None}}

    def tamper(group, cid, rec):
        return {**rec, **bad[cid]} if cid in bad else rec

    nodes = FakeNodes(8, tamper)
    keys = server_app.enroll(nodes, list(nodes.nodes.values()), 8, 1.0)
    assert keys == {0: nodes.keys()[0]}
    assert sum("malformed enroll reply" in line or "not a ConfigRecord" in line
               for line in nodes.lines) == len(bad)


def test_malformed_plain_and_train_replies_are_dropouts():
    nodes = FakeNodes(3, lambda g, cid, rec: {"payload": b"\0" * 7} if cid == 2 else rec)
    vectors = nodes.give_inputs(1)
    header = wire.SessionHeader(SecAggConfig(3, 2, D, MOD), nodes.keys(), wire.PURPOSE_ROUND,
                                round=1)
    result = server_app.plain_exchange(nodes, "round1", header, {0, 1, 2}, 1.0)
    assert result.included == {0, 1}
    assert np.array_equal(result.total, vectors[0] + vectors[1])
    assert server_app.read_train({"ok": True, "seconds": 2}) == 2.0
    for rec in ({}, {"ok": 1}, {"ok": True, "seconds": "x"}, {"ok": True, "seconds": -1.0}):
        with pytest.raises(server_app.MalformedReply):
            server_app.read_train(rec)


def test_the_flower_masked_sum_result_can_be_recorded(tmp_path):
    nodes = FakeNodes(5)
    nodes.give_inputs(1)
    header = _round_header(nodes)
    session = _masked_sum(nodes, header).session
    assert len(session.session_id) == 32
    assert session.identity_keys == header.identity_keys and session.config == header.cfg
    record = read_record(record_result(tmp_path, "round-0001", session))
    assert (record.config, record.session_id) == (header.cfg, session.session_id)
    assert dict(record.identity_keys) == header.identity_keys
    assert record.included == frozenset(range(5)) and len(record.transcript) == 25


def test_an_aborted_flower_session_carries_its_partial_record():
    def tamper(group, cid, rec):
        return {"payload": 7} if cid >= 2 else rec

    nodes = FakeNodes(5, tamper)
    with pytest.raises(SecAggAbort) as info:
        _masked_sum(nodes, _round_header(nodes))
    partial = info.value.partial
    assert partial is not None and partial.abort_reason == str(info.value)
    assert partial.config == _round_header(nodes).cfg and len(partial.session_id) == 32
    assert set(partial.stats.server_rejected) == {2, 3, 4}


def _discover(nodes: FakeNodes):
    for c, ctx in nodes.contexts.items():
        client_app.set_labels(ctx, sorted(LABELS[c]))
    config = SimConfig(clients=5, cohort=5, label_capacity=20, dropout=0.0)
    return server_app.discover(nodes, config, nodes.keys(), FlowerOptions(step_timeout=1.0),
                               nodes.log)


def test_flower_label_discovery_retries_an_aborted_session(sketches):
    def tamper(group, cid, rec):  # the first session: three nodes send garbage
        return {"payload": None} if group.startswith("labels-1/") and cid < 3 else rec

    nodes = FakeNodes(5, tamper)
    found = _discover(nodes)
    assert (found.attempts, found.complete, found.participants) == (2, True, 5)
    assert found.counts == {"cat": 2, "dog": 3, "emu": 1, "owl": 2}
    assert len(found.aborts) == 1 and "aborted_sessions" in found.to_json()


def test_flower_label_discovery_stops_with_an_explained_error_when_every_session_aborts(
        sketches):
    nodes = FakeNodes(5, lambda group, cid, rec: {"payload": "junk"} if cid < 3 else rec)
    with pytest.raises(LabelDiscoveryFailed, match="all 3 sessions aborted") as info:
        _discover(nodes)
    assert all(a.partial is not None for a in info.value.aborts)
    assert sum("retrying with a fresh session" in line for line in nodes.lines) == 2


# ------------------------------------------------------------------ the ClientApp's own policy
def _first_step(ctx: Context, header, session: bytes = b"s" * 32) -> ConfigRecord:
    header_bytes = header if isinstance(header, bytes) else header.to_bytes()
    content = RecordDict({wire.part(0): ConfigRecord(
        {"session": session, "step": "advertise_keys", "payload": b"", "header": header_bytes})})
    reply = client_app.secagg(_message(content, wire.SECAGG, ctx.node_id), ctx, NO_RUN)
    return reply.content[wire.part(0)]


def _group(ctx: Context, n: int = 5) -> dict[int, bytes]:
    keys = {c: IdentityKey().public for c in range(n)}
    keys[int(ctx.node_config["partition-id"])] = client_app.identity(ctx).public
    return keys


def test_the_client_app_accepts_a_sound_header():
    ctx = _node_context(0)
    keys = _group(ctx)
    rec = _first_step(ctx, wire.SessionHeader(SecAggConfig(5, 4, D, MOD), keys, "round", 1))
    assert "abort" not in rec and isinstance(rec["payload"], bytes)


def test_the_client_app_refuses_a_threshold_weaker_than_its_node_config():
    ctx = _node_context(0, **{"max-colluders": 2})
    keys = _group(ctx)
    rec = _first_step(ctx, wire.SessionHeader(SecAggConfig(5, 3, D, MOD), keys, "round", 1))
    assert "threshold 3 of 5" in rec["abort"]
    rec = _first_step(ctx, wire.SessionHeader(SecAggConfig(5, 4, D, MOD), keys, "round", 1),
                      session=b"t" * 32)
    assert "abort" not in rec


def test_the_client_app_refuses_a_group_size_mismatch():
    ctx = _node_context(0)
    keys = _group(ctx, 4)
    rec = _first_step(ctx, wire.SessionHeader(SecAggConfig(5, 4, D, MOD), keys, "round", 1))
    assert "num_clients=5 but the session group has 4" in rec["abort"]


def test_the_client_app_refuses_a_changed_key_it_pinned():
    ctx = _node_context(0)
    keys = _group(ctx)
    assert "abort" not in _first_step(ctx, wire.SessionHeader(SecAggConfig(5, 4, D, MOD), keys,
                                                              "round", 1))
    changed = {**keys, 3: IdentityKey().public}
    rec = _first_step(ctx, wire.SessionHeader(SecAggConfig(5, 4, D, MOD), changed, "round", 2),
                      session=b"u" * 32)
    assert "client 3's identity key differs" in rec["abort"]


def test_the_client_app_refuses_a_reused_session_id():
    ctx = _node_context(0)
    header = wire.SessionHeader(SecAggConfig(5, 4, D, MOD), _group(ctx), "round", 1)
    assert "abort" not in _first_step(ctx, header)
    assert "was used before" in _first_step(ctx, header)["abort"]


def test_the_client_app_trusts_its_registry_not_the_server(tmp_path):
    seed = tmp_path / "identity.hex"
    seed.write_text(bytes(range(32)).hex())
    me = IdentityKey(bytes(range(32))).public
    registry = {c: IdentityKey().public for c in range(1, 5)}
    (tmp_path / "registry.json").write_text(json.dumps({str(c): k.hex()
                                                        for c, k in registry.items()}))
    ctx = _node_context(0, registry=str(tmp_path / "registry.json"), **{
        "identity-file": str(seed)})
    assert client_app.identity(ctx).public == me
    good = {0: me, **registry}
    assert "abort" not in _first_step(ctx, wire.SessionHeader(SecAggConfig(5, 4, D, MOD), good,
                                                              "round", 1))
    forged = {**good, 4: IdentityKey().public}
    rec = _first_step(ctx, wire.SessionHeader(SecAggConfig(5, 4, D, MOD), forged, "round", 1),
                      session=b"v" * 32)
    assert "not enrolled with that identity key" in rec["abort"]


@pytest.mark.parametrize("edit, reason", [
    (lambda h: {**h, "threshold": 4.0}, "threshold"),
    (lambda h: {**h, "num_clients": True}, "num_clients"),
    (lambda h: {**h, "vector_length": 2**40}, "vector_length"),
    (lambda h: {**h, "peers": h["peers"] + [h["peers"][0]]}, "listed twice"),
    (lambda h: {**h, "peers": [[0, "zz" * 32]]}, "not hex"),
    (lambda h: {**h, "purpose": "steal"}, "purpose"),
    (lambda h: {**h, "iblt_capacity": -1}, "iblt_capacity"),
    (lambda h: {k: v for k, v in h.items() if k != "round"}, "missing fields"),
    (lambda h: {**h, "extra": 1}, "unknown fields"),
])
def test_session_header_validates_every_field(edit, reason):
    header = wire.SessionHeader(SecAggConfig(5, 4, D, MOD), {c: bytes([c]) * 32 for c in range(5)},
                                "round", 1)
    data = json.dumps(edit(json.loads(header.to_bytes()))).encode()
    with pytest.raises(wire.HeaderError, match=reason):
        wire.SessionHeader.from_bytes(data)
    ctx = _node_context(0)
    assert "malformed session header" in _first_step(ctx, data)["abort"]
