"""Rounds the simulated dropouts doom: the predicate agrees with the protocol, the expected
fraction with the sampler, the sim skips their local training, and the run warns up front."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptfl_secure.pipeline.aggregation import make_aggregator, plain_sum
from gptfl_secure.pipeline.rounds import plan_round
from gptfl_secure.pipeline.skips import SkipRule, doomed, skip_probability, skip_rule, skip_warning
from gptfl_secure.protocols import SecAggAbort
from gptfl_secure.protocols.config import STEPS


def _aborts(aggregate, plan) -> bool:
    try:
        aggregate({c: np.ones(2, np.uint64) for c in plan.sampled}, 2**16, plan.dropouts)
    except SecAggAbort:
        return True
    return False


@pytest.mark.parametrize("mode", ["full", "plus"])
def test_doomed_is_exactly_when_the_masked_sum_aborts_on_the_complete_graph(mode):
    aggregate = make_aggregator(mode, 0.35)
    rule = skip_rule(aggregate, 8)
    assert rule.neighbors is None and rule.threshold == 6
    seen = set()
    for r in range(1, 25):
        plan = plan_round(r, clients=12, cohort=8, seed=3, dropout=0.35)
        seen.add(doomed(plan.dropouts, rule))
        assert doomed(plan.dropouts, rule) == _aborts(aggregate, plan), plan.dropouts
    assert seen == {True, False}  # both kinds of round were checked


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 5), st.sampled_from(STEPS), max_size=6))
def test_doomed_is_exactly_when_the_plain_sum_aborts(dropouts):
    rule = skip_rule(plain_sum, 6)
    vectors = {c: np.ones(2, np.uint64) for c in range(6)}
    try:
        plain_sum(vectors, 2**16, dropouts)
        aborted = False
    except SecAggAbort:
        aborted = True
    assert doomed(dropouts, rule) == aborted


def test_unknown_aggregators_are_never_doomed_in_advance():
    assert skip_rule(lambda *a, **k: None, 10) is None


@pytest.mark.parametrize("mode, cohort, dropout", [("full", 10, 0.3), ("plus", 10, 0.3),
                                                  ("off", 3, 0.6), ("full", 20, 0.15)])
def test_skip_probability_is_the_sampled_fraction_of_doomed_rounds(mode, cohort, dropout):
    rule = skip_rule(make_aggregator(mode, dropout), cohort)
    trials = 4000
    hits = sum(doomed(plan_round(r, clients=2 * cohort, cohort=cohort, seed=7,
                                 dropout=dropout).dropouts, rule) for r in range(1, trials + 1))
    p = skip_probability(rule, dropout)
    sigma = (p * (1 - p) / trials) ** 0.5
    assert abs(hits / trials - p) <= 4 * sigma + 1e-9, (hits / trials, p)


def test_secagg_plus_bound_covers_its_k_regular_graph():
    aggregate = make_aggregator("plus", 0.05)
    rule = skip_rule(aggregate, 200)
    assert rule.neighbors is not None and rule.neighbors < 199
    # the bound adds a union bound over the groups to the exact global term
    complete = SkipRule(200, rule.threshold)
    assert skip_probability(rule, 0.05) > skip_probability(complete, 0.05)
    assert skip_probability(rule, 0.05) < 2**-20 * 2  # what choose_secagg_plus_params targets


def test_warning_names_threshold_and_expected_fraction():
    text = skip_warning("plus", 10, 0.3, 30)
    assert "fewer than 7 of its 10 clients" in text and "about 35%" in text
    assert "~10.5 of 30" in text
    assert skip_warning("full", 10, 0.1, 30) is None  # the default run stays quiet
    assert skip_warning("full", 10, 0.0, 30) is None
    assert "upload" in skip_warning("off", 2, 0.9, 30)


def test_sim_skips_local_training_of_doomed_rounds(tmp_path):
    from gptfl_secure.learning.local import model_to_vector
    from gptfl_secure.pipeline.config import RunConfig
    from gptfl_secure.pipeline.setup import new_model, new_optimizer, prepare_data
    from gptfl_secure.pipeline.state import RunState
    from gptfl_secure.sim.rounds import run_round
    from gptfl_secure.sim.run import round_context

    config = RunConfig(clients=12, cohort=8, dropout=0.35, local_epochs=1, init="random",
                       seed=3, workers=1)  # one worker: the counting trainer runs here
    setup = prepare_data(config)
    vector = model_to_vector(new_model(config, setup.train))
    state = RunState(config, {}, None, vector, new_optimizer(config).state_dict())
    ctx = round_context(config, setup, state)
    trained = []
    ctx.train = lambda model, start, data, local, seed, cid: (trained.append(cid)
                                                              or np.zeros_like(start))
    rule = skip_rule(ctx.aggregate, 8)
    kinds = set()
    for r in (1, 2, 3, 4, 5, 6):
        trained.clear()
        plan = plan_round(r, clients=12, cohort=8, seed=3, dropout=0.35)
        outcome = run_round(ctx, r, vector, new_optimizer(config))
        is_doomed = doomed(plan.dropouts, rule)
        kinds.add(is_doomed)
        assert outcome.record.skipped == is_doomed
        if is_doomed:
            assert trained == []
        else:
            assert len(trained) == sum(c not in plan.dropouts or STEPS.index(plan.dropouts[c])
                                       > STEPS.index("masked_input") for c in plan.sampled)
    assert kinds == {True, False}
