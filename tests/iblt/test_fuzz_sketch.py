"""Fuzzing the IBLT sketch's entry points: ``IbltSketch.from_vector`` and ``decode``.

A sketch vector reaches the server as a masked sum that any client could have skewed, so
``from_vector`` and ``decode`` face arbitrary data. Claims:

* ``from_vector`` takes a 1-D integer array of ``vector_length`` entries in [0, p) and refuses
  anything else (wrong length or shape, non-integer dtype, an entry >= p or < 0, a non-array)
  with TypeError or ValueError only; every integer dtype holding valid entries gives the same
  sketch;
* ``decode`` terminates quickly on any table and raises nothing; what it returns is well formed
  (str keys, nonzero counts in (-(p-1)/2, (p-1)/2]); a ``complete`` result is self-consistent:
  re-encoding its counts gives back exactly the decoded sketch;
* a valid sum of clients' key sets plus random corruption never yields a wrong count, and is
  complete only when the counts are the whole, true histogram;
* linearity holds on garbage too: s - s decodes to the empty histogram, s + 0 == s.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from gptfl_secure.iblt import DecodeResult, IbltParams, IbltSketch
from gptfl_secure.iblt.params import CHUNK_BYTES

P = (1 << 61) - 1
DECODE_LIMIT_S = 5.0  # measured: milliseconds
DEFAULT = IbltParams(capacity=50, max_key_bytes=64, seed=0)
params_st = st.builds(IbltParams, capacity=st.integers(1, 24), max_key_bytes=st.integers(1, 24),
                      seed=st.integers(0, 2**64 - 1), repetitions=st.integers(3, 6)) | st.just(
    DEFAULT)
keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
SPECIAL = [0, 1, 2, P - 1, P - 2, (P - 1) // 2, (P + 1) // 2, 2**56 - 1, 2**56, 2**32]


def checked_decode(sketch: IbltSketch) -> DecodeResult:
    """decode, timed, with the well-formedness and self-consistency of its result."""
    before = sketch.to_vector()
    start = time.perf_counter()
    result = sketch.decode()
    elapsed = time.perf_counter() - start
    assert elapsed < DECODE_LIMIT_S, f"decode took {elapsed:.2f} s"
    assert isinstance(result, DecodeResult) and isinstance(result.complete, bool)
    assert np.array_equal(sketch.to_vector(), before), "decode changed the sketch"
    for key, count in result.counts.items():
        assert isinstance(key, str) and len(key.encode()) <= sketch.params.max_key_bytes
        assert isinstance(count, int) and count != 0 and abs(count) <= (P - 1) // 2
    if result.complete:
        assert IbltSketch.from_counts(sketch.params, result.counts) == sketch
    event(f"decode: complete={result.complete}, {min(len(result.counts), 3)}+ keys")
    return result


# ------------------------------------------------------------------- from_vector
BAD_SHAPES = ("short", "long", "empty", "2-D", "0-D")
BAD_DTYPES = (np.float64, np.float32, np.complex128, np.bool_, object, "U4", "datetime64[s]")


@given(params=params_st, data=st.data())
def test_from_vector_refuses_malformed_vectors_with_typed_errors(params, data):
    n = params.vector_length
    base = np.zeros(n, dtype=np.uint64)
    how = data.draw(st.sampled_from(["shape", "dtype", "too_big", "negative", "not_array"]))
    if how == "shape":
        shape = data.draw(st.sampled_from(BAD_SHAPES))
        vec = {"short": base[: data.draw(st.integers(0, n - 1))],
               "long": np.zeros(n + data.draw(st.integers(1, 3 * n)), np.uint64),
               "empty": np.zeros(0, np.uint64),
               "2-D": base.reshape(params.num_cells, params.cell_width),
               "0-D": np.array(7, np.uint64)}[shape]
    elif how == "dtype":
        vec = np.zeros(n, dtype=data.draw(st.sampled_from(BAD_DTYPES)))
    elif how == "too_big":
        vec = base.copy()
        vec[data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from([P, P + 1, 2**63,
                                                                           2**64 - 1])
                                                          | st.integers(P, 2**64 - 1))
    elif how == "negative":
        vec = np.zeros(n, dtype=data.draw(st.sampled_from([np.int8, np.int16, np.int32,
                                                           np.int64])))
        vec[data.draw(st.integers(0, n - 1))] = data.draw(st.integers(-128, -1))
    else:
        vec = data.draw(st.sampled_from([base.tolist(), tuple(base.tolist()), None, 0, b"",
                                         memoryview(base.tobytes())]))
    event(f"malformed: {how}")
    with pytest.raises((TypeError, ValueError)):
        IbltSketch.from_vector(params, vec)


@given(params=params_st, seed=st.integers(0, 2**32), dtype=st.sampled_from(
    ["<u8", ">u8", "<i8", ">i8", "<u4", "<i4", "<u2", "<i2", "u1", "i1"]),
       contiguous=st.booleans())
def test_from_vector_accepts_every_integer_dtype_with_valid_entries(params, seed, dtype,
                                                                    contiguous):
    rng = np.random.default_rng(seed)
    top = min(P, np.iinfo(np.dtype(dtype)).max + 1)
    vec = rng.integers(0, top, params.vector_length, dtype=np.uint64)
    vec[rng.integers(0, vec.size, 3)] = top - 1  # the largest entry the dtype holds
    typed = vec.astype(dtype)
    if not contiguous:  # a strided view of a longer array
        wide = np.zeros(2 * vec.size, dtype=dtype)
        wide[::2] = typed
        typed = wide[::2]
    sketch = IbltSketch.from_vector(params, typed)
    assert np.array_equal(sketch.to_vector(), vec)
    assert sketch == IbltSketch.from_vector(params, vec)
    typed[0] = 1  # the sketch is a copy: later writes to the input do not reach it
    assert sketch.to_vector()[0] == vec[0]


# ------------------------------------------------------------------- decode on garbage
@st.composite
def garbage_vectors(draw):
    """(params, vector): entries anywhere in [0, p), shaped in several ways."""
    params = draw(params_st)
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    n, cells, width = params.vector_length, params.num_cells, params.cell_width
    kind = draw(st.sampled_from(["uniform", "sparse", "special", "one_cell", "fake_pure",
                                 "scaled_keys", "small"]))
    event(f"garbage: {kind}")
    if kind == "uniform":
        return params, rng.integers(0, P, n, dtype=np.uint64)
    if kind == "small":  # small counts and payloads: looks like real cells
        return params, rng.integers(0, 4, n, dtype=np.uint64)
    if kind == "special":
        return params, rng.choice(np.array(SPECIAL, dtype=np.uint64), n)
    table = np.zeros((cells, width), dtype=np.uint64)
    if kind == "sparse":
        rows = rng.integers(0, cells, draw(st.integers(1, 12)))
        table[rows] = rng.integers(0, P, (rows.size, width), dtype=np.uint64)
    elif kind == "one_cell":  # a single nonzero cell, with any content
        table[draw(st.integers(0, cells - 1))] = rng.choice(np.array(SPECIAL, np.uint64), width)
    elif kind == "fake_pure":
        # Cells that pass the structural filter (count c, a key-shaped payload times c) but
        # carry checks that are not the key's: the BLAKE2b check must refuse them.
        for cell in rng.integers(0, cells, draw(st.integers(1, 8))):
            c = int(rng.integers(1, P))
            length = int(rng.integers(0, params.max_key_bytes + 1))
            chunks = rng.integers(0, 2 ** (8 * CHUNK_BYTES), params.num_chunks, dtype=np.uint64)
            row = [1, length, *chunks.tolist(), *rng.integers(0, P, 2).tolist()]
            table[cell] = [x * c % P for x in row]
    else:  # scaled_keys: real keys' sketches times arbitrary field elements, plus noise
        names = draw(st.lists(keys.filter(lambda k: len(k.encode()) <= params.max_key_bytes),
                              unique=True, min_size=1, max_size=params.capacity))
        counts = {k: int(x) for k, x in zip(names, rng.integers(1, P, len(names)),
                                           strict=True)}
        half = (P - 1) // 2
        counts = {k: (v if v <= half else v - P) for k, v in counts.items()}
        table = IbltSketch.from_counts(params, counts).to_vector().reshape(cells, width)
        if draw(st.booleans()):
            table[rng.integers(0, cells)] = rng.integers(0, P, width, dtype=np.uint64)
    return params, table.reshape(-1)


@given(case=garbage_vectors())
def test_decode_of_arbitrary_vectors_terminates_and_is_self_consistent(case):
    params, vector = case
    sketch = IbltSketch.from_vector(params, vector)
    result = checked_decode(sketch)
    assert checked_decode(sketch) == result  # deterministic


@given(case=garbage_vectors())
def test_linearity_holds_on_garbage(case):
    params, vector = case
    sketch = IbltSketch.from_vector(params, vector)
    assert (sketch - sketch).decode() == DecodeResult({}, True)
    negated = -sketch
    assert sketch + IbltSketch.empty(params) == sketch == -negated
    assert (sketch + negated).decode() == DecodeResult({}, True)
    assert IbltSketch.from_vector(params, sketch.to_vector()) == sketch


# ------------------------------------------------------------------- corrupted honest sums
@st.composite
def honest_sums(draw):
    """(params, sketch of the sum of clients' key sets, true histogram)."""
    params = draw(params_st)
    universe = draw(st.lists(keys.filter(lambda k: len(k.encode()) <= params.max_key_bytes),
                             unique=True, max_size=2 * params.capacity))
    clients = [sorted(set(draw(st.lists(st.sampled_from(universe), max_size=len(universe)))))
               if universe else [] for _ in range(draw(st.integers(1, 6)))]
    truth = dict(Counter(k for ks in clients for k in ks))
    return params, sum(IbltSketch.from_keys(params, ks) for ks in clients), truth


@given(case=honest_sums(), data=st.data())
def test_corrupted_honest_sum_never_yields_a_wrong_count(case, data):
    """Entries overwritten with random or special values, random deltas added, cells zeroed or
    filled with random data: what decode reports is still true."""
    params, total, truth = case
    clean = checked_decode(total)
    assert all(truth[k] == v for k, v in clean.counts.items())
    assert not clean.complete or clean.counts == truth
    table = total.to_vector().reshape(params.num_cells, params.cell_width)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 6))):
        how = data.draw(st.sampled_from(["set", "special", "delta", "zero_cell", "random_cell"]))
        cell = data.draw(st.integers(0, params.num_cells - 1))
        col = data.draw(st.integers(0, params.cell_width - 1))
        if how == "set":
            table[cell, col] = rng.integers(0, P)
        elif how == "special":
            table[cell, col] = data.draw(st.sampled_from(SPECIAL))
        elif how == "delta":
            table[cell, col] = (int(table[cell, col]) + int(rng.integers(1, P))) % P
        elif how == "zero_cell":
            table[cell] = 0
        else:
            table[cell] = rng.integers(0, P, params.cell_width, dtype=np.uint64)
    corrupted = IbltSketch.from_vector(params, table.reshape(-1))
    result = checked_decode(corrupted)
    wrong = {k: (v, truth.get(k)) for k, v in result.counts.items() if truth.get(k) != v}
    assert not wrong, f"wrong counts (decoded, true): {wrong}"
    # A complete result is the histogram the corrupted table encodes (checked_decode): the true
    # one, or a subset when the corruption erased every cell of some keys (undetectable).
    event(f"corrupted: complete={result.complete}, "
          f"{'all' if result.counts == truth else 'some'} true keys")


