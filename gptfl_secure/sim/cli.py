"""Command line of ``python -m gptfl_secure.sim``.

With no arguments: the embedded default end to end (scikit-learn's digits over 50 clients with a
Dirichlet(0.1) label skew; label discovery through the masked sum; 30 rounds of FedAvg, each
round's updates summed through the masked sum). Every option is also a key of
``--config run.toml``; a flag given on the command line wins over the file. Bad values fail
before any work, naming the flag and the allowed range.
"""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from .. import console
from ..learning.folder import folder_kind, resize_notice
from ..pipeline.config import ConfigError, SimConfig, flag, load_toml
from ..pipeline.eta import plural, rough_estimate
from ..pipeline.outputs import write_outputs, written_since
from ..pipeline.setup import check_buildable, prepare_data
from ..pipeline.skips import skip_warning
from ..pipeline.state import CHECKPOINT, load_checkpoint, save_checkpoint
from .compare import run_comparison, write_comparison
from .run import run_rounds, start


def program() -> str:
    """``gptfl-sim`` (the console script) or ``python -m gptfl_secure.sim``, as started: the
    usage line and the printed ``--resume`` command say the one used."""
    return console.program("gptfl-sim", "gptfl_secure.sim")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=program(),
        description="GPT-FL on secure aggregation: label discovery and federated rounds, every "
                    "sum through the masked-sum protocol.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", type=Path, help="TOML file with any of the options below")
    for f in fields(SimConfig):
        meta = f.metadata
        kind = meta["kind"]
        default = "auto" if f.default is None else f.default
        if kind is bool:
            p.add_argument(flag(f.name), dest=f.name, action="store_true", help=meta["help"])
            continue
        # a help text that already explains its default ("default: ...") is not given another
        stated = "default:" in meta["help"]
        p.add_argument(flag(f.name), dest=f.name, type=kind, choices=meta["choices"],
                       metavar=None if meta["choices"] else f.name.upper(),
                       help=meta["help"] if stated else f"{meta['help']} (default: {default})")
    p.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the killed run in DIR with its stored configuration")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<timestamp>/)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (the step lines still print)")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    values = dict(load_toml(args.config)) if "config" in args else {}
    names = {f.name for f in fields(SimConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return SimConfig.from_mapping(values, source=f"--config {args.config}"
                                  if "config" in args else "flags")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM during a run; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


@contextmanager
def _signals(handler):
    """SIGINT and SIGTERM go to ``handler`` for the duration (the previous handlers come back
    after); off the main thread, where signals cannot be handled, nothing changes."""
    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    """Run the sim. Returns 0; or, interrupted by Ctrl-C (SIGINT) or SIGTERM, 128 + the
    signal's number (130, 143) after writing the outputs of the completed rounds (from the last
    checkpoint) and printing the ``--resume`` command that continues the run."""
    parser = build_parser()
    args = parser.parse_args(argv)
    since = time.time()
    place: list[Path] = []  # the output folder, once known
    with _signals(_raise_interrupted):
        try:
            return _run(parser, args, since, place)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
    # a checkpoint is this run's when it resumed from it or wrote it
    resumable = [out for out in place if (out / CHECKPOINT).is_file() and (
        "resume" in args or (out / CHECKPOINT).stat().st_mtime >= math.floor(since))]
    return _interrupted(resumable[0] if resumable else None, signum, since)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, since: float,
         place: list[Path]) -> int:
    progress = getattr(args, "progress", True)
    try:
        if "resume" in args:
            given = sorted(k for k in vars(args) if k not in ("resume", "progress"))
            if given:
                parser.error(f"--resume continues a run with its stored configuration; drop "
                             f"{', '.join(flag(k) for k in given)}")
            out = args.resume
            state = load_checkpoint(out)
            config = state.config
            setup = prepare_data(config)
        else:
            config = config_from_args(args)
            setup = prepare_data(config)
            out = getattr(args, "out", None) or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
            state = None
        check_buildable(config, setup)
    except ConfigError as exc:
        parser.error(str(exc))

    place.append(out)
    out.mkdir(parents=True, exist_ok=True)
    _before_work(config, setup, fresh=state is None)
    if state is None:
        state = start(config, setup, print, out=out, progress=progress)
        save_checkpoint(out, state)
    else:
        print(f"resuming {out} at round {state.next_round} of {config.rounds}")
    if config.compare and state.next_round == 1:
        print("[+] comparison arms (--compare): every arm and client learning rate on the grid")
        comparison = run_comparison(config, setup, state, state.global_vector, out, print,
                                    progress=progress)
        write_comparison(out, comparison)
        print((out / "comparison.md").read_text())
    state = run_rounds(state, setup, out, print, progress=progress)
    metrics = write_outputs(out, state)
    skipped = sum(r["skipped"] for r in state.rounds)
    print(f"final test accuracy: {metrics['final_test_accuracy']:.4f} after "
          f"{plural(config.rounds, 'round')} ({skipped} skipped below threshold)")
    print(f"wrote {out}/: {', '.join(written_since(out, since))}")
    return 0


def _before_work(config: SimConfig, setup, fresh: bool) -> None:
    """Notices before any work: resized images, likely skipped rounds, a rough length."""
    if config.dataset != "digits" and folder_kind(config.dataset) == "image":
        notice = resize_notice(config.dataset, config.image_size)
        if notice:
            print(notice)
    warning = skip_warning(config.secagg, config.cohort, config.dropout, config.rounds)
    if warning:
        print(warning)
    if fresh:
        print(rough_estimate(config, setup))


def _interrupted(out: Path | None, signum: int, since: float) -> int:
    """Ctrl-C or SIGTERM: write the outputs of the rounds the last checkpoint in ``out`` holds
    (None: the run has none yet) and print the command that resumes the run. Further signals are
    ignored while this runs."""
    with _signals(signal.SIG_IGN):
        name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
        print(file=sys.stderr)
        if out is None:
            print(f"interrupted by {name} before the run's first checkpoint (written after "
                  "label discovery): nothing to resume; start the run again")
            return 128 + signum
        state = load_checkpoint(out)
        write_outputs(out, state)
        done = len(state.rounds)
        print(f"interrupted by {name} after {plural(done, 'round')} of {state.config.rounds}; "
              f"wrote {out}/: {', '.join(written_since(out, since))}")
        print(f"resume with: {program()} --resume {shlex.quote(str(out))}")
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
