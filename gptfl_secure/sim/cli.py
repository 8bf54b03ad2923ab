"""Command line of ``python -m gptfl_secure.sim``.

This stage runs label-union discovery (GPT-FL step 1) on the embedded default: scikit-learn's
digits over ``--clients`` clients with a Dirichlet(``--alpha``) label skew, each client's IBLT
sketch summed through the masked-sum protocol. The federated rounds and the synthetic stage
join in later stages (see README).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..iblt import IbltParams
from ..learning.data import load_digits_split
from ..learning.partition import dirichlet_partition
from .aggregation import SECAGG_MODES, make_aggregator
from .label_discovery import discover_labels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gptfl_secure.sim",
        description="GPT-FL on secure aggregation: label-union discovery on the embedded default.",
    )
    p.add_argument("--dataset", default="digits", choices=["digits"], help="data set (digits)")
    p.add_argument("--clients", type=int, default=50, help="number of clients (>= 1)")
    p.add_argument("--alpha", type=float, default=0.1, help="Dirichlet label skew (> 0)")
    p.add_argument("--min-client-size", type=int, default=5, help="examples per client (>= 1)")
    p.add_argument("--label-capacity", type=int, default=50, help="IBLT capacity (>= 1)")
    p.add_argument("--secagg", default="full", choices=SECAGG_MODES,
                   help="masked sum over the complete graph (full), SecAgg+ (plus), or a plain "
                        "sum that shows the server every vector (off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the partition and the IBLT")
    p.add_argument("--out", type=Path, default=None, help="output folder (runs/<timestamp>/)")
    return p


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fail before any work, naming the value and the allowed range."""
    checks = [
        (args.clients >= 1, f"--clients {args.clients}: must be >= 1"),
        (args.alpha > 0, f"--alpha {args.alpha}: must be > 0"),
        (args.min_client_size >= 1, f"--min-client-size {args.min_client_size}: must be >= 1"),
        (args.label_capacity >= 1, f"--label-capacity {args.label_capacity}: must be >= 1"),
        (0 <= args.seed < 2**32, f"--seed {args.seed}: must be in [0, 2^32)"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(args, parser)
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")

    train, _test = load_digits_split(seed=args.seed)
    try:
        parts = dirichlet_partition(
            train.y, args.clients, args.alpha, min_size=args.min_client_size, seed=args.seed
        )
    except ValueError as exc:
        parser.error(str(exc))
    client_labels = {
        cid: {train.label_names[int(y)] for y in np.unique(train.y[idx])}
        for cid, idx in enumerate(parts)
    }
    print(f"[1/1] label discovery: {args.clients} clients, Dirichlet({args.alpha}) label skew, "
          f"sketches summed with secagg={args.secagg}")
    params = IbltParams(capacity=args.label_capacity, seed=args.seed)
    found = discover_labels(client_labels, params, make_aggregator(args.secagg))
    print(f"participants: {found.participants}")
    print(f"labels (complete={found.complete}): {json.dumps(found.counts)}")

    out.mkdir(parents=True, exist_ok=True)
    metrics = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "label_discovery": found.to_json()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
