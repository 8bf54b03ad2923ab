"""Dirichlet label-skew partitioning of a data set over clients (Hsu et al. 2019)."""

from __future__ import annotations

import numpy as np


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    *,
    min_size: int = 5,
    seed: int = 0,
    max_attempts: int = 1000,
) -> list[np.ndarray]:
    """Split example indices over ``num_clients`` with per-label Dirichlet(``alpha``) shares.

    For each label, its examples are divided among clients in proportions drawn from
    Dirichlet(alpha); small alpha gives each client few labels. As in the common benchmark
    implementations, a client that already holds its fair share (n / num_clients) gets no more
    examples of later labels, which keeps sizes usable at small alpha. Draws repeat until every
    client holds at least ``min_size`` examples.

    Returns one sorted index array per client; together they partition ``range(len(labels))``.
    Deterministic in ``seed``. Raises ValueError when the request cannot be met.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients={num_clients}: must be a positive int")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha}: the Dirichlet concentration must be > 0")
    if min_size < 0 or min_size * num_clients > n:
        raise ValueError(
            f"min_size={min_size} for {num_clients} clients needs {min_size * num_clients} "
            f"examples; the data set has {n}: lower min_size or the number of clients"
        )
    rng = np.random.default_rng(seed)
    for _ in range(max_attempts):
        parts = _draw(labels, num_clients, alpha, rng)
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(p) for p in parts]
    raise ValueError(
        f"no Dirichlet({alpha}) split over {num_clients} clients gave every client >= {min_size} "
        f"examples in {max_attempts} draws: raise alpha, or lower min_size or the client count"
    )


def _draw(labels: np.ndarray, num_clients: int, alpha: float, rng) -> list[np.ndarray]:
    fair_share = len(labels) / num_clients
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        shares = rng.dirichlet(np.full(num_clients, alpha))
        shares = shares * (sizes < fair_share)
        total = shares.sum()
        shares = shares / total if total > 0 else np.full(num_clients, 1 / num_clients)
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for client, piece in enumerate(np.split(idx, cuts)):
            parts[client].append(piece)
            sizes[client] += len(piece)
    return [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]


def sample_clients(num_clients: int, cohort: int, rng: np.random.Generator) -> np.ndarray:
    """``cohort`` distinct client ids drawn uniformly without replacement, sorted."""
    if not 1 <= cohort <= num_clients:
        raise ValueError(f"cohort={cohort}: must be in [1, num_clients={num_clients}]")
    return np.sort(rng.choice(num_clients, size=cohort, replace=False))


def poisson_sample_clients(num_clients: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson sampling: each of ``num_clients`` ids independently with probability ``rate``
    (one uniform draw per client, in id order, so the draw replays from the same ``rng``);
    sorted, possibly empty."""
    if not isinstance(num_clients, int | np.integer) or num_clients < 1:
        raise ValueError(f"num_clients={num_clients}: must be a positive int")
    if not 0 <= rate <= 1:
        raise ValueError(f"rate={rate}: a sampling probability must be in [0, 1]")
    return np.flatnonzero(rng.random(int(num_clients)) < rate)
