"""The session driver shared by every transport (``protocols/session.py``)."""

import numpy as np
import pytest

from gptfl_secure.audit import audit_directory
from gptfl_secure.protocols import (
    IdentityKey,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    Step,
    run_session,
)
from gptfl_secure.protocols.recording import record_result
from gptfl_secure.protocols.runner import session_id_for


def transport(cfg: SecAggConfig, silent_from: dict[int, Step] | None = None):
    """A server and an ``exchange`` that carries the bytes to in-process clients."""
    silent_from = silent_from or {}
    sid = session_id_for(7)
    ids = {c: IdentityKey() for c in range(cfg.num_clients)}
    public = {c: k.public for c, k in ids.items()}
    clients = {c: SecAggClient(cfg, c, ids[c], public, sid) for c in ids}
    inputs = {c: np.full(cfg.vector_length, c + 1, dtype=np.uint64) for c in ids}
    asked: list[Step] = []

    def exchange(step, messages):
        asked.append(step)
        out = {}
        for c in sorted(clients) if messages is None else sorted(messages):
            if c in silent_from and list(Step).index(step) >= list(Step).index(silent_from[c]):
                continue
            x = inputs[c] if step is Step.MASKED_INPUT else None
            out[c] = clients[c].respond(step, None if messages is None else messages[c], x)
        return out

    return SecAggServer(cfg, public, sid), public, exchange, asked


def test_a_session_over_any_exchange_gives_a_complete_result_that_can_be_audited(tmp_path):
    cfg = SecAggConfig(5, 3, 4)
    server, public, exchange, asked = transport(cfg, {4: Step.MASKED_INPUT})
    result = run_session(server, public, exchange)
    assert asked == list(Step)
    assert result.included == {0, 1, 2, 3}
    assert result.total.tolist() == [1 + 2 + 3 + 4] * 4
    assert result.session_id == server.session_id and result.config == cfg
    assert result.identity_keys == public and result.abort_reason is None
    assert set(result.stats.server_seconds) == set(Step)
    record_result(tmp_path, "s", result)
    assert audit_directory(tmp_path).exit_code == 0


def test_an_aborted_session_raises_with_its_partial_record(tmp_path):
    cfg = SecAggConfig(5, 4, 4)
    server, public, exchange, _ = transport(cfg, {3: Step.SHARE_KEYS, 4: Step.SHARE_KEYS})
    with pytest.raises(SecAggAbort) as caught:
        run_session(server, public, exchange)
    partial = caught.value.partial
    assert caught.value.step == Step.SHARE_KEYS
    assert partial.included == frozenset() and partial.total.size == 0
    assert partial.session_id == server.session_id and partial.config == cfg
    assert partial.abort_reason == str(caught.value)
    record_result(tmp_path, "s", partial)
    assert audit_directory(tmp_path).exit_code == 0
