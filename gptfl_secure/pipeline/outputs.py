"""What a run writes to its output folder: metrics.json (its content: :func:`final_metrics`),
metrics.csv, plots, the server's transcript summary (messages and bytes the server received per
session and step) and, with ``record-transcript``, each masked-sum session's record under
``transcripts/`` (:func:`record_transcript`, :class:`SessionRecorder`)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..protocols import SecAggAbort
from ..protocols.recording import record_result
from .aggregation import AggregateResult
from .canaries import with_empirical_privacy
from .config import RunConfig
from .dp import privacy_report
from .setup import execution

if TYPE_CHECKING:
    from .state import RunState

ROUND_COLUMNS = ("round", "test_accuracy", "clients_sampled", "clients_included",
                 "upload_bytes_per_client", "secagg_seconds", "gradient_diversity", "skipped",
                 "skip_reason")


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported on first use: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_json(path: Path, data) -> None:
    """Write atomically: a killed run never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def write_metrics_csv(path: Path, rounds: Sequence[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ROUND_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rounds:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in ROUND_COLUMNS})


def plot_series(path: Path, rounds: Sequence[dict], key: str, ylabel: str, title: str,
                start: float | None = None) -> None:
    """One line of ``key`` per round (skipped rounds and missing values left out); ``start``,
    when given, is the value before round 1, drawn at round 0."""
    plt = _pyplot()

    points = [(r["round"], r[key]) for r in rounds if r.get(key) is not None and not r["skipped"]]
    if start is not None:
        points.insert(0, (0, start))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", markersize=3)
    if start is not None:
        ax.plot([0], [start], marker="s", markersize=6, linestyle="",
                label="round 0: the starting model")
        ax.legend(fontsize=7, loc="lower right")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize_session(name: str, result: AggregateResult | None) -> dict:
    """Per step: how many messages the server received and their bytes; who was included and
    whom the server rejected. Nothing here is secret: it is what the server saw."""
    if result is None:
        return {"session": name, "protocol": "none"}
    if result.session is None:
        return {"session": name, "protocol": "plain sum (secagg off)",
                "included": len(result.included)}
    steps: dict[str, dict[str, int]] = {}
    for entry in result.session.transcript:
        step = steps.setdefault(entry.step, {"messages": 0, "bytes": 0})
        step["messages"] += 1
        step["bytes"] += len(entry.data)
    stats = result.session.stats
    return {
        "session": name,
        "protocol": "masked sum",
        "included": len(result.included),
        "steps": steps,
        "server_seconds": {k: round(v, 6) for k, v in stats.server_seconds.items()},
        "rejected": {str(k): v for k, v in stats.server_rejected.items()},
        "client_aborts": {str(k): v for k, v in stats.client_aborts.items()},
    }


