"""The gptfl-secure app against Flower's own SecAgg+, side by side on Flower's deployment engine.

Both run on loopback with one SuperLink and ``--nodes`` SuperNodes (each node holds partition
``partition-id``), started afresh for every run, with the same task: the small CNN on the
embedded digits, the same Dirichlet partitions (same seed), the same local training (the
gptfl-secure ``train_locally``; ``--local-epochs``, batch 8, lr 0.03, momentum 0.9), the same
number of rounds, every node in every round, no dropouts:

* ``project``: ``flwr run flower-app`` (the gptfl-secure ServerApp/ClientApp, masked sums by the
  project's protocol, ``secagg=full``; label discovery and a short synthetic pretraining before
  round 1, outside the timed rounds);
* ``flower``: ``flwr run benches/flower_peer`` (Flower's ``DefaultWorkflow`` +
  ``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on the clients, every node sharing
  with every other and threshold floor(2n/3) + 1, as ``secagg=full``).

Runs alternate (project, flower, project, flower, ...). Reported, as medians over the runs:

* steady round: seconds between the streamed ``round R: accuracy`` lines of rounds R-1 and R,
  for R >= 2 (both ServerApps print that line when a round is done; the bench timestamps it as it
  arrives through ``flwr run --stream``);
* exchanges per round: server-to-nodes round trips in a round. Project: ``exchanges`` of the
  round in metrics.json when the app reports it, else the ``flower.json`` exchanges whose group
  starts with ``round<R>/``. Flower: ``Grid.send_and_receive`` calls between two rounds' ends;
* upload bytes per client per round: project: ``upload_bytes_per_client`` of metrics.json (the
  protocol messages); Flower: the bytes values and array data of each node's replies.

Only the apps' outputs are read (metrics.json / flower.json / peer.json and the streamed log), so
the bench works with any version of the project's app that keeps those.

Run: ``python benches/flower_peer_bench.py [--nodes 5 --rounds 3 --repeats 3 --local-epochs 5]``
(``--quick``: 2 rounds, 1 repeat, 1 local epoch). Writes ``benches/results/flower_peer_bench.txt``
and prints the README table. Ports: ``--port`` (SuperLink) and ``--node-port`` (SuperNodes use
``--nodes`` ports from there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = {"project": ROOT / "flower-app", "flower": ROOT / "benches" / "flower_peer"}
ROUND_DONE = re.compile(r"round (\d+): accuracy")
TAG = "GPTFL_BENCH_TAG"


class Deployment:
    """A SuperLink and ``nodes`` SuperNodes on 127.0.0.1, each process in its own session, all
    carrying a unique ``GPTFL_BENCH_TAG`` so that :meth:`stop` also finds the processes Flower
    starts in sessions of their own (SuperExec, ServerApp)."""

    def __init__(self, work: Path, nodes: int, port: int, node_port: int) -> None:
        self.work, self.nodes, self.port, self.node_port = work, nodes, port, node_port
        self.tag = uuid.uuid4().hex
        bin_dir = Path(sys.executable).parent
        self.env = {**os.environ, "FLWR_HOME": str(work / "flwr-home"), TAG: self.tag,
                    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1", "PYTHONPATH": str(ROOT),
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], log: str, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=self.env, cwd=self.work, start_new_session=True,
                                stdin=subprocess.DEVNULL, **({"stdout": (self.work / log).open(
                                    "wb"), "stderr": subprocess.STDOUT} | kw))
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Deployment:
        home = self.work / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        try:
            link = self.spawn(["flower-superlink", "--insecure", "--host", "127.0.0.1",
                               "--port", str(self.port),
                               "--disable-runtime-dependency-installation"], "superlink.log")
            deadline = time.monotonic() + 120
            while "Uvicorn running" not in (self.work / "superlink.log").read_text(
                    errors="replace"):
                if link.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the SuperLink did not start; see {self.work}")
                time.sleep(0.1)
            for i in range(self.nodes):
                self.spawn(["flower-supernode", "--insecure", "--superlink",
                            f"127.0.0.1:{self.port}", "--port", str(self.node_port + i),
                            "--node-config", f"partition-id={i} num-partitions={self.nodes}"],
                           f"supernode-{i}.log")
        except BaseException:
            self.stop()
            raise
        return self

    def tagged(self) -> list[int]:
        needle = f"{TAG}={self.tag}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                if (entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(
                        b"\0") and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                        != "Z"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.procs:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            for pid in self.tagged():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while self.tagged() and time.monotonic() < deadline:
                time.sleep(0.2)
        for proc in self.procs:
            proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_config_arg(pairs: dict) -> str:
    return " ".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={v}"
                    for k, v in pairs.items())


def run_once(arm: str, index: int, args: argparse.Namespace, work: Path) -> dict:
    """One ``flwr run`` of ``arm`` on a fresh deployment; its per-round figures."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    task = {"clients": args.nodes, "rounds": args.rounds, "local-epochs": args.local_epochs,
            "seed": args.seed, "out-dir": str(out)}
    if arm == "project":
        task |= {"cohort": args.nodes, "dropout": 0.0, "pretrain-epochs": 1,
                 "synthetic-per-label": 20, "step-timeout": 300.0, "train-timeout": 600.0}
    else:
        task |= {"timeout": 600.0}
    with Deployment(work, args.nodes, args.port, args.node_port) as deployment:
        start = time.time()
        extra = args.project_config if arm == "project" else args.flower_config
        run = deployment.spawn(["flwr", "run", str(APPS[arm]), "bench", "--stream",
                                "--run-config", run_config_arg(task),
                                *(["--run-config", extra] if extra else [])], "run.log",
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        done: dict[int, float] = {}
        log = (work / "run.log").open("w")

        def read() -> None:
            for raw in run.stdout:
                line = raw.decode(errors="replace")
                log.write(line)
                log.flush()
                match = ROUND_DONE.search(line)
                if match:
                    done.setdefault(int(match.group(1)), time.time())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            code = run.wait(args.timeout)
        except subprocess.TimeoutExpired:
            code = None
        reader.join(5)
        wall = time.time() - start
    if code != 0 or len(done) < args.rounds:
        raise RuntimeError(f"{arm} run {index}: exit {code}, rounds whose end line "
                           f"({ROUND_DONE.pattern!r}) was streamed: {sorted(done)}; see "
                           f"{work / 'run.log'}")
    rounds = (project_rounds if arm == "project" else flower_rounds)(out, args.rounds)
    for r, row in rounds.items():
        row["seconds"] = done[r] - done[r - 1] if r - 1 in done else None
    return {"arm": arm, "run": index, "wall_seconds": wall, "rounds": rounds}


def project_rounds(out: Path, rounds: int) -> dict[int, dict]:
    metrics = json.loads((out / "metrics.json").read_text())
    groups = []
    if (out / "flower.json").exists():
        groups = [e["group"] for e in json.loads((out / "flower.json").read_text())["exchanges"]]
    rows = {}
    for rec in metrics["rounds"]:
        r = int(rec["round"])
        exchanges = rec.get("exchanges")
        if exchanges is None:
            exchanges = sum(g.startswith(f"round{r}/") for g in groups)
        elif isinstance(exchanges, list):  # the round's exchanges themselves
            exchanges = len(exchanges)
        rows[r] = {"exchanges": exchanges, "upload_bytes": rec["upload_bytes_per_client"]}
    assert sorted(rows) == list(range(1, rounds + 1)), f"rounds in metrics.json: {sorted(rows)}"
    return rows


def flower_rounds(out: Path, rounds: int) -> dict[int, dict]:
    peer = json.loads((out / "peer.json").read_text())
    rows = {int(rec["round"]): {"exchanges": rec["exchanges"],
                                "upload_bytes": rec["upload_bytes_per_client"]}
            for rec in peer["rounds"]}
    assert sorted(rows) == list(range(1, rounds + 1)), f"rounds in peer.json: {sorted(rows)}"
    return rows


def summary(runs: list[dict]) -> dict[str, dict]:
    """Medians per arm over every steady round (R >= 2) of every run."""
    out = {}
    for arm in APPS:
        steady = [row for run in runs if run["arm"] == arm
                  for r, row in run["rounds"].items() if r >= 2]
        out[arm] = {
            "runs": sum(run["arm"] == arm for run in runs),
            "steady_rounds": len(steady),
            "round_seconds": statistics.median(row["seconds"] for row in steady),
            "exchanges": statistics.median(row["exchanges"] for row in steady),
            "upload_bytes": statistics.median(row["upload_bytes"] for row in steady),
            "wall_seconds": statistics.median(run["wall_seconds"] for run in runs
                                              if run["arm"] == arm)}
    return out


def table(stats: dict[str, dict], args: argparse.Namespace) -> str:
    p, f = stats["project"], stats["flower"]
    lines = [
        f"{args.nodes} SuperNodes on loopback, small CNN on digits, {args.rounds} rounds, "
        f"{args.local_epochs} local epoch(s), {p['runs']} + {f['runs']} interleaved runs; "
        "medians over steady rounds (round >= 2)",
        "",
        "| | gptfl-secure app | Flower SecAggPlusWorkflow | ratio |",
        "|---|---:|---:|---:|",
        f"| steady round (s) | {p['round_seconds']:.1f} | {f['round_seconds']:.1f} | "
        f"{p['round_seconds'] / f['round_seconds']:.2f}x |",
        f"| exchanges per round | {p['exchanges']:g} | {f['exchanges']:g} | |",
        f"| upload per client per round (bytes) | {p['upload_bytes']:,.0f} | "
        f"{f['upload_bytes']:,.0f} | {p['upload_bytes'] / f['upload_bytes']:.2f}x |",
        f"| whole run incl. start-up (s) | {p['wall_seconds']:.1f} | {f['wall_seconds']:.1f} | |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs per app")
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds, 1 repeat, 1 local epoch (checks the bench works)")
    parser.add_argument("--port", type=int, default=9392, help="SuperLink port")
    parser.add_argument("--node-port", type=int, default=9400, help="first SuperNode port")
    parser.add_argument("--project-config", default="",
                        help="more run-config pairs for the project's app, e.g. 'secagg=plus'")
    parser.add_argument("--flower-config", default="",
                        help="more run-config pairs for the Flower app, e.g. 'num-shares=3'")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the runs' logs and outputs go (default: a new temp dir)")
    parser.add_argument("--results", type=Path,
                        default=ROOT / "benches" / "results" / "flower_peer_bench.txt")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.local_epochs = 2, 1, 1
    if args.rounds < 2 or args.repeats < 1 or args.nodes < 3:
        parser.error("need --rounds >= 2 (a steady round), --repeats >= 1, --nodes >= 3")
    if args.work is None:
        import tempfile

        args.work = Path(tempfile.mkdtemp(prefix="flower-peer-bench-"))
    runs = []
    for i in range(args.repeats):
        for arm in APPS:
            t = time.time()
            run = run_once(arm, i, args, args.work / f"{arm}-{i}")
            runs.append(run)
            per = {r: (None if row["seconds"] is None else round(row["seconds"], 1),
                       row["exchanges"]) for r, row in run["rounds"].items()}
            print(f"{arm} run {i}: {time.time() - t:.0f} s; round: (seconds, exchanges) {per}",
                  flush=True)
    text = table(summary(runs), args)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        f"# python benches/flower_peer_bench.py {' '.join(argv or sys.argv[1:])}\n"
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs\n\n"
        f"{text}\n\nper run:\n{json.dumps(runs, indent=1)}\n")
    print(text)
    print(f"wrote {args.results} (logs in {args.work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
