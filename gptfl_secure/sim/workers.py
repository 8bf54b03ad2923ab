"""A round's clients trained concurrently: a persistent pool of worker processes, created once
per run, each holding the run's client partitions, a scratch model and the local-training
settings (sent once, by the pool's initializer), so a round costs only the global vector in and
each client's update Δ out. With ``batched``, a task is a batch of clients trained as one vmap
computation (:func:`~gptfl_secure.learning.batched.train_batched`); the batches are a function
of the round's cohort only (:func:`~gptfl_secure.learning.batched.split_batches`), so that round
too is bit-identical to the same batches trained one after another in one process.

Every client's training is a pure function of the global vector, its partition and its
training seed ``(seed, round, client)`` (:func:`~gptfl_secure.pipeline.rounds.train_client`):
the scratch model's floating-point state is overwritten first, the optimizer is fresh, and torch
and numpy are seeded from the client's seed. Each worker runs torch and BLAS with the run's
``--threads``, as the run's own process does, so on CPU the updates, and therefore the round, are
bit-identical to training the clients one after another in one process (at another thread count
they are not: a process at 2 threads trains different floats from a worker at 1).

The scratch model reaches the workers as pickled bytes, and each worker loads its own copy. It
once went as a module in the pool's initializer arguments, and spawned or forkserver workers
that ran concurrently then gave wrong, non-reproducible updates (2 of 8 clients on 2 workers in
every trial here, off by up to 0.14 in a coordinate: not rounding). multiprocessing pickles
those arguments with its ``ForkingPickler``, for which torch registers reductions
(``torch.multiprocessing``) that move a CPU tensor's storage into shared memory in place and
send a handle to it: the parent and every worker mapped one set of weights, and concurrent
workers trained it at the same time. Forked workers inherit the arguments without pickling, so
each had a private copy. Bytes also keep a large model out of ``/dev/shm``, which is small in
containers. Everything else a worker receives or returns (partitions, test split, global vector,
Δ, counts) is numpy or plain Python, which is copied.

The pool also evaluates a round's global model when the test split is large enough
(:data:`EVAL_IN_POOL_FROM`): each worker counts the correct predictions of one shard of the split
(:meth:`ClientPool.accuracy`). Label discovery does not use it: a client's IBLT sketch takes about
130 µs to encode (50 clients: 6.5 ms), less than a trip to a worker and back, and the masked sum
stays in the run's process. Nor does pretraining: it trains one model, and splitting its batches
across workers would change its floats (so its results would depend on ``--workers``) and cost a
synchronisation a step; it runs before the pool exists.

Workers ignore SIGINT (a terminal's Ctrl-C goes to the whole process group): the run's process
receives the KeyboardInterrupt and :meth:`ClientPool.close` ends the workers, so no worker prints
a traceback and none outlives the run; on Linux a worker also ends when the run's process is
killed outright.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from torch import nn

from ..learning.batched import CLIENTS_PER_BATCH, split_batches, train_batched
from ..learning.data import Dataset
from ..learning.local import (
    EVAL_BATCH,
    LocalTrainingConfig,
    count_correct,
    eval_shards,
    vector_to_model,
)
from ..pipeline.client_training import plain_local_training, train_client
from ..pipeline.codecs import CodecRound
from ..pipeline.seeds import training_seed

# one worker process's run-wide state, set by _init_worker
_parts: list[Dataset] = []
_model: nn.Module | None = None
_local: LocalTrainingConfig | None = None
_test: Dataset | None = None

EVAL_IN_POOL_FROM = 2 * EVAL_BATCH
"""The smallest test split that :class:`ClientPool` evaluates in shards: two forward passes,
so that there are two shards. Measured on the 2-core VM, 2 workers with 1 thread each, the
summed counts equal to one process every time: convnet on the training bench's 28x28 folder,
1,999 test examples, 3.90 s in one process and 1.94 s in the pool; on all 10,000 examples
(under load from other work) 20.1 s and 10.0 s; small_cnn on 1,077 8x8 digits (the 359-example
test split three times) 35 ms and 18 ms. The digits' own 359 test examples take 5 ms in one
pass, which cannot be split without changing its floats: in the pool, as one shard, it took
about 1 ms longer. The run's process spends about 1 ms of CPU a round on the shards."""


def _context(device: str, start_method: str | None = None
             ) -> multiprocessing.context.BaseContext:
    """``start_method``'s context when given; else fork on CPU where the OS has it, spawn
    otherwise (a forked child cannot use CUDA).

    Every start method gives the same updates (tests/sim/test_workers.py trains through fork
    and spawn; forkserver sends the initializer's arguments as spawn does): each worker's model
    is its own (the module docstring). fork stays the CPU default only for
    its start-up: measured on a 2-core VM, a pool of 2 forked workers was ready and had trained
    8 small_cnn clients in 0.2 s, 2 spawned ones in 4.6 s (each spawned child imports torch and
    this package again), once per run.
    """
    if start_method is not None:
        return multiprocessing.get_context(start_method)
    if device == "cpu" and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _init_worker(parts: list[Dataset], model: bytes, local: LocalTrainingConfig, device: str,
                 threads: int, test: Dataset | None) -> None:
    global _parts, _model, _local, _test
    # the parent handles Ctrl-C and SIGTERM (and shuts the pool down): a worker ignores SIGINT
    # and ends quietly on SIGTERM, whatever handlers it inherited from a forked parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    _parts, _model, _local, _test = parts, pickle.loads(model).to(device), local, test


