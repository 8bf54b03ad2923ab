"""Speed, label-discovery bytes and stall rates of the IBLT sketch (``gptfl_secure.iblt``).

1. **Speed against its floor, in the same run.** At 10^4 and 10^5 distinct keys (capacity = keys,
   max_key_bytes = 64), interleaved repeats of: the floor's two parts, one keyed BLAKE2b of every
   key (``digest_keys``, the encoder's own hash call, plus the cell indices) and one scatter of
   every key's row into its cells (the faster of a 1-D ``np.add.at`` and a per-column
   ``np.bincount``, neither reduced mod p); ``IbltSketch.from_keys`` (encode); ``decode``. Medians;
   every decode is checked complete and exact. Prints encode/floor and decode/floor (goals: <= 2
   and <= 3 at 10^5 keys).
2. **Label-discovery upload per client against capacity** (64-byte keys, 8 bytes per field
   element on the wire): the previous sizing (1e-4 pair budget, no retry) against the current one
   (stall <= p = ``max_failure`` per attempt, two fresh-seed retries): bytes of one sketch, the
   analytic stall bound p (``gptfl_secure.iblt.failure``), expected bytes with retries
   (x (1 + p + p^2)), the ratio, and the bound on a failed discovery (p^3).
3. **Measured stall rate at load = capacity**: the real sketch (fresh keys and seed per trial;
   a success is a complete, exact decode; wrong counts must be 0) and, for many more trials at
   small sizes, the hypergraph model (random cells, vectorised peeling). 95% Wilson upper bounds.

Run: ``.venv/bin/python benches/iblt_bench.py`` (writes ``benches/results/iblt_bench.txt``; several
minutes on 2 idle cores), ``--quick`` for a smoke run that writes nothing. Output is Markdown.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import string  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402

from gptfl_secure.iblt import IbltParams, IbltSketch  # noqa: E402
from gptfl_secure.iblt.encoding import cells_from_digests, digest_keys  # noqa: E402
from gptfl_secure.iblt.failure import failure_bound  # noqa: E402

SEED = 0
MAX_KEY_BYTES = 64
ELEMENT_BYTES = 8  # a field element on the wire (modulus 2^61 - 1 > 2^32)
WILSON_Z = 1.959964  # two-sided 95%

SPEED_SIZES = (10**4, 10**5)
SPEED_GOALS = (2.0, 3.0)  # encode / floor, decode / floor at 10^5 keys
CAPACITIES = (1, 2, 10, 50, 100, 1000, 10**4)
# capacity -> real-sketch trials (full, quick)
SKETCH_TRIALS = {2: (20000, 300), 10: (20000, 300), 50: (10000, 200), 100: (5000, 100),
                 1000: (1000, 20), 10**4: (100, 3)}
# capacity -> hypergraph-model trials (full, quick)
MODEL_TRIALS = {2: (10**6, 10**4), 10: (10**6, 10**4), 50: (4 * 10**5, 10**4),
                100: (2 * 10**5, 5000), 1000: (2 * 10**4, 500), 10**4: (2000, 50)}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "iblt_bench.txt")

# (characters, total weight): mostly ASCII, as real labels are, with some accented Latin, Greek
# and Cyrillic (2 UTF-8 bytes), CJK (3 bytes) and emoji (4 bytes).
_LABEL_POOLS = (
    (string.ascii_lowercase, 60),
    (string.ascii_uppercase + string.digits + " -_", 15),
    ("àáâäçèéêëíîïñóôöøúûüßæœ", 10),
    ("αβγδεζηθλμπστφω" + "абвгдежзиклмнопрст", 8),
    ("".join(chr(c) for c in range(0x4E00, 0x4E00 + 200)), 6),
    ("🐶🐱🌲🚗🍎⭐", 1),
)
_LABEL_CHARS = [c for chars, _ in _LABEL_POOLS for c in chars]
_LABEL_CUM_WEIGHTS = list(
    np.cumsum([weight / len(chars) for chars, weight in _LABEL_POOLS for _ in chars])
)


# ------------------------------------------------------------------------------------- keys
def random_label(rng: random.Random) -> str:
    """A label of 5-30 characters, trimmed to at most MAX_KEY_BYTES bytes of UTF-8."""
    label = "".join(rng.choices(_LABEL_CHARS, cum_weights=_LABEL_CUM_WEIGHTS, k=rng.randint(5, 30)))
    while len(label.encode()) > MAX_KEY_BYTES:
        label = label[:-1]
    return label


def random_labels(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct random labels."""
    labels: dict[str, None] = {}
    while len(labels) < n:
        labels[random_label(rng)] = None
    return list(labels)


def trial_keys(rng: random.Random, n: int, trial: int) -> list[str]:
    """Fresh keys for one trial: structured on even trials, random labels on odd ones."""
    if trial % 2 == 0:
        return [f"{trial}-{i}" for i in range(n)]
    return random_labels(rng, n)


