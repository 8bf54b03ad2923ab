"""MomentumSgd (learning/sgd.py) against torch.optim.SGD: bit-identical steps on CPU, and local
training that never imports torch._dynamo (the reason it exists)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gptfl_secure.learning.sgd import MomentumSgd


def model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def trained(make_optimizer, seed: int, steps: int, frozen: bool) -> list[torch.Tensor]:
    net = model(seed)
    if frozen:  # a parameter without a gradient is skipped, as torch.optim skips it
        net[0].bias.requires_grad_(False)
    opt = make_optimizer([p for p in net.parameters()])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(6, 1, 4, 4, generator=gen)
        y = torch.randint(0, 3, (6,), generator=gen)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [t.detach().clone() for t in net.state_dict().values()]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 6),
       lr=st.floats(1e-4, 1.0), momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
       weight_decay=st.sampled_from([0.0, 5e-4, 0.1]), frozen=st.booleans())
def test_steps_are_bit_identical_to_torch_optim_sgd(seed, steps, lr, momentum, weight_decay,
                                                     frozen):
    ours = trained(lambda ps: MomentumSgd(ps, lr=lr, momentum=momentum,
                                          weight_decay=weight_decay), seed, steps, frozen)
    reference = trained(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum,
                                                   weight_decay=weight_decay), seed, steps, frozen)
    for a, b in zip(ours, reference, strict=True):
        assert torch.equal(a, b)


def test_a_broken_update_is_caught():
    """The comparison has teeth: momentum applied without the first-step clone differs."""
    class Dampened(MomentumSgd):
        @torch.no_grad()
        def step(self):
            for param in self.params:
                if param.grad is not None:
                    param.add_(param.grad, alpha=-self.lr)  # momentum dropped

    ours = trained(lambda ps: Dampened(ps, lr=0.1, momentum=0.9), 0, 3, False)
    reference = trained(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), 0, 3, False)
    assert not all(torch.equal(a, b) for a, b in zip(ours, reference, strict=True))


@pytest.mark.parametrize("prox_mu", [0.0, 0.01])
def test_local_training_does_not_import_dynamo(prox_mu):
    """A fresh process that trains a client (what a Flower node's training message does) does
    not import torch._dynamo, which torch.optim pulls in (about 1 s of CPU)."""
    code = f"""
import sys
import numpy as np
from torch import nn
from gptfl_secure.learning.data import Dataset
from gptfl_secure.learning.local import LocalTrainingConfig, model_to_vector, train_locally
net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
rng = np.random.default_rng(0)
data = Dataset(rng.normal(size=(20, 1, 4, 4)).astype(np.float32),
               rng.integers(0, 3, 20).astype(np.int64), ("a", "b", "c"))
delta = train_locally(net, model_to_vector(net), data,
                      LocalTrainingConfig(epochs=2, batch_size=4, prox_mu={prox_mu}), seed=1)
assert np.abs(delta).sum() > 0
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False"]


def test_train_locally_matches_a_torch_optim_reference():
    """train_locally with MomentumSgd equals the same loop with torch.optim.SGD, bit for bit."""
    import gptfl_secure.learning.local as local
    from gptfl_secure.learning.data import Dataset
    from gptfl_secure.learning.local import LocalTrainingConfig, model_to_vector, train_locally

    rng = np.random.default_rng(3)
    data = Dataset(rng.normal(size=(37, 1, 4, 4)).astype(np.float32),
                   rng.integers(0, 3, 37).astype(np.int64), ("a", "b", "c"))
    config = LocalTrainingConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9,
                                 weight_decay=5e-4)
    net = model(0)
    start = model_to_vector(net)
    ours = train_locally(net, start, data, config, seed=11)

    class TorchSgd(torch.optim.SGD):
        def __init__(self, params, *, lr, momentum, weight_decay):
            super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

        def zero_grad(self, set_to_none=True):
            super().zero_grad(set_to_none=True)

    original = local.MomentumSgd
    local.MomentumSgd = TorchSgd
    try:
        reference = train_locally(net, start, data, config, seed=11)
    finally:
        local.MomentumSgd = original
    np.testing.assert_array_equal(ours, reference)
