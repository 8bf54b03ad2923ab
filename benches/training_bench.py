"""Local-training throughput of the sim against a plain torch loop.

For each model (small_cnn on the embedded 8x8 digits, convnet on a folder of 28x28 digit PNGs,
resnet18 on the same folder loaded at 32x32), one round's local training of a cohort through the
sim's code path (``RoundContext.train_clients``: scratch model, ``train_client``, the update as a
CPU vector; in one process for 1 worker, in the run's :class:`~gptfl_secure.sim.workers.
ClientPool` for more) against the floor: a plain torch loop that trains the same model with the
same SGD settings and batch size on the same number of examples in one process. The figure is
examples per second (local epochs x the cohort's examples / wall seconds). The round's pool is
created before the clock starts, as a run creates it once.

There is no real 10,000-image folder in the repository: :func:`make_digit_folder` builds one from
scikit-learn's digits (upsampled to 28x28, shifted, with pixel noise), 10 label folders of PNGs.

    python benches/training_bench.py            # writes benches/results/training_bench.txt
    python benches/training_bench.py --quick    # a short check that it runs (writes the same
                                                # file, marked quick)

Timings on a shared machine are noisy; regenerate on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptfl_secure.learning.local import model_to_vector  # noqa: E402
from gptfl_secure.pipeline.codecs import CodecRound  # noqa: E402
from gptfl_secure.pipeline.config import RunConfig  # noqa: E402
from gptfl_secure.pipeline.rounds import plan_round  # noqa: E402
from gptfl_secure.pipeline.setup import (  # noqa: E402
    limit_threads,
    local_training,
    new_model,
    prepare_data,
    run_device,
    usable_cores,
)
from gptfl_secure.sim.rounds import RoundContext  # noqa: E402
from gptfl_secure.sim.workers import ClientPool  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "training_bench.txt"


def make_digit_folder(root: Path, total: int = 10_000, side: int = 28, seed: int = 0) -> Path:
    """``root/<digit>/<i>.png``: ``total`` grey images of side ``side`` made from scikit-learn's
    8x8 digits (nearest upsampling, a random shift of up to 2 pixels, Gaussian pixel noise)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    scale = side // 8
    for label in range(10):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
    picks = rng.integers(0, len(digits.target), size=total)
    for i, k in enumerate(picks):
        big = np.kron(digits.images[k] / 16.0, np.ones((scale, scale)))
        canvas = np.zeros((side, side))
        off = (side - big.shape[0]) // 2
        dy, dx = rng.integers(-2, 3, size=2)
        canvas[off + dy:off + dy + big.shape[0], off + dx:off + dx + big.shape[1]] = big
        canvas = np.clip(canvas + rng.normal(0, 0.08, canvas.shape), 0, 1)
        Image.fromarray((canvas * 255).astype(np.uint8), mode="L").save(
            root / str(digits.target[k]) / f"{i}.png")
    return root


def plain_loop(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, batch: int,
               config: RunConfig, device: torch.device) -> float:
    """Seconds for a plain torch loop over (x, y): the floor the sim is measured against."""
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y), device=device)
        for s in range(0, len(y), batch):
            idx = order[s:s + batch]
            if len(idx) < 2:
                continue
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def sim_round(config: RunConfig, setup, workers: int, device: torch.device) -> tuple[float, int]:
    """(seconds, examples) of round 1's local training of the whole cohort through the sim."""
    model = new_model(config, setup.train).to(device)
    local = local_training(config)
    pool = (ClientPool(setup.parts, model, local, workers, device=device,
                       threads=config.threads) if workers > 1 else None)
    ctx = RoundContext(train_parts=setup.parts, test=setup.test, global_model=model,
                       scratch_model=model, codec=None, local=local, aggregate=None,
                       cohort=config.cohort, dropout=0.0, seed=config.seed, pool=pool)
    vector = model_to_vector(model)
    plan = plan_round(1, clients=config.clients, cohort=config.cohort, seed=config.seed)
    clients = [CodecRound(config.seed, 1, c) for c in plan.sampled]
    try:
        if pool is not None:  # the workers' first use of torch, outside the clock
            pool.train(vector, clients[:workers])
        start = time.perf_counter()
        ctx.train_clients(vector, clients)
        seconds = time.perf_counter() - start
    finally:
        if pool is not None:
            pool.close()
    examples = config.local_epochs * sum(len(setup.parts[c]) for c in plan.sampled)
    return seconds, examples


def bench(name: str, config: RunConfig, all_workers: int) -> list[dict]:
    device = run_device(config)
    setup = prepare_data(config)
    rows = []
    plan = plan_round(1, clients=config.clients, cohort=config.cohort, seed=config.seed)
    x = np.concatenate([setup.parts[c].x for c in plan.sampled])
    y = np.concatenate([setup.parts[c].y for c in plan.sampled])
    floor = plain_loop(new_model(config, setup.train).to(device), x, y, config.local_epochs,
                       config.batch_size, config, device)
    floor_rate = config.local_epochs * len(y) / floor
    for workers in sorted({1, all_workers}):
        seconds, examples = sim_round(config, setup, workers, device)
        rows.append({"model": name, "device": str(device), "workers": workers,
                     "examples": examples, "sim_s": seconds, "sim_eps": examples / seconds,
                     "plain_eps": floor_rate, "ratio": examples / seconds / floor_rate})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: checks that it runs")
    p.add_argument("--folder", type=Path, help="an existing 28x28 digit folder (else built)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    limit_threads(1)
    all_workers = usable_cores()
    total = 600 if args.quick else 10_000
    epochs = 1 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or make_digit_folder(Path(tmp) / "digits28", total)
        common = dict(cohort=10, local_epochs=epochs, init="random", device="auto")
        clients = 10 if args.quick else 50
        cases = [("small_cnn (digits 8x8)", RunConfig(clients=clients, **common)),
                 ("convnet (28x28 folder)", RunConfig(dataset=str(folder), image_size=28,
                                                      clients=clients, **common)),
                 ("resnet18 (32x32 folder)", RunConfig(dataset=str(folder), image_size=32,
                                                       model="resnet18", clients=clients,
                                                       **{**common, "local_epochs": 1}))]
        rows = [row for name, config in cases for row in bench(name, config, all_workers)]
    lines = ["| model | device | workers | examples | sim s | sim ex/s | plain loop ex/s | "
             "sim / plain |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['device']} | {r['workers']} | {r['examples']} | "
                     f"{r['sim_s']:.2f} | {r['sim_eps']:.0f} | {r['plain_eps']:.0f} | "
                     f"{r['ratio']:.2f} |")
    by = {(r["model"], r["workers"]): r["sim_s"] for r in rows}
    for name, _ in cases:
        if all_workers > 1 and (name, all_workers) in by:
            lines.append(f"\n{name}: round with {all_workers} workers takes "
                         f"{by[(name, all_workers)] / by[(name, 1)]:.2f}x the time of 1 worker")
    text = (f"training bench ({'quick' if args.quick else 'full'}), {all_workers} usable cores, "
            f"torch {torch.__version__}, pid {os.getpid()}\n\n" + "\n".join(lines) + "\n")
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
