"""The interface every generator backend implements, and how a backend is chosen by name.

A backend turns prompts for one label into a batch of synthetic examples in the task's input
format: images ``(count, channels, size, size)`` float32 in [0, 1], or audio features
``(count, 1, n_mels, frames)`` float32 (log-mel, see :mod:`gptfl_secure.learning.audio_features`).
Backends see label names and prompts only, never client data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


class GeneratorError(ValueError):
    """A generator cannot serve this request (bad spec, unloadable model, unrenderable label)."""


@runtime_checkable
class Generator(Protocol):
    """``name`` identifies the backend and model in the cache key (e.g. ``"offline"``,
    ``"diffusers:/models/sd"``)."""

    name: str

    def check_labels(self, labels: Sequence[str]) -> None:
        """Raise GeneratorError (or a subclass) naming every label this backend cannot serve."""

    def generate(self, label: str, prompts: Sequence[str], count: int, seed: int) -> np.ndarray:
        """``count`` examples for ``label``, cycling through ``prompts``; deterministic in
        ``seed`` where the backend allows it."""
