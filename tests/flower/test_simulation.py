"""The Flower apps under Flower's simulation engine: label discovery and 2 rounds, every sum
our masked-sum protocol over Flower messages, equal to the in-process sim's; every session
recorded (record-transcript=true) and passed by the auditor; three exchanges per round."""

import json
import signal

import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from .parity import check_against_sim  # noqa: E402


@pytest.fixture
def ray_left_behind_nothing():
    """Ray, started in this process by the simulation engine, is shut down afterwards and the
    signal handlers it installed (SIGTERM -> sys.exit) are restored, so that later tests in the
    same pytest process (forked worker pools, signal tests) never meet a Ray cluster or its
    handlers."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_simulation_engine_matches_in_process_sim(tmp_path, monkeypatch, ray_left_behind_nothing):
    from flwr.simulation import run_simulation

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the nodes' partition cache
    from gptfl_secure.flower.client_app import build_client_app
    from gptfl_secure.flower.server_app import build_server_app

    cfg = {"clients": 4, "cohort": 3, "rounds": 2, "local-epochs": 1, "pretrain-epochs": 1,
           "synthetic-per-label": 10, "label-capacity": 20, "dropout": 0.0,
           "out-dir": str(tmp_path / "run"), "step-timeout": 60.0, "train-timeout": 120.0,
           "enroll-timeout": 60.0, "record-transcript": True}
    run_simulation(build_server_app(cfg, log=lambda _: None), build_client_app(cfg),
                   num_supernodes=4,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    included = check_against_sim(tmp_path / "run", cfg)
    assert all(len(ids) == 3 for ids in included.values())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # enrol + label discovery's 5 rounds (round 1's key set-up rides in two of them); then
    # train+masked input, consistency + next advertise, unmasking + next share
    assert metrics["setup_exchanges"] == 6
    assert [r["exchanges"] for r in metrics["rounds"]] == [3, 3]
    from gptfl_secure.audit.cli import main as audit

    records = sorted(p.name for p in (tmp_path / "run" / "transcripts").glob("session-*.json"))
    assert records == ["session-label-discovery.json", "session-round-0001.json",
                       "session-round-0002.json"]
    assert audit([str(tmp_path / "run")]) == 0
