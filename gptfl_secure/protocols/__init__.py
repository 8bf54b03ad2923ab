"""The masked-sum protocol: secure aggregation of integer vectors modulo a public modulus.

Bonawitz et al. (CCS 2017) with pairwise and self masks, Shamir-shared keys and dropout recovery,
in its active-adversary variant (signatures, consistency check); SecAgg+ (Bell et al., CCS 2020)
replaces the complete graph with a random k-regular one. numpy + cryptography + pynacl only.

    cfg = SecAggConfig(num_clients=n, threshold=t, vector_length=d, modulus=2**32)
    result = run_masked_sum(cfg, inputs, dropouts={3: Step.MASKED_INPUT})
    result.total, result.included, result.transcript, result.stats
"""

from .client import SecAggClient
from .config import STEPS, SecAggConfig, SessionEnd, Step
from .crypto import IdentityKey
from .errors import MessageError, ProtocolViolation, SecAggAbort
from .policy import ClientPolicy, PolicyViolation, SessionLedger
from .runner import run_masked_sum
from .secagg_plus import choose_secagg_plus_params
from .server import SecAggServer, TranscriptEntry
from .session import MaskedSumResult, SessionStats, run_session

__all__ = [
    "STEPS", "ClientPolicy", "IdentityKey", "MaskedSumResult", "MessageError", "PolicyViolation",
    "ProtocolViolation", "SecAggAbort", "SecAggClient", "SecAggConfig", "SecAggServer",
    "SessionEnd", "SessionLedger", "SessionStats", "Step",
    "TranscriptEntry", "choose_secagg_plus_params", "run_masked_sum", "run_session",
]
