"""Recompute a Flower run's sums with the in-process sim, for the same seed and survivors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gptfl_secure.flower.options import parse_run_config
from gptfl_secure.iblt import IbltParams
from gptfl_secure.learning.local import LocalTrainingConfig
from gptfl_secure.pipeline.aggregation import SecureAggregator
from gptfl_secure.pipeline.codecs import make_update_codec
from gptfl_secure.pipeline.discovery import discover_labels
from gptfl_secure.pipeline.setup import limit_threads, new_model, new_optimizer, prepare_data
from gptfl_secure.sim.rounds import RoundContext, run_round
from gptfl_secure.sim.run import start


def survivors_aggregator(config, survivors: set[int]):
    """The sim's aggregator, with every client outside ``survivors`` dropping before upload."""
    inner = SecureAggregator(config.secagg, dropout_rate=config.dropout)

    def aggregate(vectors, modulus, dropouts=None):
        drops = {c: "masked_input" for c in vectors if c not in survivors}
        return inner(vectors, modulus, drops)

    return aggregate


def check_against_sim(out: Path, run_config: dict) -> dict:
    """Assert that every sum of the Flower run in ``out`` equals the in-process one; returns
    ``{round: included ids}``."""
    config, _ = parse_run_config(run_config)
    limit_threads(config.threads)  # as the ServerApp and the ClientApps run: same float sums
    sums = np.load(out / "sums.npz")
    metrics = json.loads((out / "metrics.json").read_text())
    setup = prepare_data(config)

    included = set(sums["labels_included"].tolist())
    labels = {c: {p.label_names[int(y)] for y in np.unique(p.y)}
              for c, p in enumerate(setup.parts) if c in included}
    found = discover_labels(labels, IbltParams(capacity=config.label_capacity, seed=config.seed),
                            SecureAggregator(config.secagg, dropout_rate=config.dropout))
    assert np.array_equal(found.session.total, sums["labels_total"])
    assert found.to_json() == metrics["label_discovery"]

    state = start(config, setup, lambda _: None)
    assert np.array_equal(state.global_vector, sums["round1_global_in"])
    optimizer = new_optimizer(config)
    out_included = {}
    for r in range(1, config.rounds + 1):
        survivors = set(sums[f"round{r}_included"].tolist())
        out_included[r] = survivors
        ctx = RoundContext(
            train_parts=setup.parts, test=setup.test,
            global_model=new_model(config, setup.train),
            scratch_model=new_model(config, setup.train),
            codec=make_update_codec(config, len(state.global_vector)),
            local=LocalTrainingConfig(config.local_epochs, config.batch_size, config.lr,
                                      config.momentum, config.weight_decay, config.prox_mu),
            aggregate=survivors_aggregator(config, survivors),
            cohort=config.cohort, dropout=0.0, seed=config.seed)
        global_in = sums[f"round{r}_global_in"]
        outcome = run_round(ctx, r, global_in, optimizer)
        assert outcome.session.included == survivors
        assert np.array_equal(outcome.session.total, sums[f"round{r}_total"]), f"round {r}"
        flower_round = metrics["rounds"][r - 1]
        assert outcome.record.test_accuracy == flower_round["test_accuracy"]
        assert outcome.record.clients_included == flower_round["clients_included"]
        if r < config.rounds:
            assert np.array_equal(outcome.global_vector, sums[f"round{r + 1}_global_in"])
    return out_included
