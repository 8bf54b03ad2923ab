"""Command line of ``python -m gptfl_secure.sim``.

With no arguments: the embedded default end to end (scikit-learn's digits over 50 clients with a
Dirichlet(0.1) label skew; label discovery through the masked sum; 30 rounds of FedAvg, each
round's updates summed through the masked sum). Every option is also a key of
``--config run.toml``; a flag given on the command line wins over the file. Bad values fail
before any work, naming the flag and the allowed range.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from ..pipeline.config import ConfigError, SimConfig, flag, load_toml
from ..pipeline.outputs import write_outputs
from ..pipeline.setup import check_buildable, prepare_data
from ..pipeline.state import load_checkpoint, save_checkpoint
from .compare import run_comparison, write_comparison
from .run import run_rounds, start


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gptfl_secure.sim",
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
        p.add_argument(flag(f.name), dest=f.name, type=kind, choices=meta["choices"],
                       metavar=None if meta["choices"] else f.name.upper(),
                       help=f"{meta['help']} (default: {default})")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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

    out.mkdir(parents=True, exist_ok=True)
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
    print(f"final test accuracy: {metrics['final_test_accuracy']:.4f} after {config.rounds} "
          f"rounds ({skipped} skipped below threshold)")
    print(f"wrote {out / 'metrics.json'}, metrics.csv, accuracy.png, gradient_diversity.png, "
          "transcript_summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
