"""Parallel clients and the device option: a run with --workers 2 gives the same metrics.json as
--workers 1 (bit for bit, with and without --client-batching vmap), forked and spawned workers
train the updates of one process, the pool's sharded evaluation gives the in-process accuracy
exactly, a vmap-batched run ends close to an unbatched one, the pool closes on an interrupt
without leaving processes, and --device and --client-batching are resolved (and refused when they
cannot be met) before any work."""

import json
import multiprocessing
import re

import numpy as np
import pytest
import torch

from gptfl_secure.learning.batched import train_in_batches
from gptfl_secure.learning.data import Dataset
from gptfl_secure.learning.local import (
    count_correct,
    eval_shards,
    evaluate,
    model_to_vector,
    vector_to_model,
)
from gptfl_secure.pipeline.codecs import CodecRound
from gptfl_secure.pipeline.config import ConfigError, SimConfig
from gptfl_secure.pipeline.rounds import plain_local_training, train_client
from gptfl_secure.pipeline.seeds import training_seed
from gptfl_secure.pipeline.setup import (
    local_training,
    new_model,
    prepare_data,
    run_batching,
    run_device,
    run_workers,
)
from gptfl_secure.sim.cli import main
from gptfl_secure.sim.workers import EVAL_IN_POOL_FROM, ClientPool

SMALL = ["--clients", "12", "--cohort", "4", "--rounds", "2", "--local-epochs", "1",
         "--init", "random", "--no-progress"]


def _accuracies(out):
    metrics = json.loads((out / "metrics.json").read_text())
    return [(r["test_accuracy"], r["gradient_diversity"], r["clients_included"])
            for r in metrics["rounds"]]


@pytest.mark.parametrize("batching", ["off", "vmap"])
def test_two_workers_give_the_same_metrics_as_one(tmp_path, batching):
    mode = ["--client-batching", batching]
    assert main(SMALL + mode + ["--workers", "1", "--out", str(tmp_path / "one")]) == 0
    assert main(SMALL + mode + ["--workers", "2", "--out", str(tmp_path / "two")]) == 0
    assert _accuracies(tmp_path / "one") == _accuracies(tmp_path / "two")
    one = np.load(tmp_path / "one" / "checkpoint.npz")["global_vector"]
    two = np.load(tmp_path / "two" / "checkpoint.npz")["global_vector"]
    assert np.array_equal(one, two)


