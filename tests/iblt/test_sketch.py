"""Properties of the IBLT sketch: exact decoding under capacity, linearity, never a wrong count."""

import hashlib
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.iblt import DecodeResult, IbltParams, IbltSketch
from gptfl_secure.iblt.params import cells_per_subtable

# A table that stalls with probability <= 1e-9 within capacity, for the properties that need a
# complete decode; the default sizing (stalls <= 1%, retried) is tested in test_sizing.py.
PARAMS = IbltParams(capacity=50, max_key_bytes=64, seed=0, max_failure=1e-9)

# Any Unicode text (NUL, surrogate-free), up to 16 code points = at most 64 UTF-8 bytes.
keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)


@st.composite
def clients_with_keys(draw, max_distinct=PARAMS.capacity):
    """A universe of distinct keys and, per client, a random subset of it."""
    universe = draw(st.lists(keys, unique=True, min_size=0, max_size=max_distinct))
    n_clients = draw(st.integers(1, 8))
    return [
        sorted(set(draw(st.lists(st.sampled_from(universe), max_size=len(universe)))))
        if universe
        else []
        for _ in range(n_clients)
    ]


def histogram(client_sets):
    return dict(Counter(k for keys_ in client_sets for k in keys_))


@given(clients_with_keys())
def test_decode_exact_histogram_for_keys_split_over_clients(client_sets):
    total = sum(IbltSketch.from_keys(PARAMS, ks) for ks in client_sets)
    assert total.decode() == DecodeResult(histogram(client_sets), True)


@given(st.dictionaries(keys, st.integers(-5, 5)), st.dictionaries(keys, st.integers(-5, 5)))
def test_sketch_of_union_is_sum_of_sketches(a, b):
    union = Counter(a)
    union.update(b)
    lhs = IbltSketch.from_counts(PARAMS, a) + IbltSketch.from_counts(PARAMS, b)
    assert lhs == IbltSketch.from_counts(PARAMS, dict(union))


@given(st.dictionaries(keys, st.integers(1, 9), max_size=20),
       st.dictionaries(keys, st.integers(1, 9), max_size=20))
def test_subtraction_decodes_to_signed_difference(a, b):
    diff = Counter(a)
    diff.subtract(b)
    expected = {k: v for k, v in diff.items() if v != 0}
    result = (IbltSketch.from_counts(PARAMS, a) - IbltSketch.from_counts(PARAMS, b)).decode()
    assert result == DecodeResult(expected, True)


@given(st.dictionaries(keys, st.integers(-1000, 1000), max_size=60))
def test_vector_round_trip_is_exact(counts):
    sketch = IbltSketch.from_counts(PARAMS, counts)
    vector = sketch.to_vector()
    assert vector.dtype == np.uint64 and vector.shape == (PARAMS.vector_length,)
    assert int(vector.max(initial=0)) < PARAMS.modulus
    assert IbltSketch.from_vector(PARAMS, vector) == sketch


@given(st.integers(2, 8).map(lambda k: k * 10), st.integers(0, 2**32))
def test_over_capacity_never_returns_a_wrong_count(n_keys, seed):
    params = IbltParams(capacity=5, max_key_bytes=16, seed=seed)
    truth = {f"k{seed}-{i}": 1 + i % 3 for i in range(n_keys)}
    result = IbltSketch.from_counts(params, truth).decode()
    assert not result.complete or result.counts == truth
    assert all(truth.get(k) == v for k, v in result.counts.items())


@given(st.dictionaries(keys, st.integers(1, 5), min_size=1, max_size=40),
       st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 2**61 - 2)), min_size=1,
                max_size=8))
def test_corrupted_vector_never_yields_a_wrong_count(truth, corruptions):
    vector = IbltSketch.from_counts(PARAMS, truth).to_vector()
    for position, value in corruptions:
        vector[position % vector.size] = value
    result = IbltSketch.from_vector(PARAMS, vector).decode()
    assert all(truth.get(k) == v for k, v in result.counts.items())
    assert not result.complete or result.counts == truth


@given(st.integers(0, 2**32))
def test_decode_terminates_on_random_vectors(seed):
    rng = np.random.default_rng(seed)
    vector = rng.integers(0, PARAMS.modulus, PARAMS.vector_length, dtype=np.uint64)
    result = IbltSketch.from_vector(PARAMS, vector).decode()
    assert result.complete is False