def _end_with_parent() -> None:
    """On Linux, SIGTERM this worker when the run's process dies, however it dies (a killed run
    would otherwise leave forked workers waiting on pipes they themselves hold open)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _train(global_vector: np.ndarray, at: CodecRound) -> np.ndarray:
    return train_client(plain_local_training, _model, global_vector, _parts[at.client], _local,
                        at)


def _count_correct(global_vector: np.ndarray, start: int, stop: int) -> int:
    vector_to_model(_model, global_vector)
    return count_correct(_model, _test, start, stop)


def _train_group(global_vector: np.ndarray, group: Sequence[CodecRound]) -> list[np.ndarray]:
    return train_batched(_model, global_vector, [_parts[at.client] for at in group], _local,
                         [training_seed(at.seed, at.round, at.client) for at in group])


class ClientPool:
    """``workers`` processes that train clients with :func:`~gptfl_secure.pipeline.rounds.
    plain_local_training` on ``device``, or with ``batched``, the round's clients in batches of
    at most ``per_batch`` (:func:`~gptfl_secure.learning.batched.split_batches`), each batch a
    task (:func:`~gptfl_secure.learning.batched.train_batched`). Use as a context manager or
    call :meth:`close`. ``start_method``: ``"fork"``, ``"spawn"`` or ``"forkserver"`` (default:
    :func:`_context`). With ``test`` (the server's test split) of at least
    :data:`EVAL_IN_POOL_FROM` examples, the workers get it once and :meth:`accuracy` evaluates a
    global model on it in shards across them (:attr:`evaluates` says whether it does)."""

    def __init__(self, parts: list[Dataset], model: nn.Module, local: LocalTrainingConfig,
                 workers: int, *, device: str | torch.device = "cpu", threads: int = 1,
                 start_method: str | None = None, test: Dataset | None = None,
                 batched: bool = False, per_batch: int = CLIENTS_PER_BATCH) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: must be >= 1")
        self.workers = workers
        self.batched = batched
        self.per_batch = per_batch
        self._sizes = [len(part) for part in parts]
        # the scratch model goes as bytes, not as a module: multiprocessing pickles initargs
        # with torch's reductions, which move a CPU tensor into shared memory that the parent
        # and every spawned or forkserver worker then map, so concurrent workers would train
        # one set of weights (module docstring)
        blob = pickle.dumps(copy.deepcopy(model).cpu())
        if test is not None and len(test) < EVAL_IN_POOL_FROM:
            test = None  # a small one is never sent
        self._test_size = None if test is None else len(test)
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=_context(str(device), start_method),
            initializer=_init_worker,
            initargs=(parts, blob, local, str(device), threads, test))

    @property
    def evaluates(self) -> bool:
        """Whether the workers hold the test split, so that :meth:`accuracy` works."""
        return self._test_size is not None

    def _gather(self, calls: Sequence[tuple]) -> list:
        """Run ``fn(*args)`` for each ``(fn, *args)`` of ``calls`` in the workers, all at once,
        and return their results in that order; on any failure or interrupt the pool is closed
        first."""
        if self._executor is None:
            raise RuntimeError("this ClientPool is closed")
        try:
            futures = [self._executor.submit(fn, *args) for fn, *args in calls]
            return [future.result() for future in futures]
        except BaseException:
            self.close()
            raise

    def train(self, global_vector: np.ndarray, clients: Sequence[CodecRound]
              ) -> dict[int, np.ndarray]:
        """Each client's update Δ (``{client: Δ}``, in the order of ``clients``), trained
        concurrently. A worker's exception is re-raised here; a KeyboardInterrupt while waiting
        ends the pool and propagates."""
        vector = np.ascontiguousarray(global_vector, dtype=np.float32)
        if self.batched:  # the batches of split_batches, dealt largest first, one task each
            groups = [[clients[k] for k in batch] for batch in split_batches(
                [self._sizes[at.client] for at in clients], self.per_batch)]
            trained = self._gather([(_train_group, vector, group) for group in groups])
            deltas = {at.client: delta for group, group_deltas in zip(groups, trained, strict=True)
                      for at, delta in zip(group, group_deltas, strict=True)}
        else:
            # largest client first (LPT): under label skew the client sizes differ widely, and
            # the round lasts until its last client ends. Each client's update depends only on
            # its own (seed, round, client), so the order changes no result
            order = sorted(clients, key=lambda at: -self._sizes[at.client])
            deltas = {at.client: delta for at, delta in zip(
                order, self._gather([(_train, vector, at) for at in order]), strict=True)}
        return {at.client: deltas[at.client] for at in clients}

    def accuracy(self, global_vector: np.ndarray) -> float:
        """Test accuracy of ``global_vector``: the test split is cut into one shard per worker
        at multiples of the evaluation batch (:func:`~gptfl_secure.learning.local.eval_shards`),
        so each shard's forward passes are those of a whole-set evaluation, and the correct
        counts are summed: the same accuracy as :func:`~gptfl_secure.learning.local.evaluate`
        in one process at the same thread count, to the last bit."""
        if self._test_size is None:
            raise RuntimeError("this ClientPool does not evaluate (no test split of at least "
                               f"{EVAL_IN_POOL_FROM} examples)")
        vector = np.ascontiguousarray(global_vector, dtype=np.float32)
        shards = eval_shards(self._test_size, self.workers)
        return sum(self._gather([(_count_correct, vector, a, b) for a, b in shards])
                   ) / self._test_size

    def close(self) -> None:
        """End the workers now (idempotent): queued clients are cancelled and running ones are
        stopped, so this returns at once, even in the middle of a round."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        executor.shutdown(wait=True)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
