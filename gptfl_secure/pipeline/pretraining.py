"""GPT-FL step 2: prompts from the discovered labels → generator → synthetic set → central
pretraining of the initial global model, and the run state the rounds start from."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ..learning.data import Dataset
from ..learning.local import evaluate, model_to_vector
from ..learning.pretrain import PretrainConfig, pretrain
from ..synth.backends import make_audio_generator, make_image_generator
from ..synth.base import Generator
from ..synth.cache import SyntheticCache
from ..synth.prompts import make_prompts
from ..synth.synthetic_set import build_synthetic_set
from . import outputs
from .config import RunConfig
from .discovery import LabelDiscovery
from .setup import Setup, new_model, new_optimizer, run_device
from .state import RunState

PROMPTS_PER_LABEL = 20
Log = Callable[[str], None]


def synthetic_set(config: RunConfig, setup: Setup, labels, log: Log,
                  progress: bool = False) -> Dataset:
    """Prompts from the discovered ``labels`` → generator → cached synthetic set, with the
    task's classes (the server's test split) as the label order."""
    names = setup.test.label_names
    unknown = sorted(set(labels) - set(names))
    if unknown:
        log(f"      discovered labels that are not classes of the task, ignored: {unknown}")
    missing = [n for n in names if n not in labels]
    if missing:
        log(f"      classes no client holds get no synthetic data: {missing}")
    wanted = [n for n in names if n in labels]
    generator = make_task_generator(config, setup)
    prompts = make_prompts(wanted, min(config.synthetic_per_label, PROMPTS_PER_LABEL),
                           prompt_model=config.prompt_model, seed=config.seed)
    cache = SyntheticCache(config.effective_cache_dir)
    data = build_synthetic_set(generator, prompts, config.synthetic_per_label, names,
                               config.seed, cache, setup.train.x.shape[1:], progress=progress,
                               log=log)
    log(f"      {len(data)} synthetic examples from {generator.name} ({cache.hits} labels from "
        f"the cache, {cache.misses} generated)")
    return data


def make_task_generator(config: RunConfig, setup: Setup) -> Generator:
    """The generator for the task: images of the task's size, or log-mel features."""
    if setup.kind == "audio":
        return make_audio_generator(config.generator, frames=setup.train.x.shape[-1])
    return make_image_generator(config.generator, image_size=setup.train.x.shape[-1],
                                channels=setup.train.x.shape[1])


def pretrain_on_synthetic(config: RunConfig, setup: Setup, labels, log: Log,
                          out: Path | None = None, progress: bool = False):
    """Generate, train centrally, report accuracy on the real test split."""
    data = synthetic_set(config, setup, labels, log, progress)
    if out is not None:
        outputs.plot_samples(out / "synthetic_samples.png", data)
    model = new_model(config, setup.train).to(run_device(config))
    with epoch_progress(config.pretrain_epochs, log, progress) as on_epoch:
        pretrain(model, data, PretrainConfig(config.pretrain_epochs, config.pretrain_lr,
                                             config.pretrain_weight_decay), seed=config.seed,
                 on_epoch=on_epoch)
    accuracy = evaluate(model, setup.test)
    log(f"      pretrained {config.pretrain_epochs} epochs on the synthetic set: test accuracy "
        f"{accuracy:.4f}")
    return model, {"synthetic_examples": len(data), "test_accuracy": accuracy,
                   "generator": config.generator}


@contextmanager
def epoch_progress(epochs: int, log: Log, progress: bool):
    """The pretraining's ``on_epoch`` hook: a bar of epochs with the loss and accuracy with
    ``progress``, else one line per epoch."""
    from tqdm import tqdm

    bar = tqdm(total=epochs, desc="      pretraining", unit="epoch", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)

    def on_epoch(epoch: int, loss: float, accuracy: float) -> None:
        if progress:
            bar.set_postfix({"loss": f"{loss:.3f}", "acc": f"{accuracy:.3f}"}, refresh=False)
            bar.update(1)
        else:
            log(f"      pretraining epoch {epoch}/{epochs}: loss {loss:.4f}, accuracy "
                f"{accuracy:.4f} (on the synthetic set, as trained)")

    try:
        yield on_epoch
    finally:
        bar.close()


def initial_state(config: RunConfig, setup: Setup, found: LabelDiscovery,
                  sessions: list[dict], log: Log, out: Path | None = None,
                  progress: bool = False) -> RunState:
    """The run state before round 1: label discovery's result (``sessions``: its recorded
    sessions) and the initial global model, pretrained on synthetic data for ``--init
    synthetic``, with its test accuracy (round 0 of ``accuracy.png``)."""
    log(f"[2/3] initial model: {config.init} {config.effective_model}")
    model = new_model(config, setup.train)
    pretrain_report = None
    if config.init == "synthetic":
        model, pretrain_report = pretrain_on_synthetic(config, setup, found.counts, log,
                                                       out=out, progress=progress)
        start_accuracy = pretrain_report["test_accuracy"]
    else:
        start_accuracy = evaluate(model, setup.test)
        log(f"      random initial model: test accuracy {start_accuracy:.4f}")
    summary = outputs.summarize_session("label_discovery", found.session)
    summary["sessions"] = sessions
    return RunState(config=config, label_discovery=found.to_json(), pretrain=pretrain_report,
                    global_vector=model_to_vector(model),
                    optimizer_state=new_optimizer(config).state_dict(),
                    transcript=[summary], initial_accuracy=start_accuracy)