def test_forged_repeated_key_is_reported_inconsistent_not_counted():
    """A table where 'k' is pure in one cell only: peeling it makes '-k' pure elsewhere."""
    one = IbltSketch.from_keys(PARAMS, ["k"]).to_vector().reshape(PARAMS.num_cells, -1)
    forged = np.zeros_like(one)
    first_cell = int(np.flatnonzero(one[:, 0])[0])
    forged[first_cell] = one[first_cell]
    result = IbltSketch.from_vector(PARAMS, forged.reshape(-1)).decode()
    assert result == DecodeResult({}, False)


def test_average_of_two_keys_does_not_shadow_a_third():
    """'label-552' and 'label-754' average to 'label-653' chunk-wise: all three must decode."""
    params = IbltParams(capacity=1000, max_key_bytes=32, seed=0)
    names = [f"label-{i}" for i in range(1000)]
    result = IbltSketch.from_keys(params, names).decode()
    assert result == DecodeResult(dict.fromkeys(names, 1), True)


def test_an_impure_cell_that_averages_to_a_key_does_not_hide_its_pure_cells():
    """Seed 55: label-552 and label-754 share cell 4 (their average is label-653), which sorts
    before label-653's three pure cells; the decoder must still peel label-653 in that round
    (hashing one candidate per distinct unit row instead would drop its pure cells for good)."""
    params = IbltParams(capacity=3, max_key_bytes=16, seed=55)
    names = ["label-552", "label-754", "label-653"]
    assert IbltSketch.from_keys(params, names).decode_exact() == dict.fromkeys(names, 1)


@pytest.mark.parametrize("count", [2, 3, -1])
def test_averaging_cell_does_not_hide_pure_cells_of_keys_with_any_count(count):
    """The seed-55 collision with every key held ``count`` times: pure cells then have count
    ``count`` and the averaging cell ``2 * count``, so both are tested in the same round (no
    count-1 cell exists to go first) and must be told apart by their rows, not their keys."""
    params = IbltParams(capacity=3, max_key_bytes=16, seed=55)
    names = ["label-552", "label-754", "label-653"]
    sketch = IbltSketch.from_counts(params, dict.fromkeys(names, count))
    assert sketch.decode_exact() == dict.fromkeys(names, count)


def test_decode_hashes_each_key_about_once(monkeypatch):
    """Count-1 cells peel before cells of other counts, so the averages of two structured keys
    (count 2, often a well-formed encoding) are not hashed: decoding 20,000 'label-i' keys hashes
    at most 1% more keys than it decodes (it hashed 20% more when every cell was tested at once).
    Mixed counts still decode exactly."""
    import gptfl_secure.iblt.sketch as sketch_module

    hashed = []
    real = sketch_module.digest_keys
    monkeypatch.setattr(sketch_module, "digest_keys",
                        lambda params, keys: (hashed.append(len(keys)), real(params, keys))[1])
    n = 20_000
    params = IbltParams(capacity=n, max_key_bytes=32, seed=0)
    names = [f"label-{i}" for i in range(n)]
    assert IbltSketch.from_keys(params, names).decode_exact() == dict.fromkeys(names, 1)
    assert n <= sum(hashed) <= 1.01 * n
    mixed = {name: 1 + i % 3 for i, name in enumerate(names)}
    assert IbltSketch.from_counts(params, mixed).decode_exact() == mixed


@pytest.mark.parametrize("capacity", [10, 100])
def test_decode_succeeds_at_full_load_for_fixed_seeds(capacity):
    """Deterministic over seeds 0..299 at the default sizing (a stall within capacity has
    probability <= 1%): at most 9 stalls (P(Binomial(300, 0.01) > 9) < 1e-3), each detected."""
    failures = 0
    for seed in range(300):
        params = IbltParams(capacity=capacity, seed=seed)
        names = [f"{seed}/{i}" for i in range(capacity)]
        result = IbltSketch.from_keys(params, names).decode()
        failures += not result.complete
        assert all(result.counts[k] == 1 and k in names for k in result.counts)
    assert failures <= 9


