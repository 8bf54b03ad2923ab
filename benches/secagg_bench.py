"""Costs of the masked-sum protocol on the grid of Bonawitz et al. (CCS 2017, Sec. 7).

Every client and the server run in this one process, single-threaded, one after the other (the
runner's in-process driver); times are the runner's per-party, per-round measurements.

* Full graph (Bonawitz): n in {100, 500}, d = 100K, q = 2^32, threshold t = ceil(2n/3); 0%, 10%
  and 30% of the clients drop between share_keys and masked_input (they sent their shares but
  never their masked input), so the server rebuilds each one's mask key and regenerates its
  pairwise mask with every survivor: the expensive case.
* SecAgg+ (Bell et al. 2020): n in {500, 1000, 2000}, d = 100K, 10% dropout at the same step,
  (k, t) = choose_secagg_plus_params(n, 0.1, 0.1).

Each configuration prints one Markdown row: client seconds (mean and max over the clients in U3,
summed over the 5 rounds), server seconds (the 5 rounds, and the unmasking round alone), upload
bytes per client in U3 (mean, all rounds) and its ratio to a plaintext float32 vector (4d bytes),
and measured time over the "PRG + add limit", with one Ring.add_mask_ of d entries (AES-256-CTR
expansion + in-place add) timed in the same process right before the session (median of 50):

* client limit = (neighbours + 1) x add_mask_ (its pairwise masks and its self-mask); the
  client ratio uses the mean client time;
* server limit = (|U3| + sum over dropped clients of their neighbours in U3) x add_mask_; the
  server ratio uses the server's total over the 5 rounds.

Every session's sum is checked exact (the sum of the U3 inputs mod 2^32) before it is reported.
"cpu / wall" is the process's CPU time over the session's wall time: well below 1 means other
processes took the CPU and the times above are inflated. The header prints a hash of the protocol
sources and the load average, to tell which code and how quiet a machine produced the numbers.

Run: ``.venv/bin/python benches/secagg_bench.py`` (about 8 minutes on 2 AMD EPYC cores; 24 GiB
suffice), ``--quick`` for a tiny grid at d = 10K (under a minute), ``--only full|plus`` for
one half.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import cryptography  # noqa: E402
import numpy as np  # noqa: E402

from gptfl_secure import protocols  # noqa: E402
from gptfl_secure.protocols import (  # noqa: E402
    SecAggConfig,
    choose_secagg_plus_params,
    run_masked_sum,
)
from gptfl_secure.protocols.graph import neighbours, public_seed  # noqa: E402
from gptfl_secure.protocols.ring import Ring  # noqa: E402
from gptfl_secure.protocols.runner import MaskedSumResult, session_id_for  # noqa: E402

MODULUS = 2**32
SEED = 0
DROP_STEP = "masked_input"  # silent from masked_input on: shares sent, masked input never

GOALS = """Goals:
* full graph, n=500, d=100K, 10% dropout: client <= 0.1 s and server <= 3 s (the paper's Java
  prototype: client 0.85 s, server 62 s);
