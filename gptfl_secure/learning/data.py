"""Data sets: scikit-learn's digits as the embedded default, with a held-out server test split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (n, ...) float32, integer labels ``y`` (n,), and the label names.

    ``label_names[y[i]]`` is the human-readable name of example i's label: the string that a
    client puts into its IBLT sketch and that the server turns into prompts.
    """

    x: np.ndarray
    y: np.ndarray
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} examples but y has {len(self.y)}")
        if len(self.y) and not 0 <= int(self.y.min()) <= int(self.y.max()) < len(self.label_names):
            raise ValueError(f"labels must lie in [0, {len(self.label_names)})")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(self.x[indices], self.y[indices], self.label_names)


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package: no download).

    Returns ``(train, test)``: the train part is what clients hold, the test part is the server's
    held-out split, stratified by label. Pixels are scaled to [0, 1]; ``x`` is (n, 1, 8, 8).
    Label names are the digit strings "0" .. "9".
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: must be in (0, 1)")
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    names = tuple(str(int(t)) for t in bunch.target_names)
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in range(len(names)):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        test_idx.append(idx[: round(len(idx) * test_fraction)])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    full = Dataset(x, y, names)
    return full.subset(train), full.subset(test)
