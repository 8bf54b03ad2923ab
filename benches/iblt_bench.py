"""Speed and decode reliability of the IBLT sketch (``gptfl_secure.iblt``), single-threaded.

1. Encode (``IbltSketch.from_keys``) and decode seconds for 10^3, 10^4 and 10^5 distinct keys,
   capacity = number of keys, max_key_bytes = 64; keys ``label-{i}`` and random Unicode labels
   of 5-30 characters. Best and median of 5 repetitions (3 with ``--quick``); every decode is
   checked complete and exact, so only correct decodes are timed.
2. Decode success rate at load = capacity, for capacity 10, 100, 1000 and 10^4, with the real
   sketch: each trial draws fresh keys and a fresh hash seed, encodes and decodes. A success is a
   complete decode that returns exactly the inserted keys, each with count 1. Prints the 95%
   Wilson upper bound on the failure rate and the wrong counts (a decoded key that was never
   inserted, or a count other than 1), which must be 0.
3. Decode success rate against load (keys / capacity from 0.5 to 3) for capacity 100 and 1000:
   complete-rate, mean fraction of the keys recovered, and wrong counts (must be 0).

Trials alternate between structured keys (``{trial}-{i}``) and random Unicode labels.

Run: ``.venv/bin/python benches/iblt_bench.py`` (about 3 minutes on 2 idle cores), ``--quick`` for a
smoke run (under 20 seconds). Output is Markdown.
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
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

from gptfl_secure.iblt import IbltParams, IbltSketch  # noqa: E402

SEED = 0
MAX_KEY_BYTES = 64
WILSON_Z = 1.959964  # two-sided 95%

SPEED_SIZES = (10**3, 10**4, 10**5)
SPEED_GOAL_S = 0.5
# capacity -> trials (full, quick)
AT_CAPACITY_TRIALS = {10: (20000, 500), 100: (10000, 200), 1000: (2000, 50), 10**4: (300, 5)}
LOAD_CAPACITIES = (100, 1000)
LOAD_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
LOAD_TRIALS = (500, 50)  # (full, quick)

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
def time_call(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def time_encode_decode(keys: list[str], reps: int) -> tuple[list[float], list[float], int]:
    """Encode and decode ``keys`` ``reps`` times; returns both timings and the table's cells."""
    params = IbltParams(capacity=len(keys), max_key_bytes=MAX_KEY_BYTES, seed=SEED)
    expected = dict.fromkeys(keys, 1)
    encode_s, decode_s = [], []
    for _ in range(reps):
        t_enc, sketch = time_call(lambda: IbltSketch.from_keys(params, keys))
        t_dec, result = time_call(sketch.decode)
        if not (result.complete and result.counts == expected):
            raise RuntimeError(f"decode of {len(keys)} keys is not complete and exact")
        encode_s.append(t_enc)
        decode_s.append(t_dec)
    return encode_s, decode_s, params.num_cells


def speed_section(reps: int) -> None:
    print_table(
        f"**Encode and decode seconds** (best and median of {reps}, one thread; every decode "
        f"checked complete and exact). Goal: <= {SPEED_GOAL_S} s each at 10^5 keys on one core.",
        ("keys", "key kind", "cells", "encode best s", "encode median s", "decode best s",
         "decode median s"),
    )
    rng = random.Random(SEED)
    for n in SPEED_SIZES:
        kinds = (("label-{i}", [f"label-{i}" for i in range(n)]),
                 ("random label", random_labels(rng, n)))
        for kind, keys in kinds:
            encode_s, decode_s, cells = time_encode_decode(keys, reps)
            print_row(n, kind, cells, f"{min(encode_s):.4f}", f"{statistics.median(encode_s):.4f}",
                      f"{min(decode_s):.4f}", f"{statistics.median(decode_s):.4f}")


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


# ------------------------------------------------------------------------------- 2. at capacity
def at_capacity_section(quick: bool) -> None:
    print_table(
        "**Decode success at load = capacity** (keys = capacity; fresh keys and hash seed per "
        "trial; success = complete and exact). Upper bound: 95% Wilson (two-sided) on the "
        "failure rate. Wrong counts must be 0.",
        ("capacity", "cells", "successes / trials", "success rate", "failure rate 95% upper",
         "wrong counts", "seconds"),
    )
    rng = random.Random(SEED + 1)
    for capacity, (full, quick_trials) in AT_CAPACITY_TRIALS.items():
        trials = quick_trials if quick else full
        start = time.perf_counter()
        results = [run_trial(rng, capacity, capacity, t) for t in range(trials)]
        seconds = time.perf_counter() - start
        successes = sum(r.success(capacity) for r in results)
        cells = IbltParams(capacity=capacity, max_key_bytes=MAX_KEY_BYTES).num_cells
        print_row(capacity, cells, f"{successes} / {trials}", f"{successes / trials:.5f}",
                  f"{wilson_upper(trials - successes, trials):.2e}",
                  sum(r.wrong for r in results), f"{seconds:.1f}")


# ------------------------------------------------------------------------------------- 3. load
def load_section(quick: bool) -> None:
    full, quick_trials = LOAD_TRIALS
    trials = quick_trials if quick else full
    print_table(
        f"**Decode success against load** ({trials} trials per row; keys = load x capacity; "
        "fresh keys and hash seed per trial). Wrong counts must be 0.",
        ("capacity", "load", "keys", "complete rate", "mean fraction recovered", "wrong counts"),
    )
    rng = random.Random(SEED + 2)
    for capacity in LOAD_CAPACITIES:
        for load in LOAD_FACTORS:
            n_keys = round(load * capacity)
            results = [run_trial(rng, capacity, n_keys, t) for t in range(trials)]
            complete = sum(r.complete for r in results) / trials
            recovered = statistics.fmean(r.recovered / n_keys for r in results)
            print_row(capacity, load, n_keys, f"{complete:.3f}", f"{recovered:.4f}",
                      sum(r.wrong for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, under 20 seconds")
    args = parser.parse_args()
    start = time.perf_counter()
    print("# IBLT benchmark" + (" (--quick)" if args.quick else ""))
    print(f"\nCPU: {cpu_model()}; numpy {np.__version__}; Python {platform.python_version()}; "
          "one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1)")
    speed_section(reps=3 if args.quick else 5)
    at_capacity_section(args.quick)
    load_section(args.quick)
    print(f"\nTotal runtime: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
