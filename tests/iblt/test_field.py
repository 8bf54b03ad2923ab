"""Field arithmetic mod 2^61 - 1 agrees with Python's exact integers."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.iblt import field

P = field.MODULUS
elements = st.lists(st.integers(0, P - 1), min_size=1, max_size=50)


@given(elements, elements)
def test_mul_matches_python_integers(a, b):
    n = min(len(a), len(b))
    a, b = a[:n] + [P - 1], b[:n] + [P - 1]
    got = field.mul(np.array(a, np.uint64), np.array(b, np.uint64))
    assert got.tolist() == [(x * y) % P for x, y in zip(a, b, strict=True)]


@given(elements, elements)
def test_add_sub_neg_match_python_integers(a, b):
    n = min(len(a), len(b))
    x, y = np.array(a[:n], np.uint64), np.array(b[:n], np.uint64)
    assert field.add(x, y).tolist() == [(u + v) % P for u, v in zip(a[:n], b[:n], strict=True)]
    assert field.sub(x, y).tolist() == [(u - v) % P for u, v in zip(a[:n], b[:n], strict=True)]
    assert field.neg(x).tolist() == [(-u) % P for u in a[:n]]


@given(st.lists(st.integers(-(P // 2), P // 2), min_size=1, max_size=50))
def test_signed_round_trip(values):
    v = np.array(values, dtype=np.int64)
    assert field.to_signed(field.from_signed(v)).tolist() == values


@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, P - 1)), min_size=1, max_size=200),
)
def test_add_rows_to_cells_accumulates_repeats_exactly(contribs):
    """Many contributions to one cell (far more than 8 of ~2^61) must not overflow uint64."""
    table = np.zeros((5, 1), dtype=np.uint64)
    cells = np.array([[c] for c, _ in contribs], dtype=np.int64)
    rows = np.array([[v] for _, v in contribs], dtype=np.uint64)
    field.add_rows_to_cells(table, cells, rows)
    expected = [0] * 5
    for c, v in contribs:
        expected[c] = (expected[c] + v) % P
    assert table[:, 0].tolist() == expected


def test_inverse_of_zero_is_an_error():
    try:
        field.inverse(np.array([0], np.uint64))
    except ZeroDivisionError:
        return
    raise AssertionError("inverse(0) must raise")


@given(st.data())
def test_add_rows_to_cells_matches_python_integers_on_any_table(data):
    """A non-zero table, rows sent to several cells each, light and heavy (> 7 rows) cells."""
    cells_n, width = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 3))
    n, r = data.draw(st.integers(0, 40)), data.draw(st.integers(1, 3))
    near_p = st.integers(0, P - 1) | st.integers(P - 8, P - 1)
    table = np.array(data.draw(st.lists(st.lists(near_p, min_size=width, max_size=width),
                                        min_size=cells_n, max_size=cells_n)), np.uint64)
    rows = np.array(data.draw(st.lists(st.lists(near_p, min_size=width, max_size=width),
                                       min_size=n, max_size=n)), np.uint64).reshape(n, width)
    cells = np.array(data.draw(st.lists(st.lists(st.integers(0, cells_n - 1), min_size=r,
                                                  max_size=r), min_size=n, max_size=n)),
                     np.int64).reshape(n, r)
    expected = table.astype(object)
    for i in range(n):
        for j in range(r):
            expected[cells[i, j]] = (expected[cells[i, j]] + rows[i].astype(object)) % P
    touched = field.add_rows_to_cells(table, cells, rows)
    assert table.tolist() == expected.tolist()
    assert touched.tolist() == sorted(set(cells.ravel().tolist()))