@pytest.mark.xfail(strict=True, reason=(
    "known limitation, documented (SECURITY.md, proofs/iblt-no-wrong-count.md): a forged "
    "single-cell copy of a key's row in a stalled table yields a wrong count with "
    "complete=False; the no-wrong-count guarantee is for sums of honest sketches"))
def test_forged_single_cell_copy_in_a_stalled_table_never_yields_a_wrong_count():
    """420 keys in a table sized for 30: peeling stalls. One client adds a second copy of the
    row of key k0-4 to the one cell where that key sits alone: decode peels k0-4 there with
    count 2, and the cells that would expose the lie never peel."""
    params = IbltParams(capacity=30, max_key_bytes=16, seed=0)
    truth = {f"k0-{i}": 1 for i in range(420)}
    table = IbltSketch.from_counts(params, truth).to_vector().reshape(params.num_cells, -1)
    row = IbltSketch.from_keys(params, ["k0-4"]).to_vector().reshape(params.num_cells, -1)
    alone = [c for c in np.flatnonzero(row[:, 0]) if np.array_equal(table[c], row[c])]
    assert alone, "k0-4 sits alone in one of its cells"
    table[alone[0]] = (table[alone[0]] + row[alone[0]]) % P
    result = IbltSketch.from_vector(params, table.reshape(-1)).decode()
    assert not result.complete
    assert all(truth.get(k) == v for k, v in result.counts.items()), result.counts.get("k0-4")
