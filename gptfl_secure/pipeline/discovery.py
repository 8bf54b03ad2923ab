"""Step 1 of GPT-FL: the label union with per-label client counts, from summed IBLT sketches.

Each client encodes the set of its distinct label names into an IBLT; the server obtains only the
sum of the sketch vectors (through the aggregator) and decodes ``{label: #clients}``. It learns
the histogram and the number of participants, not which client holds which label.

A session that aborts (too few clients answered well: dropouts, or nodes whose replies were
malformed) is retried with a fresh session, up to ``abort_retries`` times. If every attempt aborts,
label discovery stops the run with :class:`LabelDiscoveryFailed`, which lists why each session
ended: without the label union there is nothing to prompt the generator with, and a run that
quietly fell back to random initialisation would not be the GPT-FL run that was asked for (and a
cohort that cannot reach the threshold here would skip most rounds as well).

Every driver runs the same loop, :func:`discover_with`, over its own way of summing the sketches:
the in-process sim through :func:`discover` (an aggregator over every client's sketch, or DP
label discovery with ``--label-dp-noise``), the Flower ServerApp through :func:`discover_over`
(one protocol session over the nodes per attempt).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..iblt import IbltParams, IbltSketch
from ..learning.data import Dataset
from ..privacy.label_noise import CountSketchParams, DPLabelCodec, noisy_label_counts
from ..protocols import SecAggAbort
from .aggregation import AggregateResult, Aggregator, SecureAggregator
from .config import RunConfig

Log = Callable[[str], None]

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


def label_params(config: RunConfig) -> IbltParams:
    """The first session's sketch parameters."""
    return IbltParams(capacity=config.label_capacity, seed=config.seed)


def client_label_sets(parts: Sequence[Dataset]) -> dict[int, set[str]]:
    """Each client's distinct label names (what its sketch encodes)."""
    return {cid: {part.label_names[int(y)] for y in np.unique(part.y)}
            for cid, part in enumerate(parts)}


def _log_found(found: LabelDiscovery, log: Log) -> None:
    log(f"      participants: {found.participants}; labels (complete={found.complete}): "
        f"{json.dumps(found.counts)}")


def discover(config: RunConfig, client_labels: Mapping[int, set[str]], aggregate: Aggregator,
             log: Log) -> LabelDiscovery:
    """Label-union discovery with every client's labels at hand (the in-process driver):
    ``aggregate`` sums their sketches; DP label discovery with ``--label-dp-noise``."""
    log(f"[1/3] label discovery: {config.clients} clients encode their label names into IBLT "
        f"sketches, summed with secagg={config.secagg}")
    if config.label_dp_noise is not None:
        return discover_with_dp(config, client_labels, label_params(config), aggregate, log)
    found = discover_labels(client_labels, label_params(config), aggregate)
    _log_found(found, log)
    return found


def discover_over(config: RunConfig, sum_sketches: Callable[[IbltParams, int], AggregateResult],
                  log: Log) -> LabelDiscovery:
    """Label-union discovery where the driver sums the sketches (one fresh session per call of
    ``sum_sketches(params, attempt)``): the Flower ServerApp."""
    found = discover_with(sum_sketches, label_params(config), log=log)
    _log_found(found, log)
    return found


def discover_with_dp(config: RunConfig, client_labels, params: IbltParams, aggregate,
                     log: Log) -> LabelDiscovery:
    """DP label discovery (:mod:`gptfl_secure.privacy.label_noise`): the union from an IBLT with
    uniform secret weights, counts from a noised count sketch, released only at or above
    ``--label-min-clients``. ``complete`` is withheld (None): it is derived from the union,
    which the release guarantee (G2) requires to stay on the server. No retry: a second session
    would be a second release."""
    sketch_seed = int.from_bytes(os.urandom(8), "big")  # fresh, after the labels are fixed
    codec = DPLabelCodec(params, noise_multiplier=config.label_dp_noise, cohort=config.clients,
                         min_clients=config.label_min_clients,
                         sketch=CountSketchParams(seed=sketch_seed))
    release = noisy_label_counts(client_labels, codec, aggregate)
    guarantee = codec.guarantee(config.dp_delta, union_bound=config.label_capacity,
                                num_included=release.num_included)
    log(f"      participants: {release.num_included}; released labels (noisy counts >= "
        f"{config.label_min_clients}): {json.dumps(release.released)}")
    log(f"      {guarantee.describe()}")
    dp = {"epsilon": guarantee.epsilon, "delta": guarantee.delta,
          "release_delta": guarantee.release_delta, "delta_threshold": guarantee.delta_threshold,
          "noise_multiplier": config.label_dp_noise, "noise_std": release.noise_std,
          "min_clients": config.label_min_clients, "guarantee": guarantee.describe()}
    return LabelDiscovery(participants=release.num_included,
                          counts=dict(sorted(release.released.items())), complete=None,
                          capacity=params.capacity, attempts=1, dp=dp)
