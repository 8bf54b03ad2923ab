"""A Flower deployment on one machine: one SuperLink and N SuperNodes on 127.0.0.1, each node
holding one partition, and ``flwr run`` of the app. For tests and benchmarks; the user-facing
equivalent is ``scripts/flower_demo.sh`` (``make flower-demo``).

Every process is started in its own process group and stopped by its pid's group (which takes
the ``flwr-clientapp`` / ``flwr-serverapp`` processes Flower spawns with it), also on failure.
``--insecure``: loopback only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2] / "flower-app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class LocalDeployment:
    """``with LocalDeployment(work, nodes=4) as d: d.run({...})``."""

    def __init__(self, work: Path, nodes: int, *, poll_interval: float = 0.1) -> None:
        self.work, self.nodes = Path(work), nodes
        self.port = free_port()
        self.env = {**os.environ, "FLWR_HOME": str(self.work / "flwr-home"),
                    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(poll_interval),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.superlink: subprocess.Popen | None = None
        self.supernodes: dict[int, subprocess.Popen] = {}

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.work / log, "wb") as out:
            return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.work, start_new_session=True)

    def __enter__(self) -> LocalDeployment:
        self.work.mkdir(parents=True, exist_ok=True)
        home = self.work / "flwr-home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "local-deployment"\n\n[superlink.local-deployment]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        try:
            self.superlink = self._spawn(
                [_tool("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port",
                 str(self.port), "--disable-runtime-dependency-installation"], "superlink.log")
            self._wait_for("superlink.log", "Uvicorn running", self.superlink)
            for i in range(self.nodes):
                self.supernodes[i] = self._spawn(
                    [_tool("flower-supernode"), "--insecure", "--superlink",
                     f"127.0.0.1:{self.port}", "--port", str(free_port()), "--node-config",
                     f"partition-id={i} num-partitions={self.nodes} "
                     f"partition-cache='{self.work / 'partitions'}'"], f"supernode-{i}.log")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for(self, log: str, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (self.work / log).read_text(errors="replace"):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"{log}: exited with {proc.returncode}")
            time.sleep(0.1)
        raise TimeoutError(f"{log}: no {text!r} within {timeout} s")

    def start_run(self, run_config: dict) -> subprocess.Popen:
        """``flwr run`` of the app with ``run_config`` overrides; returns the process."""
        def fmt(v):
            return f"'{v}'" if isinstance(v, str) else str(v).lower() if isinstance(
                v, bool) else repr(v)

        pairs = " ".join(f"{k}={fmt(v)}" for k, v in run_config.items())
        return self._spawn([_tool("flwr"), "run", str(APP_DIR), "local-deployment", "--stream",
                            "--run-config", pairs], "run.log")

    def kill_node(self, partition: int) -> None:
        """SIGKILL a SuperNode and everything it spawned: a crashed machine."""
        _signal_group(self.supernodes[partition], signal.SIGKILL)

    def stop(self) -> None:
        procs = list(self.supernodes.values()) + ([self.superlink] if self.superlink else [])
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)
            proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group this process leads (start_new_session)
    except ProcessLookupError:
        pass
