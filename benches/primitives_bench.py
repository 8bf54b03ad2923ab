"""Measures the primitives the masked-sum protocol is built on, to justify its choices.

* PRG: AES-256-CTR vs ChaCha20 keystream written by ``update_into`` into a numpy buffer, and one
  in-place add of a 100K-entry uint32 vector (the PRG + add unit of every mask).
* Signatures: Ed25519 sign / verify in pynacl vs cryptography.
* Key agreement: X25519 in cryptography vs pynacl.
* Shamir over P = 2^256 + 297: sharing one secret at n = 500 points, t = 334.

Run: ``.venv/bin/python benches/primitives_bench.py`` (about 15 s). Prints microseconds per
operation (median of repeated timings) and the ratios that decided each choice.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import statistics  # noqa: E402
import time  # noqa: E402

import nacl.bindings  # noqa: E402
import nacl.signing  # noqa: E402
import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from gptfl_secure.protocols import shamir  # noqa: E402

D = 100_000


def micros(fn, reps: int) -> float:
    """Median microseconds per call over ``reps`` calls in 5 batches."""
    fn()
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        batches.append((time.perf_counter() - start) / reps * 1e6)
    return statistics.median(batches)


def prg_rows() -> list[tuple[str, float]]:
    buf = np.empty(D, np.uint32)
    acc = np.zeros(D, np.uint32)
    zeros, key = bytes(buf.nbytes), os.urandom(32)

    def aes():
        enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        enc.update_into(zeros, memoryview(buf).cast("B"))

    def chacha():
        enc = Cipher(algorithms.ChaCha20(key, bytes(16)), None).encryptor()
        enc.update_into(zeros, memoryview(buf).cast("B"))

    return [("AES-256-CTR keystream, 100K x uint32", micros(aes, 200)),
            ("ChaCha20 keystream, 100K x uint32", micros(chacha, 200)),
            ("np.add in place, 100K x uint32", micros(lambda: np.add(acc, buf, out=acc), 500))]


def signature_rows() -> list[tuple[str, float]]:
    msg = os.urandom(200)
    c_key = ed25519.Ed25519PrivateKey.generate()
    c_sig, c_pub = c_key.sign(msg), c_key.public_key()
    n_key = nacl.signing.SigningKey.generate()
    n_sig, n_pub = n_key.sign(msg).signature, n_key.verify_key
    return [("Ed25519 sign, cryptography", micros(lambda: c_key.sign(msg), 1000)),
            ("Ed25519 sign, pynacl", micros(lambda: n_key.sign(msg), 1000)),
            ("Ed25519 verify, cryptography", micros(lambda: c_pub.verify(c_sig, msg), 1000)),
            ("Ed25519 verify, pynacl", micros(lambda: n_pub.verify(msg, n_sig), 1000))]


def agreement_rows() -> list[tuple[str, float]]:
    sk = x25519.X25519PrivateKey.generate()
    pk = x25519.X25519PrivateKey.generate().public_key()
    raw_sk, raw_pk = os.urandom(32), pk.public_bytes_raw()
    return [("X25519, cryptography", micros(lambda: sk.exchange(pk), 1000)),
            ("X25519, pynacl", micros(lambda: nacl.bindings.crypto_scalarmult(raw_sk, raw_pk),
                                      1000))]


def shamir_rows() -> list[tuple[str, float]]:
    xs = list(range(1, 501))
    secret = int.from_bytes(os.urandom(32), "big")
    shares = shamir.split(secret, xs, 334)
    points = list(zip(xs, shares, strict=True))
    shamir.reconstruct(points, 334)  # warm the Lagrange cache, as a session does
    return [("Shamir split, n=500, t=334", micros(lambda: shamir.split(secret, xs, 334), 2)),
            ("Shamir reconstruct (cached Lagrange), t=334",
             micros(lambda: shamir.reconstruct(points, 334), 20))]


def main() -> None:
    rows = prg_rows() + signature_rows() + agreement_rows() + shamir_rows()
    print("| operation | microseconds |\n| --- | ---: |")
    for name, us in rows:
        print(f"| {name} | {us:,.1f} |")
    t = dict(rows)
    chacha = t["ChaCha20 keystream, 100K x uint32"] / t["AES-256-CTR keystream, 100K x uint32"]
    sign = t["Ed25519 sign, cryptography"] / t["Ed25519 sign, pynacl"]
    verify = t["Ed25519 verify, cryptography"] / t["Ed25519 verify, pynacl"]
    print()
    print(f"ChaCha20 takes {chacha:.2f}x the time of AES-256-CTR -> the PRG is AES-256-CTR")
    print(f"cryptography's Ed25519 takes {sign:.2f}x (sign) and {verify:.2f}x (verify) the time "
          "of pynacl's -> signatures use pynacl")


if __name__ == "__main__":
    main()