# ------------------------------------------------------------------------------------- output
def print_table(caption: str, columns: Sequence[str]) -> None:
    """Print a Markdown caption and table header; rows follow with :func:`print_row`."""
    print(f"\n{caption}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|", flush=True)


def print_row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------- 1. speed
def floor_hash(params: IbltParams, data: list[bytes]) -> np.ndarray:
    """One keyed BLAKE2b of every key (the encoder's own call) and its cell indices."""
    return cells_from_digests(params, digest_keys(params, data))


def scatter_add_at(num_cells: int, cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Every key's row added into its cells with one 1-D ``np.add.at`` (no reduction mod p)."""
    width = rows.shape[1]
    table = np.zeros(num_cells * width, dtype=np.uint64)
    for j in range(cells.shape[1]):
        index = (cells[:, j, None] * width + np.arange(width)).ravel()
        np.add.at(table, index, rows.ravel())
    return table


def scatter_bincount(num_cells: int, cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The same scatter with ``np.bincount`` per column (float64: not exact, a timing floor)."""
    flat = cells.ravel()
    values = np.repeat(rows, cells.shape[1], axis=0).astype(np.float64)
    return np.stack([np.bincount(flat, weights=values[:, c], minlength=num_cells)
                     for c in range(rows.shape[1])], axis=1)


def speed_section(reps: int) -> None:
    print_table(
        f"**Encode and decode against the floor** (medians of {reps} interleaved repeats, one "
        "thread; floor = one keyed hash of every key + one scatter of every key's row into its "
        "cells, the faster of 1-D np.add.at and np.bincount). Goals at 10^5 keys: encode <= "
        f"{SPEED_GOALS[0]:g}x, decode <= {SPEED_GOALS[1]:g}x the floor.",
        ("keys", "cells", "hash s", "scatter s (add.at / bincount)", "floor s", "encode s",
         "decode s", "encode / floor", "decode / floor"),
    )
    for n in SPEED_SIZES:
        keys = [f"label-{i}" for i in range(n)]
        data = [k.encode() for k in keys]
        params = IbltParams(capacity=n, max_key_bytes=MAX_KEY_BYTES, seed=SEED)
        rows = np.random.default_rng(SEED).integers(
            0, params.modulus, size=(n, params.cell_width), dtype=np.uint64)
        cells = floor_hash(params, data)
        sketch = IbltSketch.from_keys(params, keys)
        expected = dict.fromkeys(keys, 1)
        steps = {
            "hash": partial(floor_hash, params, data),
            "add.at": partial(scatter_add_at, params.num_cells, cells, rows),
            "bincount": partial(scatter_bincount, params.num_cells, cells, rows),
            "encode": partial(IbltSketch.from_keys, params, keys),
            "decode": sketch.decode,
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(reps):
            for name, step in steps.items():
                seconds, value = time_call(step)
                times[name].append(seconds)
                if name == "decode" and not (value.complete and value.counts == expected):
                    raise RuntimeError(f"decode of {n} keys is not complete and exact")
        med = {name: statistics.median(t) for name, t in times.items()}
        floor = med["hash"] + min(med["add.at"], med["bincount"])
        print_row(n, params.num_cells, f"{med['hash']:.4f}",
                  f"{med['add.at']:.4f} / {med['bincount']:.4f}", f"{floor:.4f}",
                  f"{med['encode']:.4f}", f"{med['decode']:.4f}",
                  f"{med['encode'] / floor:.2f}x", f"{med['decode'] / floor:.2f}x")


def time_call(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# ------------------------------------------------------------------------------------- 2. bytes
def previous_cells(capacity: int) -> int:
    """The sizing this one replaced: 1.1x the peeling threshold, or a 1e-4 pair budget."""
    linear = math.ceil(1.1 * 1.222 * capacity / 3) + 4
    pair = math.ceil((max(capacity * (capacity - 1) / 2, 1.0) / 1e-4) ** (1 / 3))
    return 3 * max(linear, pair)


def bytes_section() -> None:
    print_table(
        "**Label-discovery upload per client** (64-byte keys, 8 bytes per element). Previous: "
        "1e-4 pair budget, no retry. Now: stall <= p per attempt (analytic bound at load = "
        "capacity), two fresh-seed retries; expected = one sketch x (1 + p + p^2).",
        ("capacity", "previous cells", "previous bytes", "cells", "bytes per attempt",
         "stall bound p", "expected bytes", "previous / expected", "failed discovery <= p^3"),
    )
    for capacity in CAPACITIES:
        params = IbltParams(capacity=capacity, max_key_bytes=MAX_KEY_BYTES)
        p = failure_bound(capacity, params.subtable_cells, params.repetitions)
        before = previous_cells(capacity) * params.cell_width * ELEMENT_BYTES
        now = params.vector_length * ELEMENT_BYTES
        expected = now * (1 + p + p * p)
        print_row(capacity, previous_cells(capacity), f"{before:,}", params.num_cells, f"{now:,}",
                  f"{p:.2e}", f"{expected:,.0f}", f"{before / expected:.2f}x", f"{p**3:.1e}")


# ------------------------------------------------------------------------------------- trials
@dataclass(frozen=True)
class Trial:
    complete: bool
    recovered: int  # inserted keys decoded with count 1
    wrong: int  # decoded entries that are not an inserted key with count 1

    def success(self, n_keys: int) -> bool:
        return self.complete and self.wrong == 0 and self.recovered == n_keys


def run_trial(rng: random.Random, capacity: int, n_keys: int, trial: int) -> Trial:
    """Encode ``n_keys`` fresh keys under a fresh hash seed, decode, and score the result."""
    params = IbltParams(capacity=capacity, max_key_bytes=MAX_KEY_BYTES, seed=rng.getrandbits(64))
    keys = trial_keys(rng, n_keys, trial)
    result = IbltSketch.from_keys(params, keys).decode()
    inserted = set(keys)
    correct = sum(1 for k, c in result.counts.items() if c == 1 and k in inserted)
    return Trial(result.complete, correct, len(result.counts) - correct)


def wilson_upper(failures: int, trials: int, z: float = WILSON_Z) -> float:
    """Upper end of the Wilson score interval for a binomial proportion."""
    p = failures / trials
    denom = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (centre + spread) / denom


# ------------------------------------------------------------------------------------- 3. stalls
def model_stalls(rng: np.random.Generator, n: int, w: int, r: int, trials: int) -> int:
    """Stalls of the hypergraph model: ``trials`` independent tables of ``n`` keys, each key in a
    uniform cell of each of ``r`` sub-tables of ``w`` cells, peeled in vectorised rounds."""
    stalls, batch = 0, max(1, 2_000_000 // max(1, n * r))
    for start in range(0, trials, batch):
        t = min(batch, trials - start)
        cells = (rng.integers(0, w, size=(t, n, r)) + np.arange(r) * w
                 + (np.arange(t) * r * w)[:, None, None]).reshape(t * n, r)
        alive = np.ones(t * n, dtype=bool)
        while True:
            degree = np.bincount(cells[alive].ravel(), minlength=t * r * w)
            peel = alive & np.any(degree[cells] == 1, axis=1)
            if not peel.any():
                break
            alive &= ~peel
        stalls += int(np.unique(np.flatnonzero(alive) // n).size)
    return stalls


def stall_section(quick: bool) -> None:
    print_table(
        "**Stall rate at load = capacity** (default sizing). Sketch: fresh keys and hash seed per "
        "trial, the real encode and decode; a stall is an incomplete decode, a wrong count a "
        "decoded key not inserted or a count other than 1 (must be 0). Model: random cells, "
        "vectorised peeling. Upper bounds: 95% Wilson (two-sided).",
        ("capacity", "cells", "analytic bound", "sketch stalls / trials", "sketch 95% upper",
         "wrong counts", "model stalls / trials", "model rate", "model 95% upper"),
    )
    rng = random.Random(SEED + 1)
    model_rng = np.random.default_rng(SEED + 2)
    for capacity, (full, quick_trials) in SKETCH_TRIALS.items():
        trials = quick_trials if quick else full
        results = [run_trial(rng, capacity, capacity, t) for t in range(trials)]
        stalls = sum(not r.complete for r in results)
        params = IbltParams(capacity=capacity, max_key_bytes=MAX_KEY_BYTES)
        bound = failure_bound(capacity, params.subtable_cells, params.repetitions)
        m_full, m_quick = MODEL_TRIALS[capacity]
        m_trials = m_quick if quick else m_full
        m_stalls = model_stalls(model_rng, capacity, params.subtable_cells, params.repetitions,
                                m_trials)
        print_row(capacity, params.num_cells, f"{bound:.2e}", f"{stalls} / {trials}",
                  f"{wilson_upper(stalls, trials):.2e}", sum(r.wrong for r in results),
                  f"{m_stalls} / {m_trials}", f"{m_stalls / m_trials:.2e}",
                  f"{wilson_upper(m_stalls, m_trials):.2e}")


class _Tee:
    """Writes to stdout and to a file."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> None:
        for stream in self.streams:
            stream.write(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; writes no results file")
    args = parser.parse_args()
    out = None if args.quick else open(RESULTS, "w", encoding="utf-8")  # noqa: SIM115
    stdout = sys.stdout
    if out is not None:
        sys.stdout = _Tee(stdout, out)
    try:
        start = time.perf_counter()
        print("# IBLT benchmark" + (" (--quick)" if args.quick else ""))
        print(f"\nCPU: {cpu_model()}; numpy {np.__version__}; Python "
              f"{platform.python_version()}; one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1)")
        speed_section(reps=3 if args.quick else 7)
        bytes_section()
        stall_section(args.quick)
        print(f"\nTotal runtime: {time.perf_counter() - start:.1f} s")
    finally:
        sys.stdout = stdout
        if out is not None:
            out.close()


if __name__ == "__main__":
    main()
