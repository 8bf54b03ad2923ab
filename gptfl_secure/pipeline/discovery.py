"""Step 1 of GPT-FL: the label union with per-label client counts, from summed IBLT sketches.

Each client encodes the set of its distinct label names into an IBLT; the server obtains only the
sum of the sketch vectors (through the aggregator) and decodes ``{label: #clients}``. It learns
the histogram and the number of participants, not which client holds which label.

The table is sized for ``capacity`` labels so that one decode fails (stalls, which is always
detected) with probability at most ``params.max_failure`` (1%); a stalled decode is retried in a
fresh session with a fresh public hash seed, so that all attempts stall with probability at most
1e-6 (proofs/iblt-sizing.md). When the stalled table shows more labels than ``capacity``, the retry
also grows the capacity to the estimated load. If every attempt stalls, label discovery stops the
run with :class:`LabelDiscoveryFailed`: it never continues on a partial label union.

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
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..iblt import DecodeFailed, IbltParams, IbltSketch
from ..learning.data import Dataset
from ..privacy.label_noise import CountSketchParams, DPLabelCodec, noisy_label_counts
from ..protocols import SecAggAbort
from .aggregation import AggregateResult, Aggregator, SecureAggregator
from .config import RunConfig

Log = Callable[[str], None]

ABORT_RETRIES = 2
"""Fresh sessions tried after an aborted one, before label discovery gives up."""

DISCOVERY_FAILURE = 1e-6
"""Bound on the probability that every decode attempt stalls, for at most ``capacity`` labels."""


def decode_retries(params: IbltParams) -> int:
    """Fresh-seed retries after a stalled decode: the fewest r with
    ``params.max_failure ** (r + 1) <= DISCOVERY_FAILURE`` (2 at the default 1%)."""
    ratio = math.log(DISCOVERY_FAILURE) / math.log(params.max_failure)
    return max(0, math.ceil(ratio - 1e-9) - 1)


class LabelDiscoveryFailed(RuntimeError):
    """Every label-discovery session aborted, or every decode stalled: the run cannot learn its
    label union.

    ``aborts`` holds each aborted attempt's :class:`SecAggAbort` (its ``partial`` record, when
    set, is that session's transcript up to the abort); ``stalls`` each stalled decode's
    :class:`~gptfl_secure.iblt.DecodeFailed`."""

    def __init__(self, aborts: list[SecAggAbort], stalls: Sequence[DecodeFailed] = ()) -> None:
        self.aborts = list(aborts)
        self.stalls = list(stalls)
        reasons = "; ".join(f"attempt {i}: {a}" for i, a in enumerate(self.aborts, 1))
        if self.stalls:
            super().__init__(
                f"label discovery failed: all {len(self.stalls)} decodes stalled (last: "
                f"{self.stalls[-1]}), {len(self.aborts)} sessions aborted. Within capacity this "
                f"happens with probability <= {DISCOVERY_FAILURE:g}; more likely the clients "
                "hold more distinct labels than --label-capacity: raise it and rerun")
            return
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
    stalls: tuple[str, ...] = field(default=(), compare=False)  # decodes that stalled first

    def to_json(self) -> dict:
        """The ``label_discovery`` section of metrics.json, plus ``dp`` with DP."""
        out = {"participants": self.participants, "counts": self.counts,
               "complete": self.complete}
        if self.dp is not None:
            out["dp"] = self.dp
        if self.aborts:
            out["aborted_sessions"] = list(self.aborts)
        if self.stalls:
            out["stalled_decodes"] = list(self.stalls)
        return out


def discover_labels(
    client_labels: Mapping[int, set[str]],
    params: IbltParams,
    aggregate: Aggregator | None = None,
    *,
    retries: int | None = None,
    abort_retries: int = ABORT_RETRIES,
    log: Callable[[str], None] | None = None,
) -> LabelDiscovery:
    """Sum the clients' label sketches and decode the histogram (see :func:`discover_with` for
    the retries). The counts returned are the exact, complete histogram. The default aggregator
    is the masked-sum protocol over the complete graph, modulo the IBLT's prime.
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
    retries: int | None = None,
    abort_retries: int = ABORT_RETRIES,
    log: Callable[[str], None] | None = None,
) -> LabelDiscovery:
    """The label-discovery loop: ``sum_sketches(params, attempt)`` runs one fresh session
    (attempt counts from 1) and returns the summed sketch, or raises :class:`SecAggAbort`.

    A stalled decode is retried up to ``retries`` times (default :func:`decode_retries`), each
    retry a fresh session with the next fresh seed (:meth:`IbltParams.retry_seed`) and, when the
    stalled table shows more labels than its capacity, a capacity grown to the estimated load. An
    aborted session is retried with the same parameters up to ``abort_retries`` times. When
    either runs out, :class:`LabelDiscoveryFailed`; never a partial histogram.
    """
    retries = decode_retries(params) if retries is None else retries
    if retries < 0 or abort_retries < 0:
        raise ValueError("retries and abort_retries must be >= 0")
    first = params
    attempts = 0
    aborts: list[SecAggAbort] = []
    stalls: list[DecodeFailed] = []
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
        try:
            counts = IbltSketch.from_vector(params, summed.total).decode_exact()
        except DecodeFailed as stall:
            stalls.append(stall)
            if len(stalls) > retries:
                if log is not None:
                    log(f"      label discovery: session {attempts}: {stall}; no retry left")
                raise LabelDiscoveryFailed(aborts, stalls) from stall
            params = retry_params(first, params, stall, len(stalls) + 1)
            if log is not None:
                log(f"      label discovery: session {attempts}: {stall}; retrying with a fresh "
                    f"session and hash seed, capacity {params.capacity}")
            continue
        return LabelDiscovery(
            participants=len(summed.included),
            counts=dict(sorted(counts.items())),
            complete=True,
            capacity=params.capacity,
            attempts=attempts,
            session=summed,
            aborts=tuple(str(a) for a in aborts),
            stalls=tuple(str(s) for s in stalls),
        )


RETRY_HEADROOM = 1.25
"""A retry after a decode that shows more keys than capacity sizes for 1.25x the estimate."""


def retry_params(first: IbltParams, stalled: IbltParams, stall: DecodeFailed,
                 decode: int) -> IbltParams:
    """Parameters of decode attempt ``decode`` (>= 2) after ``stalled`` stalled: the fresh seed
    ``first.retry_seed(decode)`` (public, and independent of the keys), the same capacity while
    the stalled table is consistent with at most that many keys, else a capacity for
    ``RETRY_HEADROOM`` times the estimated keys (at least double)."""
    capacity = stalled.capacity
    result = stall.result
    if result.min_keys > capacity:
        estimate = result.estimated_keys
        if not math.isfinite(estimate):
            estimate = 2.0 * result.min_keys
        capacity = min(max(2 * capacity, math.ceil(RETRY_HEADROOM * estimate)), MAX_CAPACITY)
    return stalled.with_capacity(capacity).with_seed(first.retry_seed(decode))


MAX_CAPACITY = 1_000_000
"""Largest capacity a retry grows to (``--label-capacity``'s own limit)."""


DP_MAX_FAILURE = 1e-4
"""DP label discovery runs one session (a second would be a second release), so its table is
sized for a stall probability of 1e-4 in that one attempt."""


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
        params = label_params(config)
        params = IbltParams(params.capacity, params.max_key_bytes, params.seed,
                            params.repetitions, DP_MAX_FAILURE)
        return discover_with_dp(config, client_labels, params, aggregate, log)
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