def plot_samples(path: Path, data, per_label: int = 8) -> None:
    """A grid of generated examples: one row per class, ``per_label`` columns."""
    plt = _pyplot()
    fig = sample_grid(data, per_label)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_grid(data, per_label: int = 8):
    """The figure of :func:`plot_samples`: images keep their aspect ratio (square pixels);
    long feature maps (log-mel frames) fill their cell."""
    plt = _pyplot()
    import numpy as np

    classes = [c for c in range(len(data.label_names)) if np.any(data.y == c)]
    height, width = data.x.shape[-2:]
    # square pixels for images; log-mel features (many frames, few bands) fill their cell
    aspect = "equal" if max(height, width) <= 2 * min(height, width) else "auto"
    fig, axes = plt.subplots(len(classes), per_label, squeeze=False,
                             figsize=(per_label * 0.8, len(classes) * 0.8 * (
                                 height / width if aspect == "equal" else 1)))
    for row, c in enumerate(classes):
        idx = np.flatnonzero(data.y == c)[:per_label]
        for col in range(per_label):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(idx):
                img = data.x[idx[col]]
                img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
                scale = {"vmin": 0, "vmax": 1} if 0 <= img.min() and img.max() <= 1 else {}
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, aspect=aspect, **scale)
        axes[row][0].set_title(data.label_names[c], fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def plot_comparison(path: Path, arms: dict) -> None:
    """Accuracy per round for every arm, gradient diversity per round beside it (paper Fig. 8);
    synthetic_only and local_only as horizontal lines."""
    plt = _pyplot()

    fig, (acc_ax, gd_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, arm in arms.items():
        curve = arm.get("test_accuracy_per_round")
        if curve:
            xs = range(1, len(curve) + 1)
            acc_ax.plot(xs, curve, label=name)
            gd = [(i, v) for i, v in enumerate(arm["gradient_diversity_per_round"], 1)
                  if v is not None]
            if gd:
                gx, gy = zip(*gd, strict=True)
                gd_ax.plot(gx, gy, label=name)
        else:
            acc_ax.axhline(arm["final_test_accuracy"], linestyle="--", linewidth=1, label=name)
    acc_ax.set(xlabel="round", ylabel="test accuracy", title="accuracy per round")
    gd_ax.set(xlabel="round", ylabel="gradient diversity", title="gradient diversity per round")
    gd_ax.set_yscale("log")
    for ax in (acc_ax, gd_ax):
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def record_transcript(config: RunConfig, out: Path | None, name: str, session) -> dict | None:
    """With ``--record-transcript``, write the server's record of a masked-sum session to
    ``out/transcripts/`` (a replayed round after ``--resume`` overwrites its record).

    ``session``: an AggregateResult, a MaskedSumResult, or an aborted session's partial record
    (``SecAggAbort.partial``), recorded with its abort reason. Returns the session's entry in
    ``transcript_summary.json``'s ``"sessions"``: ``{"record": name (None when not recorded),
    "session_id": hex, "aborted": None or the reason}``; None when no masked sum ran."""
    result = getattr(session, "session", session)  # an AggregateResult's MaskedSumResult
    if result is None:
        return None
    recorded = config.record_transcript and out is not None
    if recorded:
        record_result(out / "transcripts", name, result, overwrite=True)
    session_id = getattr(result, "session_id", b"")
    return {"record": name if recorded else None, "session_id": session_id.hex(),
            "aborted": getattr(result, "abort_reason", None)}


class SessionRecorder:
    """An aggregator wrapper that lists (and, with ``--record-transcript`` and an ``out``,
    records) every masked-sum session it runs, aborted ones included: the first as ``name``,
    later ones (label-discovery retries) as ``name-2``, ``name-3``... ``sessions`` is what
    ``transcript_summary.json`` lists under ``"sessions"`` (see :func:`record_transcript`)."""

    def __init__(self, config: RunConfig, out: Path | None, name: str) -> None:
        self.config, self.out, self.name = config, out, name
        self.sessions: list[dict] = []

    def wrap(self, aggregate):
        def recorded(*args, **kwargs):
            name = self.name if not self.sessions else f"{self.name}-{len(self.sessions) + 1}"
            try:
                result = aggregate(*args, **kwargs)
            except SecAggAbort as abort:
                self._note(name, abort.partial)
                raise
            self._note(name, result)
            return result

        return recorded

    def _note(self, name: str, session) -> None:
        entry = record_transcript(self.config, self.out, name, session)
        if entry is not None:
            self.sessions.append(entry)


def written_since(out: Path, since: float) -> list[str]:
    """What a run wrote to ``out``: the files modified at or after ``since`` (a ``time.time()``,
    floored to the second), relative to ``out``, sorted; a sub-folder's files as one entry
    ``folder/ (N files)``."""
    since = math.floor(since)
    names: list[str] = []
    for entry in sorted(Path(out).iterdir()):
        if entry.is_dir():
            count = sum(1 for f in entry.rglob("*") if f.is_file() and f.stat().st_mtime >= since)
            if count:
                names.append(f"{entry.name}/ ({count} file{'s' if count != 1 else ''})")
        elif entry.is_file() and entry.stat().st_mtime >= since:
            names.append(entry.name)
    return names


def final_metrics(state: RunState) -> dict:
    """The content of ``metrics.json``: the configuration, label discovery, pretraining, one row
    per round, the starting model's and the final test accuracy and the privacy guarantee."""
    rounds = state.rounds
    return {
        "config": state.config.to_json(),
        "label_discovery": state.label_discovery,
        "pretrain": state.pretrain,
        "rounds": rounds,
        "initial_test_accuracy": state.initial_accuracy,
        "final_test_accuracy": rounds[-1]["test_accuracy"] if rounds else None,
        "privacy": with_empirical_privacy(privacy_report(state), state),
        "execution": execution(state.config, len(state.global_vector)),
    }


def write_outputs(out: Path, state: RunState) -> dict:
    """metrics.json, metrics.csv, the two per-round plots and transcript_summary.json."""
    metrics = final_metrics(state)
    write_json(out / "metrics.json", metrics)
    write_metrics_csv(out / "metrics.csv", state.rounds)
    plot_series(out / "accuracy.png", state.rounds, "test_accuracy", "test accuracy",
                "server test accuracy per round",
                start=state.initial_accuracy)
    plot_series(out / "gradient_diversity.png", state.rounds, "gradient_diversity",
                "gradient diversity", "Σ||Δ_i||² / ||ΣΔ_i||² per round")
    write_json(out / "transcript_summary.json", state.transcript)
    return metrics
