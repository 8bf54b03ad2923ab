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
bit-identical to training the clients one after another in one process.

Workers ignore SIGINT (a terminal's Ctrl-C goes to the whole process group): the run's process
receives the KeyboardInterrupt and :meth:`ClientPool.close` ends the workers, so no worker prints
a traceback and none outlives the run; on Linux a worker also ends when the run's process is
killed outright.
"""

from __future__ import annotations

import copy
import multiprocessing
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch
from torch import nn

from ..learning.batched import CLIENTS_PER_BATCH, split_batches, train_batched
from ..learning.data import Dataset
from ..learning.local import LocalTrainingConfig
from ..pipeline.codecs import CodecRound
from ..pipeline.rounds import plain_local_training, train_client
from ..pipeline.seeds import training_seed

# one worker process's run-wide state, set by _init_worker
_parts: list[Dataset] = []
_model: nn.Module | None = None
_local: LocalTrainingConfig | None = None


def _context(device: str) -> multiprocessing.context.BaseContext:
    """fork on CPU where the OS has it; spawn otherwise (a forked child cannot use CUDA).

    Measured on a 2-core Linux VM with torch 2.13 (oneDNN, MKL): clients trained in *spawned*
    or *forkserver* children that ran concurrently were not bit-identical to the same clients
    trained in one process (about half the updates differed, non-deterministically), while
    forked children, which inherit the run's already initialised torch, matched in every
    trial. The equality test in tests/sim/test_workers.py guards it.
    """
    if device == "cpu" and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _init_worker(parts: list[Dataset], model: nn.Module, local: LocalTrainingConfig,
                 device: str, threads: int) -> None:
    global _parts, _model, _local
    # the parent handles Ctrl-C and SIGTERM (and shuts the pool down): a worker ignores SIGINT
    # and ends quietly on SIGTERM, whatever handlers it inherited from a forked parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    _parts, _model, _local = parts, model.to(device), local


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


def _train_group(global_vector: np.ndarray, group: Sequence[CodecRound]) -> list[np.ndarray]:
    return train_batched(_model, global_vector, [_parts[at.client] for at in group], _local,
                         [training_seed(at.seed, at.round, at.client) for at in group])


class ClientPool:
    """``workers`` processes that train clients with :func:`~gptfl_secure.pipeline.rounds.
    plain_local_training` on ``device``, or with ``batched``, the round's clients in batches of
    at most ``per_batch`` (:func:`~gptfl_secure.learning.batched.split_batches`), each batch a
    task (:func:`~gptfl_secure.learning.batched.train_batched`). Use as a context manager or
    call :meth:`close`."""

    def __init__(self, parts: list[Dataset], model: nn.Module, local: LocalTrainingConfig,
                 workers: int, *, device: str | torch.device = "cpu", threads: int = 1,
                 batched: bool = False, per_batch: int = CLIENTS_PER_BATCH) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: must be >= 1")
        self.workers = workers
        self.batched = batched
        self.per_batch = per_batch
        self._sizes = [len(part) for part in parts]
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=_context(str(device)), initializer=_init_worker,
            initargs=(parts, copy.deepcopy(model).cpu(), local, str(device), threads))

    def train(self, global_vector: np.ndarray, clients: Sequence[CodecRound]
              ) -> dict[int, np.ndarray]:
        """Each client's update Δ (``{client: Δ}``), trained concurrently. A worker's exception
        is re-raised here; a KeyboardInterrupt while waiting ends the pool and propagates."""
        if self._executor is None:
            raise RuntimeError("this ClientPool is closed")
        vector = np.ascontiguousarray(global_vector, dtype=np.float32)
        if self.batched:
            return self._train_batched(vector, clients)
        # largest client first (LPT): under label skew the client sizes differ widely, and the
        # round lasts until its last client ends. Each client's update depends only on its own
        # (seed, round, client), so the order changes no result
        order = sorted(clients, key=lambda at: -self._sizes[at.client])
        try:
            futures: dict[int, Future] = {at.client: self._executor.submit(_train, vector, at)
                                          for at in order}
            return {at.client: futures[at.client].result() for at in clients}
        except BaseException:
            self.close()
            raise

    def _train_batched(self, vector: np.ndarray, clients: Sequence[CodecRound]
                       ) -> dict[int, np.ndarray]:
        groups = [[clients[k] for k in batch] for batch in
                  split_batches([self._sizes[at.client] for at in clients], self.per_batch)]
        try:  # largest batch first (LPT): each batch is an independent task
            futures = [self._executor.submit(_train_group, vector, group) for group in groups]
            deltas = {at.client: delta for group, future in zip(groups, futures, strict=True)
                      for at, delta in zip(group, future.result(), strict=True)}
        except BaseException:
            self.close()
            raise
        return {at.client: deltas[at.client] for at in clients}

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
