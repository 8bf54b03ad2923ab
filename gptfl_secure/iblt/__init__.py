"""Hand-written invertible Bloom lookup table (IBLT) over Z_p, numpy only.

Public interface (the README's "The IBLT" section says more)::

    params = IbltParams(capacity=50, max_key_bytes=64, seed=0)
    s = IbltSketch.from_keys(params, ["dog", "cat"])
    total = sum(sketches)            # linear in Z_p
    result = total.decode()          # DecodeResult(counts, complete)
    counts = total.decode_exact()    # {key: count}, or DecodeFailed
"""

from .params import IbltParams
from .sketch import DecodeFailed, DecodeResult, IbltSketch

__all__ = ["DecodeFailed", "DecodeResult", "IbltParams", "IbltSketch"]
