"""How long ``python -m gptfl_secure.sim --compare --seeds K`` takes, and what it measures.

Runs the command on the embedded default as a subprocess (fresh ``--cache-dir``, so that the
synthetic sets are generated too), times it (wall clock, and the CPU seconds of the run and of
every worker process it spawned), and writes ``benches/results/compare_seeds_bench.txt``: the
command, the machine's load, the times, and the run's ``comparison.md`` (the README's
comparison table and goals). Goal: ``--seeds 5`` under 15 minutes on 2 cores.

Times are wall-clock seconds on a machine other processes may share: the header prints the load
average, and CPU over wall well below the number of seed workers means the CPU was taken by
others. Nothing here asserts a time.

Run: ``.venv/bin/python benches/compare_seeds_bench.py`` (``--seeds 5``, about 7 minutes on 2
quiet cores); ``--quick`` plays 2 seeds of 3 rounds (under a minute). Extra arguments after
``--`` go to the sim (``-- --seed-workers 1``).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "results" / "compare_seeds_bench.txt"
QUICK = ["--rounds", "3", "--synthetic-per-label", "30", "--pretrain-epochs", "2"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 seeds of 3 rounds")
    parser.add_argument("--out", type=Path, help="where the run writes (default: a temp dir)")
    parser.add_argument("sim_args", nargs="*", help="more sim arguments, after --")
    args = parser.parse_args()
    seeds = 2 if args.quick else args.seeds
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "run"
        command = [sys.executable, "-m", "gptfl_secure.sim", "--compare", "--seeds", str(seeds),
                   "--no-progress", "--out", str(out), "--cache-dir", str(Path(tmp) / "cache"),
                   *(QUICK if args.quick else []), *args.sim_args]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        load_before = os.getloadavg()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        table = (out / "comparison.md").read_text()
    shown = " ".join(a if not a.startswith("/") else "..." for a in command[1:])
    report = "\n".join([
        f"# compare_seeds_bench: {time.strftime('%Y-%m-%d %H:%M:%S')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average before {load_before[0]:.2f}, after "
        f"{os.getloadavg()[0]:.2f}",
        f"command: python {shown}",
        f"wall {wall:.0f} s ({wall / 60:.1f} min), CPU {cpu:.0f} s (run and its workers), "
        f"CPU/wall {cpu / wall:.2f}; goal for --seeds 5: under 15 min on 2 cores",
        "", table])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    print(report)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
