"""The protocol's key derivations and commitments, and the purpose labels that separate them.

Every key the protocol derives is ``crypto.hkdf(secret, purpose, session_id, *parties)`` and every
commitment is ``crypto.commitment(purpose, session_id, owner, holder, value)``; the purpose
labels below are the only ones in use. Client, server and auditor all derive through this module,
so that the three agree by construction.
"""

from __future__ import annotations

from . import crypto
from .messages import ShareKind

# ------------------------------------------------------------------ purpose labels
SELF_MASK = b"self-mask"
"""HKDF: the PRG seed of u's self mask, from b_u. Commitment: a Shamir share of b_u."""
MASK_KEY = b"mask-key"
"""Commitment: a Shamir share of u's mask-agreement private key."""
SELF_MASK_SEED = b"self-mask-seed"
"""Commitment: b_u itself, checked by the server after reconstruction."""
PAIRWISE_MASK = b"pairwise-mask"
"""HKDF: the PRG seed of the mask u and v share, from their X25519 secret."""
SHARE_ENCRYPTION = b"share-encryption"
"""HKDF: the AEAD key of the one share ciphertext sender -> recipient."""

SHARE_PURPOSES: dict[ShareKind, bytes] = {ShareKind.SELF_MASK: SELF_MASK,
                                          ShareKind.MASK_KEY: MASK_KEY}
"""The commitment purpose of each kind of share."""


# ------------------------------------------------------------------ derivations
def pairwise_seed(mask_key: crypto.AgreementKey, peer_public: bytes, session_id: bytes,
                  u: int, v: int) -> bytes:
    """PRG seed of the mask shared by u and v: HKDF of their X25519 secret, ordered pair."""
    return crypto.hkdf(mask_key.agree(peer_public), PAIRWISE_MASK, session_id, min(u, v),
                       max(u, v))


def self_mask_seed(b: bytes, session_id: bytes, u: int) -> bytes:
    """PRG seed of u's self mask, from its secret b_u."""
    return crypto.hkdf(b, SELF_MASK, session_id, u)


def share_encryption_key(shared_secret: bytes, session_id: bytes, sender: int,
                         recipient: int) -> bytes:
    """AEAD key for the one message ``sender`` -> ``recipient`` (direction-specific), from the
    X25519 secret of their encryption keys."""
    return crypto.hkdf(shared_secret, SHARE_ENCRYPTION, session_id, sender, recipient)


def share_associated_data(session_id: bytes, sender: int, recipient: int,
                          context: bytes = b"") -> bytes:
    """AEAD associated data of a share ciphertext: session id, the session context (so that a
    sender and a recipient shown different key lists cannot exchange shares), the two ids."""
    return session_id + context + sender.to_bytes(4, "big") + recipient.to_bytes(4, "big")


# ------------------------------------------------------------------ commitments
def share_commitment(kind: ShareKind, session_id: bytes, owner: int, holder: int,
                     share: bytes) -> bytes:
    """Commitment to ``owner``'s share of kind ``kind`` held by ``holder``."""
    return crypto.commitment(SHARE_PURPOSES[kind], session_id, owner, holder, share)


def secret_commitment(session_id: bytes, owner: int, b: bytes) -> bytes:
    """Commitment to ``owner``'s self-mask secret b_u, checked after reconstruction."""
    return crypto.commitment(SELF_MASK_SEED, session_id, owner, owner, b)
