"""Deliberately weakened clients: the explorer must find a violation against each.

1. ``NoSessionBinding``: the session context is SHA-256 of the session id alone, so signatures
   and share ciphertexts verify across sessions under a reused id and across different key lists.
2. ``WeakThreshold``: no threshold rule: it accepts t <= n/2 (an unchecked SecAggConfig).
3. ``RevealsBoth``: at unmasking it also reveals the self-mask share of every peer it was told
   dropped (two entries for one peer).
4. ``NoConsistencyCheck``: unmasks without verifying any consistency signature.
5. ``TrustsConfigSize``: checks the threshold against ``cfg.num_clients`` and never compares it
   with the group it is given, so a server can offer n=2, t=2 to a trusted group of 4.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from unittest import mock

from gptfl_secure.protocols import ClientPolicy, PolicyViolation, SecAggClient, shamir
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


MUTANTS = {
    "no-session-binding": NoSessionBinding,
    "accepts-t<=n/2": WeakThreshold,
    "reveals-both-shares": RevealsBoth,
    "skips-consistency-check": NoConsistencyCheck,
    "trusts-config-size": TrustsConfigSize,
}