* client and server within 3x of the PRG + add limit;
* SecAgg+: server time growing <= 1.3x per doubling of n."""

COLUMNS = ("n", "graph", "k", "t", "dropout", "client mean s", "client max s", "server s",
           "server unmask s", "upload B/client", "upload / 4d", "add_mask_ ms",
           "client / limit", "server / limit", "session wall s", "cpu / wall")


@dataclass(frozen=True)
class Case:
    n: int
    d: int
    dropout: float
    plus: bool  # SecAgg+'s k-regular graph rather than the complete graph

    def config(self) -> SecAggConfig:
        if self.plus:
            k, t = choose_secagg_plus_params(self.n, 0.1, 0.1)
        else:
            k, t = None, math.ceil(2 * self.n / 3)
        return SecAggConfig(num_clients=self.n, threshold=t, vector_length=self.d,
                            modulus=MODULUS, neighbors=k)


@dataclass(frozen=True)
class Row:
    case: Case
    k: int
    t: int
    client_mean: float
    client_max: float
    server_total: float
    server_unmask: float
    upload_mean: float
    add_mask: float
    client_limit: float
    server_limit: float
    wall: float
    cpu: float

    def cells(self) -> tuple[str, ...]:
        c = self.case
        return (str(c.n), "SecAgg+" if c.plus else "full", str(self.k), str(self.t),
                f"{c.dropout:.0%}", f"{self.client_mean:.3f}", f"{self.client_max:.3f}",
                f"{self.server_total:.3f}", f"{self.server_unmask:.3f}",
                f"{self.upload_mean:,.0f}", f"{self.upload_mean / (4 * c.d):.3f}",
                f"{self.add_mask * 1e3:.3f}", f"{self.client_mean / self.client_limit:.2f}",
                f"{self.server_total / self.server_limit:.2f}", f"{self.wall:.1f}",
                f"{self.cpu / self.wall:.2f}")


def grid(quick: bool, only: str | None) -> list[Case]:
    d = 10_000 if quick else 100_000
    full_ns, plus_ns = ((20, 50), (100, 200)) if quick else ((100, 500), (500, 1000, 2000))
    full = [Case(n, d, rate, plus=False) for n in full_ns for rate in (0.0, 0.1, 0.3)]
    plus = [Case(n, d, 0.1, plus=True) for n in plus_ns]
    return {"full": full, "plus": plus, None: full + plus}[only]


def add_mask_seconds(d: int, reps: int = 50) -> float:
    """Median seconds of one Ring.add_mask_ of ``d`` entries (after one warm-up call)."""
    ring = Ring(MODULUS, d)
    acc, seed = ring.zeros(), os.urandom(32)
    ring.add_mask_(acc, seed)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        ring.add_mask_(acc, seed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_exact(res: MaskedSumResult, inputs: dict[int, np.ndarray],
                dropouts: dict[int, str]) -> None:
    if res.included != frozenset(inputs) - frozenset(dropouts):
        raise RuntimeError("U3 is not the set of clients that did not drop")
    expected = np.zeros_like(next(iter(inputs.values())))
    for cid in res.included:
        expected += inputs[cid]  # at most 2000 * 2^32 < 2^64: no wrap in uint64
    if not np.array_equal(res.total, expected % MODULUS):
        raise RuntimeError("the protocol's sum is not the exact sum of the U3 inputs")


def surviving_neighbours(cfg: SecAggConfig, res: MaskedSumResult, dropped: list[int]) -> int:
    """Sum over dropped clients of their neighbours in U3: the pairwise masks the server
    regenerates. The graph is rebuilt as the server builds it, from the session id and U1
    (every client: none drops before masked_input)."""
    u1 = range(cfg.num_clients)
    graph = neighbours(u1, cfg.neighbors, public_seed(session_id_for(SEED), u1))
    return sum(len(graph[v] & res.included) for v in dropped)


def measure(case: Case) -> Row:
    cfg = case.config()
    rng = np.random.default_rng(SEED)
    inputs = {cid: rng.integers(0, MODULUS, case.d, dtype=np.uint64) for cid in range(case.n)}
    dropped = sorted(int(c) for c in rng.choice(case.n, round(case.dropout * case.n),
                                                replace=False))
    dropouts = dict.fromkeys(dropped, DROP_STEP)
    add_mask = add_mask_seconds(case.d)
    start, cpu_start = time.perf_counter(), time.process_time()
    res = run_masked_sum(cfg, inputs, dropouts, seed=SEED)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    check_exact(res, inputs, dropouts)
    seconds = res.stats.client_total_seconds()
    upload = res.stats.client_total_upload()
    client_s = [seconds[c] for c in res.included]
    k = min(cfg.neighbors or case.n, case.n - 1)  # k >= n - 1 means the complete graph
    masks = len(res.included) + surviving_neighbours(cfg, res, dropped)
    return Row(case, k, cfg.threshold, statistics.fmean(client_s), max(client_s),
               sum(res.stats.server_seconds.values()), res.stats.server_seconds["unmasking"],
               statistics.fmean(upload[c] for c in res.included), add_mask,
               (k + 1) * add_mask, masks * add_mask, wall, cpu)


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def protocol_version() -> str:
    """A sha256 prefix of the protocol's sources at start: the code these numbers measure."""
    h = hashlib.sha256()
    for path in sorted(Path(protocols.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:12]


def print_header(quick: bool) -> None:
    print(f"# secagg_bench{' --quick' if quick else ''}\n")
    print(f"gptfl_secure/protocols sources sha256 {protocol_version()}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"CPU: {cpu_model()}; {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          "run single-threaded")
    print(f"Python {platform.python_version()}, numpy {np.__version__}, "
          f"cryptography {cryptography.__version__}")
    print(f"q = 2^32; full graph: t = ceil(2n/3); SecAgg+: (k, t) = "
          f"choose_secagg_plus_params(n, 0.1, 0.1); dropouts silent from {DROP_STEP}\n")
    print(GOALS + "\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + " --- |" * 2 + " ---: |" * (len(COLUMNS) - 2), flush=True)


def print_summary(rows: list[Row]) -> None:
    for r in rows:
        c = r.case
        if not c.plus and c.n == 500 and c.dropout == 0.1:
            print(f"\nFull graph, n=500, 10% dropout: client mean {r.client_mean:.3f} s "
                  f"(goal <= 0.1), server {r.server_total:.3f} s (goal <= 3)")
    plus = [r for r in rows if r.case.plus]
    for a, b in itertools.pairwise(plus):
        doublings = math.log2(b.case.n / a.case.n)
        total = (b.server_total / a.server_total) ** (1 / doublings)
        unmask = (b.server_unmask / a.server_unmask) ** (1 / doublings)
        print(f"SecAgg+ n={a.case.n} -> {b.case.n}: server time x{total:.2f} per doubling "
              f"(unmasking alone x{unmask:.2f}; goal <= 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny grid at d = 10K, < 60 s")
    parser.add_argument("--only", choices=("full", "plus"), help="only one graph")
    args = parser.parse_args()
    start = time.perf_counter()
    print_header(args.quick)
    rows = []
    for case in grid(args.quick, args.only):
        rows.append(measure(case))
        print("| " + " | ".join(rows[-1].cells()) + " |", flush=True)
        gc.collect()
    print_summary(rows)
    print(f"\nWhole run: {time.perf_counter() - start:.0f} s; "
          f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