def test_hashing_is_stable_across_processes():
    """Cell placement must not depend on Python's per-process hash randomisation."""
    code = (
        "import hashlib; from gptfl_secure.iblt import IbltParams, IbltSketch; "
        "p = IbltParams(capacity=20, seed=7);"
        "v = IbltSketch.from_keys(p, ['dog', 'cat', 'é']).to_vector();"
        "print(hashlib.sha256(v.astype('<u8').tobytes()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": str(s)},
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        for s in (1, 2)
    }
    local = IbltSketch.from_keys(IbltParams(capacity=20, seed=7), ["dog", "cat", "é"]).to_vector()
    assert digests == {hashlib.sha256(local.astype("<u8").tobytes()).hexdigest()}


def test_seed_changes_cell_placement():
    a = IbltSketch.from_keys(IbltParams(seed=1), ["dog"]).to_vector()
    b = IbltSketch.from_keys(IbltParams(seed=2), ["dog"]).to_vector()
    assert not np.array_equal(a, b)


def test_empty_key_and_nul_keys_are_distinct():
    names = ["", "\x00", "\x00\x00", "a", "a\x00"]
    result = IbltSketch.from_keys(PARAMS, names).decode()
    assert result == DecodeResult(dict.fromkeys(names, 1), True)


# ------------------------------------------------------------------- bad input
def test_key_too_long_names_size_and_limit():
    with pytest.raises(ValueError, match=r"71 bytes.*max_key_bytes=64"):
        IbltSketch.from_keys(PARAMS, ["x" * 71])


@pytest.mark.parametrize("bad", [3, b"dog", None, ("a",)])
def test_non_string_key_is_a_type_error(bad):
    with pytest.raises(TypeError, match="must be str"):
        IbltSketch.from_keys(PARAMS, ["ok", bad])


def test_duplicate_key_in_from_keys_is_rejected():
    with pytest.raises(ValueError, match="more than once"):
        IbltSketch.from_keys(PARAMS, ["dog", "dog"])


@pytest.mark.parametrize("bad", [1.5, True, "3"])
def test_non_integer_count_is_a_type_error(bad):
    with pytest.raises(TypeError, match="must be an int"):
        IbltSketch.from_counts(PARAMS, {"dog": bad})


def test_from_vector_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"shape \(3,\).*vector_length|need"):
        IbltSketch.from_vector(PARAMS, np.zeros(3, np.uint64))


def test_from_vector_rejects_float_dtype():
    with pytest.raises(ValueError, match="dtype"):
        IbltSketch.from_vector(PARAMS, np.zeros(PARAMS.vector_length, np.float64))


@pytest.mark.parametrize("bad", [2**61 - 1, 2**63])
def test_from_vector_rejects_entries_outside_the_field(bad):
    v = np.zeros(PARAMS.vector_length, np.uint64)
    v[5] = bad
    with pytest.raises(ValueError, match=r"\[0, p\)"):
        IbltSketch.from_vector(PARAMS, v)


def test_from_vector_rejects_negative_entries():
    v = np.zeros(PARAMS.vector_length, np.int64)
    v[0] = -1
    with pytest.raises(ValueError, match=r"\[0, p\)"):
        IbltSketch.from_vector(PARAMS, v)


def test_combining_sketches_with_different_params_is_rejected():
    a = IbltSketch.from_keys(PARAMS, ["a"])
    b = IbltSketch.from_keys(IbltParams(capacity=51), ["a"])
    with pytest.raises(ValueError, match="different params"):
        a + b
    with pytest.raises(ValueError, match="different params"):
        a - b
    with pytest.raises(TypeError):
        a + np.zeros(3)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"capacity": 0}, ValueError),
        ({"max_key_bytes": 0}, ValueError),
        ({"repetitions": 2}, ValueError),
        ({"repetitions": 7}, ValueError),
        ({"seed": -1}, ValueError),
        ({"capacity": 1.5}, TypeError),
        ({"max_failure": 0.5}, ValueError),
        ({"max_failure": 0.0}, ValueError),
        ({"max_failure": "0.01"}, TypeError),
    ],
)
def test_bad_params_are_rejected(kwargs, error):
    with pytest.raises(error):
        IbltParams(**kwargs)


def test_table_grows_with_capacity_and_small_tables_get_more_cells_per_key():
    sizes = [cells_per_subtable(n, 3) for n in (1, 10, 100, 1000, 10_000)]
    assert sizes == sorted(sizes)
    per_key = [3 * cells_per_subtable(n, 3) / n for n in (10, 100, 1000, 10_000)]
    assert per_key == sorted(per_key, reverse=True)
    assert per_key[-1] > 1.513  # above the density where the first-moment bound converges
