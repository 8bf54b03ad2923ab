"""Summary statistics over seeds: the mean, the sample standard deviation and the two-sided 95%
t-interval of the mean, for one number per seed or one curve per seed.

Missing values (``None``: a round with no gradient diversity, for instance) are left out of
that round's statistics; a round with fewer than two values has no standard deviation and no
interval (``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1) and 95% t-interval of the mean of ``n`` values;
    ``sd`` and ``ci95`` are None below two values, everything is None for none."""

    n: int
    mean: float | None
    sd: float | None
    ci95: tuple[float, float] | None


def summarize(values: Sequence[float | None]) -> Summary:
    """The summary of ``values``, leaving out None. Raises ValueError on a non-finite value."""
    x = np.array([v for v in values if v is not None], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"cannot summarize non-finite values: {x.tolist()}")
    n = len(x)
    if n == 0:
        return Summary(0, None, None, None)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, None, None)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1)) * sd / np.sqrt(n)
    return Summary(n, mean, sd, (mean - half, mean + half))


def summarize_curves(curves: Sequence[Sequence[float | None]]) -> list[Summary]:
    """One :class:`Summary` per round over the seeds' ``curves`` (all of the same length)."""
    lengths = {len(c) for c in curves}
    if len(lengths) != 1:
        raise ValueError(f"curves of different lengths {sorted(lengths)}: every seed plays the "
                         "same number of rounds")
    return [summarize(column) for column in zip(*curves, strict=True)]


def curve_fields(prefix: str, curves: Sequence[Sequence[float | None]]) -> dict[str, list]:
    """``{prefix}_mean_per_round``, ``{prefix}_sd_per_round`` and ``{prefix}_ci95_per_round``
    (``[low, high]`` per round) of the seeds' ``curves``, as comparison.json stores them."""
    rows = summarize_curves(curves)
    return {f"{prefix}_mean_per_round": [s.mean for s in rows],
            f"{prefix}_sd_per_round": [s.sd for s in rows],
            f"{prefix}_ci95_per_round": [list(s.ci95) if s.ci95 else None for s in rows]}


def value_fields(prefix: str, values: Sequence[float | None]) -> dict[str, object]:
    """``{prefix}_mean``, ``{prefix}_sd`` and ``{prefix}_ci95`` of one value per seed."""
    s = summarize(values)
    return {f"{prefix}_mean": s.mean, f"{prefix}_sd": s.sd,
            f"{prefix}_ci95": list(s.ci95) if s.ci95 else None}
