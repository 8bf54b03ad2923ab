"""Typed errors of the masked-sum protocol."""

from __future__ import annotations


class MessageError(ValueError):
    """A message's bytes are malformed: wrong magic, version, type, length or field range."""


class ProtocolViolation(Exception):
    """A party deviated from the protocol.

    Raised by an honest client when the server misbehaves (it then aborts the session), and used
    by the server internally to drop a misbehaving client. ``peer`` names the party at fault
    (a client id, or "server").
    """

    def __init__(self, step: str, peer: object, reason: str) -> None:
        super().__init__(f"[{step}] {peer}: {reason}")
        self.step, self.peer, self.reason = step, peer, reason


class SecAggAbort(Exception):
    """Fewer than ``threshold`` parties survived ``step``: the session ends, revealing nothing."""

    def __init__(self, step: str, survivors: int, threshold: int, detail: str = "") -> None:
        msg = f"secure aggregation aborted at {step}: {survivors} survivors < threshold {threshold}"
        super().__init__(msg + (f" ({detail})" if detail else ""))
        self.step, self.survivors, self.threshold = step, survivors, threshold