def test_a_vmap_batched_run_ends_close_to_the_unbatched_run(tmp_path):
    runs = {}
    for batching in ("off", "vmap"):
        out = tmp_path / batching
        assert main(SMALL + ["--workers", "1", "--client-batching", batching, "--out",
                             str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["execution"]["client_batching"] == batching
        runs[batching] = ([r["test_accuracy"] for r in metrics["rounds"]],
                          np.load(out / "checkpoint.npz")["global_vector"])
    (acc_off, vector_off), (acc_vmap, vector_vmap) = runs["off"], runs["vmap"]
    # the updates differ by float rounding (tests/learning/test_batched.py), which the codec's
    # quantization may turn into a level: the models stay within 1e-4, the accuracies within
    # one or two of the ~360 test examples
    np.testing.assert_allclose(vector_vmap, vector_off, atol=1e-4)
    np.testing.assert_allclose(acc_vmap, acc_off, atol=0.01)


def test_client_batching_resolves_from_the_model_and_device():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    small = 38_282

    def auto(**options):
        return SimConfig(client_batching="auto", **options)

    assert run_batching(SimConfig(), small, cpu) == "off"  # the default: off
    assert run_batching(auto(), small, cpu) == "vmap"  # small_cnn on the digits
    assert run_batching(auto(), small, gpu) == "off"  # not measured on a GPU
    assert run_batching(auto(), 524_000, cpu) == "off"  # small_cnn on 32x32 images
    assert run_batching(auto(model="convnet"), 298_506, cpu) == "off"
    assert run_batching(auto(prox_mu=0.1), small, cpu) == "off"
    assert run_batching(auto(dp_sgd=True), small, cpu) == "off"
    assert run_batching(SimConfig(client_batching="vmap", model="convnet"), 298_506,
                        gpu) == "vmap"
    assert run_batching(SimConfig(client_batching="vmap", dp_sgd=True), small, cpu) == "off"
    for workers in (1, 2, 8):  # never the number of workers: results do not depend on it
        assert run_batching(auto(workers=workers), small, cpu) == "vmap"


@pytest.mark.parametrize("flags, message", [
    (["--prox-mu", "0.1"], "FedProx.*process pool"),
    (["--dp-sgd"], "--client-batching vmap with --dp-sgd"),
])
def test_client_batching_vmap_that_cannot_be_met_is_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        main(SMALL + ["--client-batching", "vmap"] + flags)
    assert re.search(message, capsys.readouterr().err)


@pytest.fixture
def one_thread():
    """torch and BLAS on one thread in this process, as in the pool's workers (threads=1): at
    another thread count the same client trains to different floats."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_pool_updates_equal_sequential_updates(one_thread, start_method):
    """8 clients on 2 workers, so the workers train concurrently. Spawned (and forkserver)
    workers once shared one scratch model through shared memory (workers.py's docstring) and
    then gave wrong updates in every trial; forked ones have a private copy."""
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {start_method} on this OS")
    config = SimConfig(clients=8, cohort=4, init="random", local_epochs=1)
    setup = prepare_data(config)
    model = new_model(config, setup.train)
    local = local_training(config)
    start = np.random.default_rng(1).normal(0, 0.05, sum(p.numel() for p in
                                                         model.state_dict().values()))
    start = start.astype(np.float32)
    clients = [CodecRound(config.seed, 3, c) for c in range(8)]
    sequential = {at.client: train_client(plain_local_training, model, start,
                                          setup.parts[at.client], local, at) for at in clients}
    with ClientPool(setup.parts, model, local, 2, start_method=start_method) as pool:
        parallel = pool.train(start, clients)
    assert parallel.keys() == sequential.keys()
    for cid, delta in sequential.items():
        assert np.array_equal(parallel[cid], delta), cid


def test_shard_counts_add_up_to_the_whole_sets(one_thread):
    config = SimConfig(init="random")
    setup = prepare_data(config)
    data = Dataset(np.concatenate([setup.train.x, setup.test.x]),
                   np.concatenate([setup.train.y, setup.test.y]), setup.test.label_names)
    model = new_model(config, data)
    whole = count_correct(model, data, batch_size=100)
    assert whole == round(evaluate(model, data, batch_size=100) * len(data))
    for shards in (1, 2, 3, 7, 50):
        cuts = eval_shards(len(data), shards, batch_size=100)
        assert cuts[0][0] == 0 and cuts[-1][1] == len(data)
        assert all(a % 100 == 0 and a < b for a, b in cuts)
        assert all(b == c for (_, b), (c, _) in zip(cuts, cuts[1:], strict=False))
        assert len(cuts) == min(shards, 18)  # 1,797 examples: 18 passes of 100
        assert sum(count_correct(model, data, a, b, batch_size=100) for a, b in cuts) == whole


def test_pool_accuracy_equals_one_process(one_thread):
    """All 1,797 digits as the test split (4 passes of 512, 2 shards): the pool's accuracy is
    the in-process one exactly; a split below EVAL_IN_POOL_FROM is not sent to the workers."""
    config = SimConfig(clients=8, cohort=4, init="random")
    setup = prepare_data(config)
    test = Dataset(np.concatenate([setup.train.x, setup.test.x]),
                   np.concatenate([setup.train.y, setup.test.y]), setup.test.label_names)
    model = new_model(config, setup.train)
    vector = model_to_vector(model)
    start = vector + np.random.default_rng(2).normal(0, 0.05, len(vector)).astype(np.float32)
    local = local_training(config)
    with ClientPool(setup.parts, model, local, 2, test=test) as pool:
        assert pool.evaluates
        # a trained model, so that the accuracy is not that of an untrained one
        trained = start + pool.train(start, [CodecRound(config.seed, 1, 0)])[0]
        for v in (start, trained):
            vector_to_model(model, v)
            assert pool.accuracy(v) == evaluate(model, test)
    assert 0.15 < evaluate(model, test)
    with ClientPool(setup.parts, model, local, 2, test=setup.test) as pool:
        assert len(setup.test) < EVAL_IN_POOL_FROM and not pool.evaluates
        with pytest.raises(RuntimeError, match="does not evaluate"):
            pool.accuracy(start)


def test_a_run_evaluating_in_the_pool_gives_the_metrics_of_one_worker(tmp_path, monkeypatch):
    """--test-fraction 0.6: 1,079 test examples, so the 2-worker run evaluates in its pool."""
    calls = []
    accuracy = ClientPool.accuracy
    monkeypatch.setattr(ClientPool, "accuracy",
                        lambda self, v: calls.append(1) or accuracy(self, v))
    args = SMALL + ["--test-fraction", "0.6"]
    assert main(args + ["--workers", "1", "--out", str(tmp_path / "one")]) == 0
    assert not calls
    assert main(args + ["--workers", "2", "--out", str(tmp_path / "two")]) == 0
    assert len(calls) == 2  # one evaluation a round
    assert _accuracies(tmp_path / "one") == _accuracies(tmp_path / "two")


def test_batched_pool_updates_equal_the_same_batches_in_one_process():
    config = SimConfig(clients=12, cohort=8, init="random", local_epochs=1)
    setup = prepare_data(config)
    model = new_model(config, setup.train)
    local = local_training(config)
    start = model_to_vector(model)
    clients = [CodecRound(config.seed, 2, c) for c in range(8)]
    one = train_in_batches(model, start, [setup.parts[at.client] for at in clients], local,
                           [training_seed(at.seed, at.round, at.client) for at in clients],
                           per_batch=3)
    with ClientPool(setup.parts, model, local, 2, batched=True, per_batch=3) as pool:
        pooled = pool.train(start, clients)
    assert list(pooled) == [at.client for at in clients]
    for at, delta in zip(clients, one, strict=True):
        assert np.array_equal(pooled[at.client], delta), at.client


def test_interrupt_ends_the_pool_at_once():
    config = SimConfig(clients=8, cohort=4, init="random")
    setup = prepare_data(config)
    pool = ClientPool(setup.parts, new_model(config, setup.train), local_training(config), 2)
    processes = list(pool._executor._processes.values())
    with pytest.raises(KeyboardInterrupt), pytest.MonkeyPatch.context() as patch:
        def interrupted(*_args, **_kwargs):
            raise KeyboardInterrupt

        patch.setattr("concurrent.futures.Future.result", interrupted)
        pool.train(np.zeros(1, np.float32), [CodecRound(0, 1, 0)])
    assert all(not p.is_alive() for p in processes)
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        pool.train(np.zeros(1, np.float32), [CodecRound(0, 1, 0)])


def test_workers_auto_uses_the_cores_without_oversubscription(monkeypatch):
    monkeypatch.setattr("gptfl_secure.pipeline.setup.usable_cores", lambda: 8)
    cpu = torch.device("cpu")
    assert run_workers(SimConfig(cohort=10), cpu) == 8
    assert run_workers(SimConfig(cohort=10, threads=2), cpu) == 4
    assert run_workers(SimConfig(cohort=3), cpu) == 3
    assert run_workers(SimConfig(cohort=10, workers=5), cpu) == 5
    assert run_workers(SimConfig(cohort=10, workers=50), cpu) == 10
    assert run_workers(SimConfig(cohort=10, dp_sgd=True, workers=4), cpu) == 1
    assert run_workers(SimConfig(cohort=10), torch.device("cuda", 0)) == 1


def test_device_is_resolved_and_a_missing_gpu_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_device(SimConfig(device="auto")) == torch.device("cpu")
    assert run_device(SimConfig(device="cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda: torch sees no CUDA GPU"):
        run_device(SimConfig(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert run_device(SimConfig(device="auto")) == torch.device("cuda", 0)
    assert run_device(SimConfig(device="cuda:1")) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="cuda:0 to cuda:1"):
        run_device(SimConfig(device="cuda:2"))


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CPU", ""])
def test_a_malformed_device_is_refused(bad):
    with pytest.raises(ConfigError, match="--device"):
        SimConfig(device=bad)


def test_cli_refuses_cuda_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        main(SMALL + ["--device", "cuda"])
    assert "torch sees no CUDA GPU" in capsys.readouterr().err


def test_metrics_record_device_and_workers(tmp_path):
    assert main(SMALL + ["--rounds", "1", "--workers", "2", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["execution"] == {"device": "cpu", "workers": 2, "client_batching": "off"}
    assert main(SMALL + ["--rounds", "1", "--client-batching", "auto", "--out",
                         str(tmp_path / "auto")]) == 0
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert metrics["execution"]["client_batching"] == "vmap"  # small_cnn on the digits
