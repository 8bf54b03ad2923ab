"""Batched (vmap) local training: each client's Δ matches train_locally's within float tolerance,
is deterministic, leaves the scratch model alone, and what cannot be batched is refused with
BatchingUnsupported.

Tolerance: a batched client's sums are taken in another order than train_locally's (a grouped
convolution over the stacked clients, batches padded to the batch size), so Δ differs by float32
rounding (eps 1.2e-7) carried through the steps. Measured on small_cnn, the cohorts of rounds
1-3 of the default run (clients of 5 to 68 examples, 5 epochs, up to 45 steps, |Δ| up to 2.3):
at most 6e-7 absolute (benches/results/batched_bench.txt), about what train_locally itself moves
when its start moves by one ulp. The bound ATOL + RTOL·|Δ| with ATOL = 1e-5 and RTOL = 1e-4
leaves over 15x headroom and is still far below what one step changes (lr·grad, about 1e-3):
:func:`test_the_tolerance_catches_a_wrong_batch_order` checks that a client trained in another
batch order falls outside it.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gptfl_secure.learning.batched import (
    BatchingUnsupported,
    batch_plan,
    probe,
    split_batches,
    train_batched,
    train_in_batches,
)
from gptfl_secure.learning.data import Dataset, load_digits_split
from gptfl_secure.learning.local import LocalTrainingConfig, model_to_vector, train_locally
from gptfl_secure.learning.models import ConvNet, SmallDigitsCNN

RTOL, ATOL = 1e-4, 1e-5
DIGITS, _ = load_digits_split(0.2, seed=0)


def _clients(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [DIGITS.subset(rng.choice(len(DIGITS), n, replace=False)) for n in sizes]


def _model(seed=0):
    torch.manual_seed(seed)
    return SmallDigitsCNN()


def _assert_close_to_train_locally(model, parts, config, seeds):
    start = model_to_vector(model)
    batched = train_batched(model, start, parts, config, seeds)
    for part, seed, delta in zip(parts, seeds, batched, strict=True):
        reference = train_locally(model, start, part, config, seed)
        np.testing.assert_allclose(delta, reference, rtol=RTOL, atol=ATOL)
        assert delta.dtype == np.float32 and np.abs(reference).max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_cnn_clients_of_unequal_sizes_match_train_locally(seed):
    config = LocalTrainingConfig(epochs=2, batch_size=8, lr=0.05)
    parts = _clients([23, 1, 8, 40, 5], seed)
    _assert_close_to_train_locally(_model(seed), parts, config, [seed * 10 + k for k in range(5)])


@settings(max_examples=8)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5),
       batch_size=st.integers(1, 12), epochs=st.integers(1, 2),
       momentum=st.sampled_from([0.0, 0.9]), weight_decay=st.sampled_from([0.0, 5e-4]),
       seed=st.integers(0, 2**32 - 1))
def test_any_cohort_matches_train_locally(sizes, batch_size, epochs, momentum, weight_decay,
                                          seed):
    config = LocalTrainingConfig(epochs=epochs, batch_size=batch_size, lr=0.03,
                                 momentum=momentum, weight_decay=weight_decay)
    parts = _clients(sizes, seed % 1000)
    seeds = [(seed + k) % 2**32 for k in range(len(sizes))]
    _assert_close_to_train_locally(_model(), parts, config, seeds)


def test_convnet_with_group_norm_matches_train_locally():
    torch.manual_seed(0)
    model = ConvNet(in_channels=1, num_classes=10, width=8, image_size=8)
    config = LocalTrainingConfig(epochs=1, batch_size=8, lr=0.05)
    _assert_close_to_train_locally(model, _clients([19, 6, 11]), config, [3, 4, 5])


def test_the_tolerance_catches_a_wrong_batch_order():
    model, config = _model(), LocalTrainingConfig(epochs=1, batch_size=8)
    parts = _clients([30])
    start = model_to_vector(model)
    [delta] = train_batched(model, start, parts, config, [7])
    other = train_locally(model, start, parts[0], config, seed=8)
    assert not np.allclose(delta, other, rtol=RTOL, atol=ATOL)


def test_deterministic_and_the_model_is_left_alone():
    model, config = _model(), LocalTrainingConfig(epochs=2, batch_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = model_to_vector(model) + np.float32(0.01)
    parts = _clients([17, 3, 29])
    one = train_batched(model, start, parts, config, [1, 2, 3])
    two = train_batched(model, start, parts, config, [1, 2, 3])
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_batch_plan_is_train_locally_order():
    config = LocalTrainingConfig(epochs=2, batch_size=4)
    index, mask = batch_plan([6, 3], config, [11, 12])
    assert index.shape == mask.shape == (2, 4, 4)  # T = 2 epochs x ceil(6 / 4)
    rng = np.random.default_rng(11)
    first, second = rng.permutation(6), rng.permutation(6)
    assert list(index[0][mask[0]]) == list(first) + list(second)
    assert mask[0].sum(axis=1).tolist() == [4, 2, 4, 2]
    assert mask[1].sum(axis=1).tolist() == [3, 3, 0, 0]  # finished after its 2 steps


def test_fedprox_batchnorm_and_dropout_are_refused():
    parts = _clients([4, 4])
    with pytest.raises(BatchingUnsupported, match="FedProx.*process pool"):
        train_batched(_model(), model_to_vector(_model()), parts,
                      LocalTrainingConfig(prox_mu=0.1), [0, 1])
    bn = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 10))
    with pytest.raises(BatchingUnsupported, match="BatchNorm1d.*running statistics"):
        train_batched(bn, model_to_vector(bn), parts, LocalTrainingConfig(), [0, 1])
    drop = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10))
    with pytest.raises(BatchingUnsupported, match="Dropout"):
        probe(drop, LocalTrainingConfig(), parts[0])


def test_probe_turns_a_failure_inside_vmap_into_batching_unsupported():
    class RandomInForward(nn.Module):  # random numbers drawn by a function, not a module
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return nn.functional.dropout(self.fc(x.flatten(1)), 0.5, training=True)

    model = RandomInForward()
    probe(_model(), LocalTrainingConfig(), DIGITS)  # small_cnn can be batched
    with pytest.raises(BatchingUnsupported, match="vmap cannot batch RandomInForward"):
        probe(model, LocalTrainingConfig(), DIGITS)


def test_empty_client_and_seed_count_are_value_errors():
    model = _model()
    empty = Dataset(DIGITS.x[:0], DIGITS.y[:0], DIGITS.label_names)
    with pytest.raises(ValueError, match="no examples"):
        train_batched(model, model_to_vector(model), [empty], LocalTrainingConfig(), [0])
    with pytest.raises(ValueError, match="seeds"):
        train_batched(model, model_to_vector(model), _clients([3]), LocalTrainingConfig(), [])
    assert train_batched(model, model_to_vector(model), [], LocalTrainingConfig(), []) == []


def test_split_batches_deals_the_largest_first_in_snake_order():
    sizes = [5, 68, 31, 10, 48, 14, 6, 34, 32, 41]
    batches = split_batches(sizes, 5)
    # by size: 68 48 41 34 32 31 14 10 6 5 -> batch 0: 68 34 32 10 6, batch 1: 48 41 31 14 5
    assert [[sizes[k] for k in b] for b in batches] == [[68, 34, 32, 10, 6],
                                                        [48, 41, 31, 14, 5]]
    assert split_batches(sizes, 10) == [sorted(range(10), key=lambda k: -sizes[k])]
    assert sorted(len(b) for b in split_batches(sizes, 4)) == [3, 3, 4]
    assert split_batches([], 5) == [] and split_batches([7, 7], 1) == [[0], [1]]
    with pytest.raises(ValueError, match="per_batch"):
        split_batches(sizes, 0)


def test_train_in_batches_is_train_batched_batch_by_batch():
    model, config = _model(), LocalTrainingConfig(epochs=1, batch_size=8)
    parts = _clients([23, 1, 8, 40, 5, 17, 12])
    seeds = list(range(7))
    start = model_to_vector(model)
    deltas = train_in_batches(model, start, parts, config, seeds, per_batch=3)
    for batch in split_batches([len(p) for p in parts], 3):
        alone = train_batched(model, start, [parts[k] for k in batch], config,
                              [seeds[k] for k in batch])
        assert all(np.array_equal(deltas[k], d) for k, d in zip(batch, alone, strict=True))
