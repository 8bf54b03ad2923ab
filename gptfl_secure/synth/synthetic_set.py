"""From discovered label names to a labelled synthetic data set: prompts → generator → cache.

The server calls :func:`build_synthetic_set` with the label names it decoded from the summed
IBLT sketches and the task's class list; it never touches client data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..learning.data import Dataset
from .base import Generator
from .cache import SyntheticCache, cache_key


def build_synthetic_set(generator: Generator, prompts: Mapping[str, Sequence[str]],
                        per_label: int, label_names: Sequence[str], seed: int,
                        cache: SyntheticCache, example_shape: Sequence[int],
                        progress: bool = False, log: Callable[[str], None] | None = None,
                        every: float = 10.0) -> Dataset:
    """``per_label`` examples for every label in ``prompts`` that is one of the task's
    ``label_names`` (class index = position in ``label_names``). Labels are generated in
    ``label_names`` order, each with its own derived seed, and cached.

    Progress: with ``progress``, a bar of examples (count/total); otherwise, with ``log``, a
    line ``generated i/n labels (count/total examples, elapsed)`` at most every ``every``
    seconds and after the last label."""
    from tqdm import tqdm

    labels = [name for name in label_names if name in prompts]
    if not labels:
        raise ValueError("none of the discovered labels is a class of the task: nothing to "
                         "generate")
    generator.check_labels(labels)
    xs, ys = [], []
    total = len(labels) * per_label
    bar = tqdm(total=total, desc="      generating", unit="ex", disable=not progress)
    started = last = time.perf_counter()
    for i, label in enumerate(labels, 1):
        bar.set_postfix_str(label, refresh=False)
        label_seed = int(np.random.default_rng([seed, _stable_hash(label)]).integers(2**31))
        key = cache_key(generator.name, label, prompts[label], per_label, label_seed,
                        example_shape)
        x = cache.get_or_make(key, lambda label=label, s=label_seed: generator.generate(
            label, prompts[label], per_label, s))
        if x.shape != (per_label, *example_shape):
            raise ValueError(f"generator {generator.name} gave {x.shape} for {label!r}; "
                             f"expected {(per_label, *example_shape)}")
        xs.append(x)
        ys.append(np.full(per_label, label_names.index(label), dtype=np.int64))
        bar.update(per_label)
        now = time.perf_counter()
        if log is not None and not progress and (i == len(labels) or now - last >= every):
            last = now
            log(f"      generated {i}/{len(labels)} labels ({i * per_label}/{total} examples, "
                f"{now - started:.1f} s)")
    bar.close()
    return Dataset(np.concatenate(xs).astype(np.float32), np.concatenate(ys),
                   tuple(label_names))


def _stable_hash(label: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "big")
