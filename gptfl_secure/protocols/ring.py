"""Vectors over Z_q and the PRG that expands a 256-bit seed into a uniform mask.

Power-of-two moduli accumulate in machine words (uint32 when q <= 2^32, else uint64) and let
them wrap, since q divides 2^32 or 2^64; other moduli accumulate in uint64 with a conditional
subtraction (q <= 2^62, so a + b never overflows). Masks are AES-256-CTR keystream written by
``update_into`` straight into a preallocated buffer; for a modulus that is not a power of two,
words are cut to bit_length(q - 1) bits and rejected when >= q, so masks are exactly uniform.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_CTR_NONCE = bytes(16)  # each seed is derived for one purpose only, so one nonce suffices


class Ring:
    """Arithmetic in Z_q for vectors of length ``d``, with a scratch buffer for masks."""

    def __init__(self, modulus: int, d: int) -> None:
        if not 2 <= modulus <= 2**62:
            raise ValueError(f"modulus={modulus}: must be in [2, 2^62]")
        self.q, self.d = modulus, d
        self.power_of_two = modulus & (modulus - 1) == 0
        self.dtype = np.dtype(np.uint32 if self.power_of_two and modulus <= 2**32 else np.uint64)
        self._q = self.dtype.type(modulus) if not self.power_of_two else None
        self._bits = (modulus - 1).bit_length()
        self._scratch = np.empty(d, dtype=self.dtype)
        self._zeros = bytes(self._scratch.nbytes)

    # ----------------------------------------------------------------- arithmetic
    def zeros(self) -> np.ndarray:
        return np.zeros(self.d, dtype=self.dtype)

    def lift(self, x: np.ndarray) -> np.ndarray:
        """Copy of ``x`` (entries in [0, q)) in this ring's accumulator dtype."""
        return np.asarray(x).astype(self.dtype, copy=True)

    def add_(self, acc: np.ndarray, v: np.ndarray) -> None:
        """acc += v (mod q), in place."""
        np.add(acc, v, out=acc)
        if self._q is not None:
            np.subtract(acc, self._q, out=acc, where=acc >= self._q)

    def sub_(self, acc: np.ndarray, v: np.ndarray) -> None:
        """acc -= v (mod q), in place; v must be reduced (entries in [0, q))."""
        if self._q is None:
            np.subtract(acc, v, out=acc)
        else:
            np.add(acc, self._q - v, out=acc)
            np.subtract(acc, self._q, out=acc, where=acc >= self._q)

    def reduce(self, acc: np.ndarray) -> np.ndarray:
        """Entries in [0, q) as uint64."""
        out = acc.astype(np.uint64)
        if self.power_of_two:
            out &= np.uint64(self.q - 1)
        return out

    # ----------------------------------------------------------------- masks
    def mask(self, seed: bytes) -> np.ndarray:
        """A fresh array: the uniform mask expanded from ``seed`` (32 bytes)."""
        out = np.empty(self.d, dtype=self.dtype)
        self._expand_into(seed, out)
        return out

    def add_mask_(self, acc: np.ndarray, seed: bytes, sign: int = 1) -> None:
        """acc += sign * PRG(seed) (mod q), in place, through the scratch buffer."""
        self._expand_into(seed, self._scratch)
        (self.add_ if sign > 0 else self.sub_)(acc, self._scratch)

    def _expand_into(self, seed: bytes, out: np.ndarray) -> None:
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_CTR_NONCE)).encryptor()
        if self.power_of_two:
            # Words are uniform mod 2^32 / 2^64, hence mod q; reduction happens once, at the end.
            encryptor.update_into(self._zeros, memoryview(out).cast("B"))
            return
        low_bits = np.uint64((1 << self._bits) - 1)
        filled = 0
        while filled < self.d:
            need = self.d - filled
            words = np.empty(int(need * (1 << self._bits) / self.q * 1.05) + 16, dtype=np.uint64)
            encryptor.update_into(bytes(words.nbytes), memoryview(words).cast("B"))
            words &= low_bits
            kept = words[words < self._q][:need]
            out[filled : filled + kept.size] = kept
            filled += kept.size
