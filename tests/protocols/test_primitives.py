"""Shamir sharing, the mask PRG, the neighbour graph, SecAgg+ parameters and the wire decoders."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptfl_secure.protocols import choose_secagg_plus_params, shamir
from gptfl_secure.protocols import messages as m
from gptfl_secure.protocols.errors import MessageError
from gptfl_secure.protocols.graph import neighbours
from gptfl_secure.protocols.ring import Ring


# ------------------------------------------------------------------- Shamir
@given(st.integers(0, 2**256 - 1), st.integers(1, 12), st.integers(0, 8), st.randoms())
def test_any_t_shares_reconstruct_the_secret(secret, t, extra, rnd):
    xs = rnd.sample(range(1, 10_000), t + extra)
    shares = shamir.split(secret, xs, t)
    subset = rnd.sample(list(zip(xs, shares, strict=True)), t)
    assert shamir.reconstruct(subset, t) == secret


@given(st.integers(2, 10), st.randoms())
def test_fewer_than_t_shares_do_not_determine_the_secret(t, rnd):
    """The polynomial has degree t-1: interpolating any t-1 shares misses the secret (a split
    with too few random coefficients would let t-1 shares reconstruct it)."""
    xs = rnd.sample(range(1, 1000), t)
    secret = rnd.getrandbits(256)
    shares = shamir.split(secret, xs, t)
    points = list(zip(xs, shares, strict=True))
    for subset in itertools.combinations(points, t - 1):
        assert shamir.reconstruct(list(subset), t - 1) != secret


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(5, [1, 2], 3)
    with pytest.raises(ValueError, match="distinct and nonzero"):
        shamir.split(5, [1, 1, 2], 2)
    with pytest.raises(ValueError, match="secret"):
        shamir.split(shamir.PRIME, [1, 2], 2)
    with pytest.raises(ValueError, match="shares < threshold"):
        shamir.reconstruct([(1, 2)], 2)
    with pytest.raises(ValueError, match="field element"):
        shamir.from_bytes(shamir.PRIME.to_bytes(33, "big"))


# ------------------------------------------------------------------- ring and PRG
@pytest.mark.parametrize("q", [2, 3, 2**16, 1_000_003, 2**32, 2**33 + 5, 2**61 - 1, 2**62])
def test_masks_are_deterministic_in_range_and_seed_dependent(q):
    ring = Ring(q, 1000)
    a, b = ring.mask(b"\x01" * 32), ring.mask(b"\x01" * 32)
    c = ring.mask(b"\x02" * 32)
    assert np.array_equal(a, b) and not np.array_equal(ring.reduce(a), ring.reduce(c))
    assert int(ring.reduce(a).max()) < q


@pytest.mark.parametrize("q", [3, 5, 7, 10, 1000, 2**32 - 5])
def test_rejection_sampled_masks_are_uniform(q):
    """Chi-square on 60k draws: masks mod a non-power-of-two q have no modular bias."""
    ring = Ring(q, 60_000)
    values = ring.reduce(ring.mask(bytes(range(32)))).astype(np.int64)
    bins = min(q, 50)
    counts = np.bincount((values * bins) // q, minlength=bins)
    expected = np.array([((i + 1) * q + bins - 1) // bins - (i * q + bins - 1) // bins
                         for i in range(bins)]) * 60_000 / q
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < bins + 6 * math.sqrt(2 * bins)  # ~6 sigma above the mean of chi2(bins - 1)


@given(st.sampled_from([2, 7, 2**16, 2**32, 1_000_003, 2**61 - 1, 2**62]),
       st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.sampled_from([1, -1])),
                max_size=6))
def test_adding_then_subtracting_masks_cancels(q, masks):
    ring = Ring(q, 64)
    x = np.random.default_rng(0).integers(0, q, 64, dtype=np.uint64)
    acc = ring.lift(x)
    for seed, sign in masks:
        ring.add_mask_(acc, seed, sign)
    for seed, sign in masks:
        ring.add_mask_(acc, seed, -sign)
    assert ring.reduce(acc).tolist() == x.tolist()


# ------------------------------------------------------------------- graph
@given(st.integers(3, 60), st.sampled_from([2, 4, 6, 8]), st.binary(min_size=32, max_size=32))
def test_secagg_plus_graph_is_symmetric_and_k_regular(n, k, seed):
    graph = neighbours(range(n), k, seed)
    degree = min(k, n - 1)
    for u, peers in graph.items():
        assert u not in peers and len(peers) == degree
        assert all(u in graph[v] for v in peers)


def test_graph_depends_on_public_seed():
    a = neighbours(range(40), 4, b"a" * 32)
    b = neighbours(range(40), 4, b"b" * 32)
    assert a != b and neighbours(range(40), 4, b"a" * 32) == a


def test_complete_graph_without_k():
    graph = neighbours([3, 5, 9], None, b"")
    assert graph == {3: {5, 9}, 5: {3, 9}, 9: {3, 5}}


# ------------------------------------------------------------------- SecAgg+ parameters
@pytest.mark.parametrize("n", [1000, 10_000])
def test_secagg_plus_params_meet_security_and_failure_targets(n):
    k, t = choose_secagg_plus_params(n, 0.1, 0.1)
    assert k % 2 == 0 and (k + 1) / 2 < t <= k < n
    # No neighbourhood holds 2t - k - 1 colluders, who could otherwise help a server show two
    # sets of t members different survivor sets.
    tail = sum(math.comb(k, i) * 0.1**i * 0.9 ** (k - i) for i in range(2 * t - k - 1, k + 1))
    assert n * tail <= 2**-40
    live = sum(math.comb(k, i) * 0.9**i * 0.1 ** (k - i) for i in range(t, k + 1))
    assert n * (1 - live) <= 2**-20


def test_secagg_plus_falls_back_to_the_complete_graph_when_no_sparse_graph_is_safe():
    k, t = choose_secagg_plus_params(100, 0.1, 0.1)
    assert k >= 99 and t > (k + 1) / 2


def test_secagg_plus_params_k_grows_slowly_with_n():
    ks = [choose_secagg_plus_params(n, 0.1, 0.1)[0] for n in (1000, 10_000, 100_000)]
    assert ks == sorted(ks) and ks[-1] <= 2 * ks[0]


@pytest.mark.parametrize("args", [(1, 0.1, 0.1), (100, 1.0, 0.1), (100, 0.6, 0.5)])
def test_secagg_plus_params_reject_bad_rates(args):
    with pytest.raises(ValueError):
        choose_secagg_plus_params(*args)


# ------------------------------------------------------------------- decoders
DECODERS = [m.read_ids, m.read_advertise, m.read_list, m.read_shares, m.read_relay,
            m.read_unmask, lambda b: m.read_vector(b, 8, 2**32, 4)]


@given(st.sampled_from(DECODERS), st.binary(max_size=300))
def test_decoders_raise_only_message_error_on_arbitrary_bytes(decoder, data):
    try:
        decoder(data)
    except MessageError:
        pass


@given(st.binary(max_size=200), st.sampled_from(list(m.MsgType)))
def test_envelope_rejects_arbitrary_bytes_with_message_error(data, type_):
    with pytest.raises(MessageError):
        m.open_envelope(data, type_, b"\x00" * 32)


def test_envelope_names_each_defect():
    sid = b"s" * 32
    good = m.seal(m.MsgType.SURVIVORS, sid, m.SERVER, m.ids_body([1, 2]))
    assert m.read_ids(m.open_envelope(good, m.MsgType.SURVIVORS, sid).body) == {1, 2}
    cases = {
        "bad magic": b"XXX" + good[3:],
        "version": good[:3] + b"\x09" + good[4:],
        "expected a SURVIVORS": m.seal(m.MsgType.KEY_LIST, sid, m.SERVER, b""),
        "another session": m.seal(m.MsgType.SURVIVORS, b"t" * 32, m.SERVER, b""),
        "announces": good + b"\x00",
        "shorter than the header": good[:10],
    }
    for needle, data in cases.items():
        with pytest.raises(MessageError, match=needle):
            m.open_envelope(data, m.MsgType.SURVIVORS, sid)


def test_id_lists_must_be_strictly_increasing():
    body = m.u32(2) + m.u32(5) + m.u32(5)
    with pytest.raises(MessageError, match="strictly increasing"):
        m.read_ids(body)


def test_unmask_with_two_shares_for_one_peer_is_rejected():
    share = bytes(33)
    body = m.u32(2) + b"".join(m.u32(7) + bytes([k]) + share for k in (1, 2))
    with pytest.raises(MessageError, match="one share per peer"):
        m.read_unmask(body)


def test_all_share_kinds_and_counts_round_trip():
    entries = [(p, k, bytes([p]) * 33) for p, k in itertools.product(range(3), m.ShareKind)]
    unique = {p: (k, s) for p, k, s in entries[::2]}
    body = m.unmask_body([(p, k, s) for p, (k, s) in unique.items()])
    assert m.read_unmask(body) == unique
