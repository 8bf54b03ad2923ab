"""Which rounds the simulated dropouts doom, known before any client trains.

A masked-sum session aborts (and its round is skipped) when fewer than t clients answer a step
(Bonawitz et al. 2017, Fig. 4): since a client that goes silent at step s stays silent, the last
step, ``unmasking``, has the fewest answers, and only clients that never drop answer it. So a
round of n sampled clients over the complete graph aborts exactly when fewer than t of them never
drop. With SecAgg+'s k-regular graph every secret must also be rebuilt from t live members of its
owner's group of k + 1, which can abort a round with t survivors or more. ``--secagg off`` aborts
only when nobody uploads a vector (drops at or before ``masked_input``).

:func:`doomed` decides this for one sampled round (the in-process driver then skips local
training); :func:`skip_probability` gives the expected fraction of skipped rounds before the run,
for the warning of :func:`skip_warning`.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy import stats

from ..protocols.config import STEPS, uploads_input
from .aggregation import Aggregator, SecureAggregator, make_aggregator, plain_sum

UPLOAD_STEPS = sum(not uploads_input(step) for step in STEPS)
"""Protocol steps at which a dropping client has not yet uploaded (``masked_input`` and before)."""


@dataclass(frozen=True)
class SkipRule:
    """When a round of ``cohort`` sampled clients aborts: fewer than ``threshold`` clients that
    count (``counts_uploads``: clients that uploaded, for the plain sum; otherwise clients that
    never drop); ``neighbors`` is SecAgg+'s k, None for the complete graph."""

    cohort: int
    threshold: int
    counts_uploads: bool = False
    neighbors: int | None = None


def skip_rule(aggregate: Aggregator, cohort: int) -> SkipRule | None:
    """The abort rule of ``aggregate`` (from :func:`~.aggregation.make_aggregator`) for
    ``cohort`` clients: the threshold and graph are the aggregator's own. None for an aggregator
    it does not know (a wrapped one): nothing is then known to abort in advance."""
    if aggregate is plain_sum:
        return SkipRule(cohort, 1, counts_uploads=True)
    if not isinstance(aggregate, SecureAggregator):
        return None
    cfg = aggregate.config(cohort, 1, 2)
    return SkipRule(cohort, cfg.threshold, neighbors=cfg.neighbors)


def doomed(dropouts: dict[int, str], rule: SkipRule) -> bool:
    """Whether a round whose sampled clients drop as in ``dropouts`` (client -> the step it goes
    silent at) aborts whatever the clients' vectors are. Sound for every mode (a doomed round
    always aborts); exact for the complete graph and the plain sum."""
    if rule.counts_uploads:
        counted = rule.cohort - sum(not uploads_input(step) for step in dropouts.values())
    else:
        counted = rule.cohort - len(dropouts)
    return counted < rule.threshold


def _binomial_below(n: int, p: float, t: int) -> float:
    """P[Bin(n, p) < t]."""
    return float(stats.binom.cdf(t - 1, n, p))


def skip_probability(rule: SkipRule, dropout: float) -> float:
    """The probability that a round aborts when each sampled client drops with probability
    ``dropout`` at a uniformly chosen step (:func:`~.rounds.sample_dropouts`). Exact for the
    complete graph and the plain sum; for SecAgg+'s k-regular graph an upper bound (a union
    bound over the n groups of k + 1 that must each keep t live members)."""
    if rule.counts_uploads:
        silent = dropout * UPLOAD_STEPS / len(STEPS)
        return _binomial_below(rule.cohort, 1 - silent, rule.threshold)
    p = _binomial_below(rule.cohort, 1 - dropout, rule.threshold)
    if rule.neighbors is not None:
        p += rule.cohort * _binomial_below(rule.neighbors + 1, 1 - dropout, rule.threshold)
    return min(p, 1.0)


def skip_warning(secagg: str, cohort: int, dropout: float, rounds: int) -> str | None:
    """A one-paragraph warning when skipped rounds are likely (at least one skipped round in
    ``rounds`` has probability >= 1/2), with the expected fraction; None otherwise."""
    if dropout == 0:
        return None
    rule = skip_rule(make_aggregator(secagg, dropout), cohort)
    p = skip_probability(rule, dropout)
    if 1 - (1 - p) ** rounds < 0.5:
        return None
    who = ("upload" if rule.counts_uploads else "stay to the end of the masked sum")
    bound = "at most " if rule.neighbors is not None else "about "
    return (f"warning: --secagg {secagg} --dropout {dropout} at --cohort {cohort}: a round is "
            f"skipped when fewer than {rule.threshold} of its {cohort} clients {who}; expect "
            f"{bound}{p:.0%} of the rounds to be skipped (~{p * rounds:.1f} of {rounds}). "
            "Lower --dropout or raise --cohort to skip fewer.")
