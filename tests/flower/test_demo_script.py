"""``scripts/flower_demo.sh`` (and ``make flower-demo``, which execs it) stops every process it
started when interrupted: Ctrl-C (SIGINT to the foreground process group) or SIGTERM to ``make``,
sent once the first federated round has started (the ClientApp processes are then training).

Each run carries a unique ``GPTFL_DEMO_TAG`` in its environment, which every process the demo
starts inherits, extended by the script (the SuperLink, the SuperNodes, the SuperExec and
ServerApp/ClientApp processes Flower spawns, ``flwr run``, ``tee``); the test finds them by it.
``make`` is run with ``-o <stamp>`` and a ``VENV`` whose ``bin`` links to the running
interpreter's, so it cannot install anything: it only runs the recipe.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NODES = 3
TINY = "pretrain-epochs=1 synthetic-per-label=10 label-capacity=20"
ROUND_START_TIMEOUT = 600.0
EXIT_TIMEOUT = 20.0
"""Seconds the script (or make) may take to exit after the signal; its clean-up gives Flower's
processes 5 s to stop before SIGKILL."""


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports() -> tuple[int, int]:
    """A free SuperLink port (and the two ports after it, Flower's) and NODES free node ports."""
    rng = random.Random()
    for _ in range(200):
        port, node_port = rng.randrange(20000, 30000, 10), rng.randrange(30000, 40000, 10)
        if all(map(_free, [port, port + 1, port + 2, *range(node_port, node_port + NODES)])):
            return port, node_port
    raise RuntimeError("no free ports")


def tagged(tag: str) -> list[int]:
    """Pids of live (non-zombie) processes whose environment holds ``GPTFL_DEMO_TAG=tag`` (make,
    the script) or ``GPTFL_DEMO_TAG=tag/...`` (what the script started: it extends the tag)."""
    exact = f"GPTFL_DEMO_TAG={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if not any(var == exact or var.startswith(exact + b"/")
                       for var in (entry / "environ").read_bytes().split(b"\0")):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _default_sigint() -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored, which a shell
    # cannot trap; a terminal's foreground job starts with the default, as here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    tag = uuid.uuid4().hex
    port, node_port = _ports()
    out = tmp_path / "out"
    env = {**os.environ, "GPTFL_DEMO_TAG": tag, "PORT": str(port), "NODE_PORT": str(node_port),
           "NODES": str(NODES), "ROUNDS": "1", "LOCAL_EPOCHS": "1", "OUT": str(out),
           "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=(tmp_path / "demo.log").open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint)
    return proc, tag, out


def _wait_for_round(proc: subprocess.Popen, out: Path, tmp_path: Path) -> None:
    progress = out / "progress.jsonl"
    deadline = time.monotonic() + ROUND_START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "demo.log").read_text(errors="replace")[-3000:]
        if progress.exists() and any(json.loads(line)["group"].startswith("round1/")
                                     for line in progress.read_text().splitlines()
                                     if line.strip()):
            return
        time.sleep(0.2)
    pytest.fail("the first round did not start in time")


def _interrupt_and_check(proc: subprocess.Popen, tag: str, out: Path, tmp_path: Path,
                         send) -> None:
    _wait_for_round(proc, out, tmp_path)
    assert len(tagged(tag)) >= 2 * NODES + 3  # superlink, nodes, their clientapps, flwr run...
    sent = time.monotonic()
    send(proc)
    try:
        code = proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running {EXIT_TIMEOUT} s after the signal")
    finally:
        left = tagged(tag)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    log = (tmp_path / "demo.log").read_text(errors="replace")
    assert left == [], f"processes left behind: {left}\n{log[-2000:]}"
    assert time.monotonic() - sent < EXIT_TIMEOUT
    assert code != 0, log[-2000:]  # interrupted, not finished
    assert not (out / "metrics.json").exists()
    assert "stopped the demo's processes" in log


def test_ctrl_c_stops_every_process_of_the_script(tmp_path):
    bin_dir = Path(sys.executable).parent
    proc, tag, out = _start(
        ["env", f"PYTHON_BIN={bin_dir}", str(ROOT / "scripts" / "flower_demo.sh"), TINY],
        tmp_path)
    _interrupt_and_check(proc, tag, out, tmp_path,
                         lambda p: os.killpg(p.pid, signal.SIGINT))  # Ctrl-C: the whole group


def _make(tmp_path: Path) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    stamp = venv / ".flower-stamp"
    return [make, "--no-print-directory", "-f", str(ROOT / "Makefile"), "-o", str(stamp),
            "-o", str(venv / ".installed-stamp"), f"VENV={venv}",
            f"DEMO_OUT={tmp_path / 'out'}", f"ARGS={TINY}", "flower-demo"]


def test_make_recipe_cannot_install(tmp_path):
    """The make invocation the tests use runs only the recipe (checked with ``make -n``)."""
    shutil.which("make") or pytest.skip("no make")
    args = _make(tmp_path)
    dry = subprocess.run([*args[:1], "-n", *args[1:]], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "pip" not in dry and "venv" in dry and "exec env" in dry, dry


@pytest.mark.parametrize("how", ["sigterm-to-make", "ctrl-c"])
def test_interrupted_make_flower_demo_leaves_no_process(tmp_path, how):
    proc, tag, out = _start(_make(tmp_path), tmp_path)
    if how == "ctrl-c":
        def send(p):
            os.killpg(p.pid, signal.SIGINT)
    else:
        def send(p):
            os.kill(p.pid, signal.SIGTERM)  # make alone; it forwards SIGTERM to its child
    _interrupt_and_check(proc, tag, out, tmp_path, send)
