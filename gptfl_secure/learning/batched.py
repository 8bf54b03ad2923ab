"""A round's clients trained as one batched computation (``torch.func``: ``vmap`` over stacked
client parameters), instead of one after another or in worker processes.

Contract of :func:`train_batched` (against :func:`~.local.train_locally`, client by client):

* the same training: each client starts from the global vector, runs ``epochs`` passes of SGD
  over its own data in the batch order of ``np.random.default_rng(seed).permutation`` (the
  permutation ``train_locally`` draws, epoch after epoch), the loss being the mean cross-entropy
  over the batch's real examples, with ``torch.optim.SGD``'s update rule (weight decay added to
  the gradient; momentum buffer b = μ·b + g, b = g on the first step; p -= lr·b);
* the same result up to float rounding, not bit for bit: a client's batch is computed inside a
  stacked (grouped) convolution, padded to the round's batch size, so sums are taken in another
  order; tests/learning/test_batched.py bounds the difference;
* deterministic: the same inputs give the same bits, run after run (at a fixed thread count);
* but a client's bits depend on which other clients share its call (oneDNN picks its kernels by
  the stacked shapes: measured, a client alone, or stacked with 2 rather than 3 convnet clients
  on 28x28 images, rounds differently). So the sim trains a round in the batches of
  :func:`split_batches`, a function of the cohort alone, in one process
  (:func:`train_in_batches`) or one batch per task of a pool: the same bits either way;
* ``model`` is only read (for its structure and buffers): its state is left as it was.

Ragged clients: client k takes T_k = epochs·ceil(n_k / batch_size) steps. The clients are sorted
by T_k (largest first) and step t updates only the first K_t clients (those with T_k > t): a
finished client's parameters and momentum are not touched again, and it costs no computation.
A client's short last batch of an epoch is padded to ``batch_size`` with copies of one of its
examples whose per-example loss is multiplied by 0, so the mean is over its real examples.

What cannot be batched raises :class:`BatchingUnsupported` (train those clients with
``train_locally``, one after another or in the process pool): FedProx (``prox_mu`` > 0); models
with BatchNorm or other running statistics (state that the forward pass updates); floating
state that is not a trainable parameter; random operations in the forward pass (dropout: the
per-client generator of ``train_locally`` has no batched equivalent); an operation ``vmap``
cannot transform (:func:`probe`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from .data import Dataset
from .local import LocalTrainingConfig, float_state_keys, model_device, model_to_vector
from .sgd import sgd_update

USE_POOL = "train these clients with train_locally (one by one or in the process pool) instead"


class BatchingUnsupported(TypeError):
    """This model or training configuration cannot be trained as one batched computation."""


def check_batchable(model: nn.Module, config: LocalTrainingConfig) -> None:
    """Raise :class:`BatchingUnsupported` for what :func:`train_batched` refuses without running
    the model (FedProx, running statistics, floating state that is not a trainable parameter).
    :func:`probe` also runs one batched step."""
    if config.prox_mu > 0:
        raise BatchingUnsupported(f"FedProx (prox_mu={config.prox_mu}) is not batched; "
                                  f"{USE_POOL}")
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.modules.instancenorm.
                      _InstanceNorm) and module.track_running_stats:
            raise BatchingUnsupported(
                f"{type(module).__name__} at {name or 'the root'} keeps running statistics "
                f"that its forward pass updates; they are not batched; {USE_POOL}")
        if isinstance(module, nn.modules.dropout._DropoutNd):
            raise BatchingUnsupported(
                f"{type(module).__name__} at {name} draws random numbers, and the per-client "
                f"generator of train_locally has no batched equivalent; {USE_POOL}")
    params = dict(model.named_parameters())
    extra = [k for k in float_state_keys(model) if k not in params]
    if extra:
        raise BatchingUnsupported(f"floating state that is not a parameter ({', '.join(extra)})"
                                  f" is not batched; {USE_POOL}")
    frozen = [k for k, p in params.items() if not p.requires_grad]
    if frozen:
        raise BatchingUnsupported(f"parameters without requires_grad ({', '.join(frozen)}) are "
                                  f"not batched; {USE_POOL}")


def probe(model: nn.Module, config: LocalTrainingConfig, example: Dataset) -> None:
    """:func:`check_batchable`, then one batched step of 2 clients on 2 examples of ``example``:
    raises :class:`BatchingUnsupported` (with the cause chained) when ``vmap`` cannot transform
    the model's forward or backward pass (or the forward pass draws random numbers)."""
    check_batchable(model, config)
    if len(example) == 0:
        raise ValueError("probe needs at least one example")
    idx = np.arange(min(2, len(example)))
    tiny = example.subset(idx)
    vector = model_to_vector(model)
    one = LocalTrainingConfig(epochs=1, batch_size=2, lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
    try:
        train_batched(model, vector, [tiny, tiny], one, [0, 1])
    except BatchingUnsupported:
        raise
    except Exception as exc:  # vmap's errors are RuntimeErrors and NotImplementedErrors
        raise BatchingUnsupported(f"vmap cannot batch {type(model).__name__}: {exc}; "
                                  f"{USE_POOL}") from exc


CLIENTS_PER_BATCH = 5
"""How many clients :func:`split_batches` stacks into one batch at most. Measured on 2 cores
(small_cnn, cohorts of 10, 5 epochs, rounds 1-3): with 5, a 2-worker pool trained a round in
0.88x the time of the unbatched pool (2, 3, 4 and 10: 1.17x to 1.35x), and one process in 0.83x
the time of training the clients one after another (10 in one batch: 0.67x). One value for every
number of workers, because the batches decide the float rounding."""


def split_batches(sizes: Sequence[int], per_batch: int = CLIENTS_PER_BATCH) -> list[list[int]]:
    """Positions ``0 .. len(sizes) - 1`` of a round's clients (``sizes``: their example counts)
    dealt into ``ceil(len / per_batch)`` batches of similar cost: a batch lasts as many steps as
    its largest client, so the clients, largest first (ties by position), are dealt like cards
    in a snake order (0, 1, ..., g-1, g-1, ..., 0, 0, 1, ...). A function of ``sizes`` and
    ``per_batch`` only: a client's Δ depends on the rest of its batch (in float rounding), so
    the sim trains the same batches whether one process or a pool of any size trains them."""
    if per_batch < 1:
        raise ValueError(f"per_batch={per_batch}: must be >= 1")
    order = sorted(range(len(sizes)), key=lambda k: (-sizes[k], k))
    count = math.ceil(len(order) / per_batch)
    batches: list[list[int]] = [[] for _ in range(count)]
    for i, k in enumerate(order):
        lap, pos = divmod(i, count)
        batches[pos if lap % 2 == 0 else count - 1 - pos].append(k)
    return batches


def train_in_batches(model: nn.Module, global_vector: np.ndarray, data: Sequence[Dataset],
                     config: LocalTrainingConfig, seeds: Sequence[int],
                     per_batch: int = CLIENTS_PER_BATCH) -> list[np.ndarray]:
    """:func:`train_batched` over the batches of :func:`split_batches`, one after another:
    each client's Δ, in the order of ``data`` (what a pool gives that trains the same batches
    side by side)."""
    deltas: list[np.ndarray] = [np.empty(0, np.float32)] * len(data)
    for batch in split_batches([len(d) for d in data], per_batch):
        trained = train_batched(model, global_vector, [data[k] for k in batch], config,
                                [seeds[k] for k in batch])
        for k, delta in zip(batch, trained, strict=True):
            deltas[k] = delta
    return deltas


def client_steps(n: int, config: LocalTrainingConfig) -> int:
    """T = epochs·ceil(n / batch_size): the SGD steps of a client with ``n`` examples."""
    return config.epochs * math.ceil(n / config.batch_size)


def batch_plan(sizes: Sequence[int], config: LocalTrainingConfig, seeds: Sequence[int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Each client's batches, as positions into its own data: ``(index, mask)`` of shape
    ``(K, T_max, batch_size)``. Client k's step t < T_k takes examples ``index[k, t][mask[k,
    t]]``, the slice ``[s, s + batch_size)`` of the epoch's ``default_rng(seed).permutation``,
    the permutations of successive epochs drawn from the same generator (``train_locally``'s
    order); padding and steps t >= T_k hold position 0 with mask False."""
    b = config.batch_size
    steps = [client_steps(n, config) for n in sizes]
    index = np.zeros((len(sizes), max(steps, default=0), b), dtype=np.int64)
    mask = np.zeros(index.shape, dtype=bool)
    for k, (n, seed) in enumerate(zip(sizes, seeds, strict=True)):
        rng = np.random.default_rng(seed)
        per_epoch = math.ceil(n / b)
        for epoch in range(config.epochs):
            order = rng.permutation(n)
            padded = np.zeros(per_epoch * b, dtype=np.int64)
            padded[:n] = order
            rows = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
            index[k, rows] = padded.reshape(per_epoch, b)
            mask[k, rows] = (np.arange(per_epoch * b) < n).reshape(per_epoch, b)
    return index, mask


def train_batched(model: nn.Module, global_vector: np.ndarray, data: Sequence[Dataset],
                  config: LocalTrainingConfig, seeds: Sequence[int]) -> list[np.ndarray]:
    """Train ``len(data)`` clients from ``global_vector`` as one batched computation: client k
    on ``data[k]`` with training seed ``seeds[k]``. Returns each client's Δ = new - global
    (float32, in the order of ``data``), equal to ``train_locally(model, global_vector,
    data[k], config, seeds[k])`` up to float rounding (see the module's contract).

    Runs on ``model``'s device. Raises :class:`BatchingUnsupported` for what cannot be batched
    (:func:`check_batchable`; an operation vmap cannot transform surfaces as vmap's own error on
    the first step: :func:`probe` turns it into BatchingUnsupported), ValueError for a client
    without examples.
    """
    check_batchable(model, config)
    if len(data) != len(seeds):
        raise ValueError(f"{len(data)} clients but {len(seeds)} seeds")
    if not data:
        return []
    if any(len(d) == 0 for d in data):
        raise ValueError("a client with no examples cannot train")
    device = model_device(model)
    keys = float_state_keys(model)
    state = model.state_dict()
    shapes = {k: state[k].shape for k in keys}
    flat = torch.as_tensor(np.asarray(global_vector, dtype=np.float32)).to(device)
    expected = sum(math.prod(s) for s in shapes.values())
    if flat.numel() != expected:
        raise ValueError(f"vector has {flat.numel()} entries; the model has {expected}")

    sizes = [len(d) for d in data]
    # largest first: at step t the clients still training are a prefix of the stack
    order = sorted(range(len(data)), key=lambda k: -client_steps(sizes[k], config))
    steps = [client_steps(sizes[k], config) for k in order]
    offsets = np.cumsum([0] + [sizes[k] for k in order])[:-1]
    index, mask = batch_plan([sizes[k] for k in order], config, [seeds[k] for k in order])
    index = torch.from_numpy(index + offsets[:, None, None]).to(device)
    weight = torch.from_numpy(mask.astype(np.float32)).to(device)
    x = torch.from_numpy(np.concatenate([data[k].x for k in order])).to(device)
    y = torch.from_numpy(np.concatenate([data[k].y for k in order])).to(device)
    active = np.searchsorted(-np.asarray(steps), -np.arange(steps[0]), side="left")

    clients = len(data)
    params: dict[str, torch.Tensor] = {}
    start = 0
    for k in keys:
        n = math.prod(shapes[k])
        params[k] = flat[start:start + n].reshape(shapes[k]).expand(clients, *shapes[k]).clone()
        start += n
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    momentum: dict[str, torch.Tensor] = {}

    def forward(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, buffers), (xb,))

    batched_forward = vmap(forward, randomness="error")
    was_training = model.training
    model.train()
    try:
        for t in range(steps[0]):
            kt = int(active[t])  # clients 0 .. kt-1 still have a batch at step t
            idx, wb = index[:kt, t], weight[:kt, t]
            live = {k: v[:kt].detach().requires_grad_() for k, v in params.items()}
            logits = batched_forward(live, x[idx])  # (kt, batch_size, classes)
            per_example = nn.functional.cross_entropy(logits.flatten(0, 1), y[idx].flatten(),
                                                      reduction="none").view(kt, -1)
            # client k's mean loss depends only on client k's parameters: the gradient of the
            # sum is each client's own gradient
            loss = ((per_example * wb).sum(1) / wb.sum(1)).sum()
            grads = torch.autograd.grad(loss, list(live.values()))
            with torch.no_grad():
                for k, g in zip(live, grads, strict=True):
                    # every client takes step 0, so the buffer made there covers the stack
                    buf = momentum.get(k)
                    buf = sgd_update(params[k][:kt], g, None if buf is None else buf[:kt],
                                     lr=config.lr, momentum=config.momentum,
                                     weight_decay=config.weight_decay)
                    if k not in momentum and buf is not None:
                        momentum[k] = buf
    finally:
        model.train(was_training)
    stacked = torch.cat([params[k].reshape(clients, -1) for k in keys], dim=1).cpu().numpy()
    start_vector = np.asarray(global_vector, dtype=np.float32)
    deltas: list[np.ndarray] = [np.empty(0, np.float32)] * clients
    for row, k in enumerate(order):
        deltas[k] = stacked[row] - start_vector
    return deltas
