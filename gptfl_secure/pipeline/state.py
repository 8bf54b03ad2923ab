"""The state of a run between steps, and its checkpoint.

The checkpoint (``checkpoint.npz``, written atomically after label discovery and after every
round) holds the configuration, the global model vector, the server optimizer's state and every
metric so far. Round r's randomness depends only on ``(seed, r)`` (see :mod:`.seeds`), so a
resumed run ends with the same metrics as an uninterrupted one, timings aside.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ConfigError, RunConfig

CHECKPOINT = "checkpoint.npz"


@dataclass
class RunState:
    """Everything a checkpoint holds."""

    config: RunConfig
    label_discovery: dict
    pretrain: dict | None
    global_vector: np.ndarray
    optimizer_state: dict
    rounds: list[dict] = field(default_factory=list)
    transcript: list[dict] = field(default_factory=list)
    dpsgd_history: dict[str, list[list[float]]] = field(default_factory=dict)  # client -> spends
    initial_accuracy: float | None = None  # the starting model's test accuracy ("round 0")
    initial_vector: np.ndarray | None = None  # the model before round 1, for a canary audit

    @property
    def next_round(self) -> int:
        return len(self.rounds) + 1


def save_checkpoint(out: Path, state: RunState) -> None:
    meta = {"config": state.config.to_json(), "label_discovery": state.label_discovery,
            "pretrain": state.pretrain, "rounds": state.rounds, "transcript": state.transcript,
            "has_moments": state.optimizer_state["m"] is not None,
            "dpsgd_history": state.dpsgd_history, "initial_accuracy": state.initial_accuracy}
    arrays = {"global_vector": state.global_vector,
              "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    if state.initial_vector is not None:
        arrays["initial_vector"] = state.initial_vector
    if meta["has_moments"]:
        arrays["m"] = state.optimizer_state["m"]
        arrays["v"] = state.optimizer_state["v"]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out / CHECKPOINT)


def load_checkpoint(out: Path) -> RunState:
    """Read ``out/checkpoint.npz``; raises ConfigError when it is missing or unreadable."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"--resume {out}: no {CHECKPOINT} there; give the --out folder of a "
                          "run that completed at least its label discovery")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            vector = data["global_vector"].copy()
            moments = ({"m": data["m"].copy(), "v": data["v"].copy()} if meta["has_moments"]
                       else {"m": None, "v": None})
            initial = data["initial_vector"].copy() if "initial_vector" in data else None
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--resume {out}: {CHECKPOINT} is unreadable ({exc})") from None
    return RunState(config=RunConfig.from_mapping(meta["config"], source=str(path)),
                    label_discovery=meta["label_discovery"], pretrain=meta["pretrain"],
                    global_vector=vector, optimizer_state=moments, rounds=meta["rounds"],
                    transcript=meta["transcript"],
                    dpsgd_history=meta.get("dpsgd_history", {}),
                    initial_accuracy=meta.get("initial_accuracy"), initial_vector=initial)
