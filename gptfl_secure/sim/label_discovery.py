"""Step 1 of GPT-FL: the label union with per-label client counts, from summed IBLT sketches.

Each client encodes the set of its distinct label names into an IBLT; the server obtains only the
sum of the sketch vectors (through the aggregator) and decodes ``{label: #clients}``. It learns
the histogram and the number of participants, not which client holds which label.

A session that aborts (too few clients answered well: dropouts, or nodes whose replies were
malformed) is retried with a fresh session, up to ``abort_retries`` times. If every attempt aborts,
label discovery stops the run with :class:`LabelDiscoveryFailed`, which lists why each session
ended: without the label union there is nothing to prompt the generator with, and a run that
quietly fell back to random initialisation would not be the GPT-FL run that was asked for (and a
cohort that cannot reach the threshold here would skip most rounds as well). The in-process sim
(:func:`discover_labels`) and the Flower ServerApp share this loop (:func:`discover_with`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..iblt import IbltParams, IbltSketch
from ..protocols import SecAggAbort
from .aggregation import AggregateResult, Aggregator, SecureAggregator

ABORT_RETRIES = 2
"""Fresh sessions tried after an aborted one, before label discovery gives up."""


class LabelDiscoveryFailed(RuntimeError):
    """Every label-discovery session aborted: the run cannot learn its label union.

    ``aborts`` holds each attempt's :class:`SecAggAbort` (its ``partial`` record, when set, is
    that session's transcript up to the abort)."""

    def __init__(self, aborts: list[SecAggAbort]) -> None:
        self.aborts = list(aborts)
        reasons = "; ".join(f"attempt {i}: {a}" for i, a in enumerate(self.aborts, 1))
        super().__init__(
            f"label discovery failed: all {len(self.aborts)} sessions aborted ({reasons}). "
            "Fewer clients than the threshold answered each session correctly; check that "
            "enough clients are up and reachable (on Flower, the log names the nodes that "
            "dropped out or sent malformed replies), then rerun")


@dataclass(frozen=True)
class LabelDiscovery:
    participants: int
    counts: dict[str, int]
    complete: bool | None  # None: withheld (DP label discovery)
    capacity: int
    attempts: int
    session: AggregateResult | None = field(default=None, compare=False, repr=False)
    dp: dict | None = field(default=None, compare=False)  # the guarantee, with DP
    aborts: tuple[str, ...] = field(default=(), compare=False)  # sessions that aborted first

    def to_json(self) -> dict:
        """The ``label_discovery`` section of metrics.json, plus ``dp`` with DP."""
        out = {"participants": self.participants, "counts": self.counts,
               "complete": self.complete}
        if self.dp is not None:
            out["dp"] = self.dp
        if self.aborts:
            out["aborted_sessions"] = list(self.aborts)
        return out


def discover_labels(
    client_labels: Mapping[int, set[str]],
    params: IbltParams,
    aggregate: Aggregator | None = None,
    *,
    retries: int = 1,
    abort_retries: int = ABORT_RETRIES,
    log: Callable[[str], None] | None = None,
) -> LabelDiscovery:
    """Sum the clients' label sketches and decode the histogram.

    An incomplete decode (more distinct labels than ``params.capacity``) is retried up to
    ``retries`` times with double the capacity, each retry a fresh aggregation session. An
    aborted session is retried, same capacity, up to ``abort_retries`` times; when every attempt
    aborts, :class:`LabelDiscoveryFailed`. The returned counts are exact for every label listed,
    complete or not. The default aggregator is the masked-sum protocol over the complete graph,
    modulo the IBLT's prime.
    """
    aggregate = aggregate or SecureAggregator("full")
    if not client_labels:
        raise ValueError("label discovery needs at least one client")

    def sum_sketches(p: IbltParams, attempt: int) -> AggregateResult:
        vectors = {cid: IbltSketch.from_keys(p, sorted(labels)).to_vector()
                   for cid, labels in client_labels.items()}
        return aggregate(vectors, p.modulus)

    return discover_with(sum_sketches, params, retries=retries, abort_retries=abort_retries,
                         log=log)


def discover_with(
    sum_sketches: Callable[[IbltParams, int], AggregateResult],
    params: IbltParams,
    *,
    retries: int = 1,
    abort_retries: int = ABORT_RETRIES,
    log: Callable[[str], None] | None = None,
) -> LabelDiscovery:
    """The label-discovery loop: ``sum_sketches(params, attempt)`` runs one fresh session
    (attempt counts from 1) and returns the summed sketch, or raises :class:`SecAggAbort`.
    Capacity retries and abort retries are counted separately (see :func:`discover_labels`)."""
    if retries < 0 or abort_retries < 0:
        raise ValueError("retries and abort_retries must be >= 0")
    attempts = 0
    aborts: list[SecAggAbort] = []
    while True:
        attempts += 1
        try:
            summed = sum_sketches(params, attempts)
        except SecAggAbort as abort:
            aborts.append(abort)
            if len(aborts) > abort_retries:
                if log is not None:
                    log(f"      label discovery: session {attempts} aborted ({abort}); no "
                        "retry left")
                raise LabelDiscoveryFailed(aborts) from abort
            if log is not None:
                log(f"      label discovery: session {attempts} aborted ({abort}); retrying "
                    "with a fresh session")
            continue
        result = IbltSketch.from_vector(params, summed.total).decode()
        if result.complete or attempts - len(aborts) > retries:
            return LabelDiscovery(
                participants=len(summed.included),
                counts=dict(sorted(result.counts.items())),
                complete=result.complete,
                capacity=params.capacity,
                attempts=attempts,
                session=summed,
                aborts=tuple(str(a) for a in aborts),
            )
        params = params.with_capacity(2 * params.capacity)
