"""Thin wrappers over the primitives we never write ourselves.

* X25519 key agreement and AES-256-GCM: ``cryptography``.
* HKDF-SHA256: ``cryptography``; every derived key is domain-separated by a purpose label, the
  session id and the ordered pair (or single party) it belongs to.
* Ed25519 signatures: ``pynacl``, measured faster than ``cryptography`` here, about 2x for
  verification, which dominates (every client verifies every peer's signatures):
  benches/primitives_bench.py.
"""

from __future__ import annotations

import hashlib
import os

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DOMAIN = b"gptfl-secure/secagg/v1/"
KEY_BYTES = 32
SIGNATURE_BYTES = 64
_NONCE = bytes(12)  # every AEAD key is derived for exactly one message (one sender -> recipient)


def random_bytes(n: int = KEY_BYTES) -> bytes:
    """Fresh bytes from the OS CSPRNG."""
    return os.urandom(n)


def hkdf(secret: bytes, purpose: bytes, session_id: bytes, *parties: int) -> bytes:
    """A 256-bit key for ``purpose`` in ``session_id`` between ``parties`` (order as given)."""
    info = DOMAIN + purpose + b"|" + b"|".join(p.to_bytes(4, "big") for p in parties)
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=session_id, info=info).derive(secret)


def commitment(purpose: bytes, session_id: bytes, owner: int, holder: int, value: bytes) -> bytes:
    """Hash commitment to a high-entropy value (a Shamir share), bound to session and parties."""
    h = hashlib.sha256(DOMAIN + purpose + session_id)
    h.update(owner.to_bytes(4, "big") + holder.to_bytes(4, "big") + value)
    return h.digest()


class AgreementKey:
    """An X25519 key pair for one session and one purpose (share encryption or masks)."""

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self._private = private or X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes_raw()

    @classmethod
    def from_private_bytes(cls, data: bytes) -> AgreementKey:
        return cls(X25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes_raw()

    def agree(self, peer_public: bytes) -> bytes:
        """Raw X25519 shared secret with ``peer_public``; ValueError for an invalid point."""
        return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def is_low_order(public: bytes) -> bool:
    """True iff ``public`` is not a usable X25519 public key: a point of small order (it gives an
    all-zero shared secret, refused at advertise time) or bytes X25519 refuses."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public))
        return False
    except ValueError:
        return True


def aead_encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM encryption of ``plaintext`` bound to ``associated`` (one message per key)."""
    return AESGCM(key).encrypt(_NONCE, plaintext, associated)


def aead_decrypt(key: bytes, ciphertext: bytes, associated: bytes) -> bytes | None:
    """Plaintext, or None when the ciphertext or its associated data was tampered with."""
    try:
        return AESGCM(key).decrypt(_NONCE, ciphertext, associated)
    except (InvalidTag, ValueError):
        return None


class IdentityKey:
    """A client's long-term Ed25519 signing key, enrolled out of band."""

    def __init__(self, seed: bytes | None = None) -> None:
        self._key = nacl.signing.SigningKey(seed) if seed else nacl.signing.SigningKey.generate()
        self.public = bytes(self._key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` under ``public``."""
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
        return False
