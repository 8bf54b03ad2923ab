"""The masked-sum protocol at two revisions of this repository, measured side by side.

Answers "did this change make anything slower?" with a ratio measured in one run: the package is
exported at the base revision (``git archive``) into a temporary directory, and the same sessions
run alternately under the base and under the working tree, each in a fresh subprocess, so that
machine noise falls on both sides alike. Reported per configuration: the median over the
repetitions of the mean client seconds (clients in U3, all rounds) and of the server seconds (all
rounds), for each side, and working/base ratios of those medians.

Run: ``.venv/bin/python benches/revision_compare_bench.py --base REV`` (default base: HEAD~1;
``--reps`` repetitions per side, default 5; ``--quick`` for small vectors). Every session's sum is
checked exact on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, n, neighbors or None, vector length, fraction dropping before masked_input)
CONFIGS = (
    ("full n=100 d=100K 10% drop", 100, None, 100_000, 0.1),
    ("full n=200 d=100K 30% drop", 200, None, 100_000, 0.3),
    ("plus n=500 d=100K 10% drop", 500, "auto", 100_000, 0.1),
)
QUICK = (
    ("full n=20 d=10K 10% drop", 20, None, 10_000, 0.1),
    ("plus n=100 d=10K 10% drop", 100, "auto", 10_000, 0.1),
)

CHILD = r"""
import json, os, sys, time
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
import numpy as np
from gptfl_secure.protocols import SecAggConfig, choose_secagg_plus_params, run_masked_sum
n, k, d, drop = json.loads(sys.argv[1])
q = 2**32
if k == "auto":
    k, t = choose_secagg_plus_params(n, 0.1, 0.1)
else:
    t = 2 * n // 3 + 1
cfg = SecAggConfig(n, t, d, q, neighbors=k)
rng = np.random.default_rng(0)
inputs = {c: rng.integers(0, q, d, dtype=np.uint64) for c in range(n)}
dropped = {c: "masked_input" for c in range(int(drop * n))}
result = run_masked_sum(cfg, inputs, dropped, seed=0)
expected = sum(inputs[c] for c in result.included) % q
assert np.array_equal(result.total, expected), "wrong sum"
seconds = result.stats.client_total_seconds()
client = sum(seconds[c] for c in result.included) / len(result.included)
print(json.dumps({"client": client, "server": sum(result.stats.server_seconds.values())}))
"""


def export(rev: str, into: Path) -> Path:
    """The ``gptfl_secure`` package at ``rev``, unpacked under ``into``."""
    archive = into / "base.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), rev, "gptfl_secure"],
                   cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(path: Path, config: tuple) -> dict:
    env = {**os.environ, "PYTHONPATH": str(path)}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config[1:])], env=env,
                         capture_output=True, text=True, check=True, cwd=path)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="HEAD~1")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    print(f"base {args.base} = {rev}; working tree; {args.reps} interleaved repetitions, medians")
    print("| configuration | client base s | client work s | client ratio | server base s "
          "| server work s | server ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        base = export(args.base, Path(tmp))
        for config in QUICK if args.quick else CONFIGS:
            runs: dict[str, list[dict]] = {"base": [], "work": []}
            for i in range(args.reps):
                order = ("base", "work") if i % 2 == 0 else ("work", "base")
                for side in order:
                    runs[side].append(measure(base if side == "base" else ROOT, config))
            med = {side: {key: statistics.median(r[key] for r in rs) for key in ("client",
                                                                                  "server")}
                   for side, rs in runs.items()}
            print(f"| {config[0]} | {med['base']['client']:.4f} | {med['work']['client']:.4f} | "
                  f"{med['work']['client'] / med['base']['client']:.3f} | "
                  f"{med['base']['server']:.3f} | {med['work']['server']:.3f} | "
                  f"{med['work']['server'] / med['base']['server']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
