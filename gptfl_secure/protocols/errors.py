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
    """The session ended at ``step`` without a sum, revealing nothing.

    ``cause`` says what failed: ``"below_threshold"`` (fewer than ``threshold`` parties survived
    the step; ``survivors`` counts them) or ``"reconstruction_failed"`` (enough parties answered,
    but a secret could not be rebuilt from shares that match its commitments; ``survivors``
    counts the good shares). ``partial``, when a driver sets it, is the session's record up to
    the abort (a :class:`~gptfl_secure.protocols.session.MaskedSumResult` with an empty total),
    so that an aborted session can be recorded and audited like a completed one.
    """

    BELOW_THRESHOLD = "below_threshold"
    RECONSTRUCTION_FAILED = "reconstruction_failed"

    def __init__(self, step: str, survivors: int, threshold: int, detail: str = "",
                 cause: str = BELOW_THRESHOLD) -> None:
        if cause == self.RECONSTRUCTION_FAILED:
            msg = (f"secure aggregation aborted at {step}: a secret could not be rebuilt"
                   + (f": {detail}" if detail else "")
                   + f" ({survivors} usable shares, threshold {threshold})")
        else:
            msg = (f"secure aggregation aborted at {step}: {survivors} survivors < threshold "
                   f"{threshold}" + (f" ({detail})" if detail else ""))
        super().__init__(msg)
        self.step, self.survivors, self.threshold = step, survivors, threshold
        self.cause, self.detail = cause, detail
        self.partial = None


class ClientStateError(ValueError):
    """A saved client state (``SecAggClient.export_state``) cannot be restored: it is not of this
    version, it is corrupted, a field is missing, unknown or of the wrong type or size, or its
    fields contradict the client's position in the protocol."""
