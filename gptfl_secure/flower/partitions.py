"""A node's own partition, cached on the node as ``.npy`` files, so that a training step loads
only its partition (not the whole data set) and a protocol step needs no data at all.

The cache key hashes the run-config values that decide a partition (data set, number of
clients, Dirichlet alpha, minimum size, test fraction, image size, audio frames, seed) and the
partition id, read from the raw run config: computing it imports neither torch nor the data.
Entries are written atomically (a temporary folder renamed into place), so concurrent nodes
and killed processes never leave half an entry. The folder is the node config's
``partition-cache``, else ``$XDG_CACHE_HOME/gptfl-secure/partitions`` (``~/.cache`` without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..learning.data import Dataset

PARTITION_KEYS = ("dataset", "clients", "alpha", "min_client_size", "test_fraction",
                  "image_size", "audio_frames", "seed")
"""The run-config keys that decide a client's partition."""


def cache_key(run_config: Mapping, partition: int) -> str:
    """The cache entry's name for ``partition`` under ``run_config`` (keys with ``-`` or
    ``_``); a key the run config does not list is hashed as absent (its default)."""
    raw = {str(k).replace("-", "_"): v for k, v in run_config.items()}
    picked = {k: raw.get(k) for k in PARTITION_KEYS}
    blob = json.dumps({"partition": int(partition), **picked}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cache_root(node_config: Mapping) -> Path:
    """Where this node keeps its cached partitions."""
    chosen = node_config.get("partition-cache")
    if chosen:
        return Path(str(chosen)).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gptfl-secure" / "partitions"


def load(root: Path, key: str) -> Dataset | None:
    """The cached partition ``key``, or None when there is none (or it is unreadable)."""
    entry = root / key
    try:
        names = json.loads((entry / "labels.json").read_text())
        x = np.load(entry / "x.npy", allow_pickle=False)
        y = np.load(entry / "y.npy", allow_pickle=False)
        return Dataset(x, y, tuple(str(n) for n in names))
    except (OSError, ValueError, TypeError):
        return None


def present_labels(root: Path, key: str) -> list[str] | None:
    """The distinct label names of cached partition ``key`` (reads only ``y.npy`` and the
    names), or None when it is not cached."""
    entry = root / key
    try:
        names = json.loads((entry / "labels.json").read_text())
        y = np.load(entry / "y.npy", allow_pickle=False)
        return sorted({str(names[int(v)]) for v in np.unique(y)})
    except (OSError, ValueError, TypeError, IndexError):
        return None


def store(root: Path, key: str, data: Dataset) -> None:
    """Write ``data`` as entry ``key`` (atomically; an existing entry is kept)."""
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    if entry.exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        np.save(tmp / "x.npy", np.ascontiguousarray(data.x), allow_pickle=False)
        np.save(tmp / "y.npy", np.ascontiguousarray(data.y), allow_pickle=False)
        (tmp / "labels.json").write_text(json.dumps(list(data.label_names)))
        os.replace(tmp, entry)
    except OSError:
        if entry.exists():  # another node of this machine wrote it first
            return
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
