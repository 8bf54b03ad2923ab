"""The privacy claims a run reports beside its records: ``metrics.json``'s ``privacy`` section,
the accountant's (ε, δ) and, for a run audited with canaries (``--dp-audit-canaries``), the
empirical ε measured in the same run. The audit prints them; it does not recompute them (that
needs the model, which the auditor of transcripts does not have).
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def read_privacy(run_dir: Path | None) -> dict | None:
    """``privacy`` of ``run_dir/metrics.json``; None when there is none, or it is unreadable
    (the run-sessions check reports an unreadable report)."""
    if run_dir is None:
        return None
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    privacy = metrics.get("privacy") if isinstance(metrics, dict) else None
    return privacy if isinstance(privacy, dict) else None


def _number(value) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.3g}"
    return "n/a"


def format_privacy(privacy: dict | None) -> list[str]:
    """One line for the accountant's ε and, when present, one for the empirical ε with its
    interval, canary count and verdict against the accountant."""
    if not privacy or ("epsilon" not in privacy and "empirical_epsilon" not in privacy):
        return []
    eps, delta = privacy.get("epsilon"), privacy.get("delta")
    lines = [f"privacy (metrics.json): accountant epsilon = {_number(eps)} at delta = "
             f"{_number(delta)}"]
    if "empirical_epsilon" not in privacy:
        return lines
    emp = privacy.get("empirical_epsilon")
    details = privacy.get("empirical") if isinstance(privacy.get("empirical"), dict) else {}
    if emp is None:
        return lines + [f"  empirical epsilon: not measured ({details.get('error', 'unknown')})"]
    interval = details.get("interval") or [None, None]
    confidence = details.get("confidence")
    line = (f"  empirical epsilon = {_number(emp)} ({_number(confidence)} interval "
            f"[{_number(interval[0])}, {_number(interval[-1])}], {details.get('canaries')} "
            "canaries, one-shot canary audit)")
    if isinstance(eps, int | float) and isinstance(emp, int | float):
        low = interval[0] if isinstance(interval[0], int | float) else emp
        if emp <= eps:
            line += ": below the accountant's, as a sound mechanism gives"
        elif low > eps:
            line += (": ABOVE the accountant's, whole interval: clipping, noise or accounting "
                     "is broken")
        else:
            line += (": above the accountant's, but the interval reaches below it: "
                     "inconclusive, audit with more canaries")
    return lines + [line]
