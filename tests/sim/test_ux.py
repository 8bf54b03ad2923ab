"""A run a person can follow: progress of generation and pretraining, the run's length, the
notices before any work, round 0 of accuracy.png, the closing lines, console scripts, --help."""

import importlib
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from gptfl_secure.learning.data import Dataset
from gptfl_secure.learning.folder import resize_notice
from gptfl_secure.learning.pretrain import PretrainConfig, pretrain
from gptfl_secure.pipeline import outputs
from gptfl_secure.pipeline.eta import after_first_round, format_duration, plural
from gptfl_secure.sim.cli import build_parser, main
from gptfl_secure.synth.offline import UnrenderableLabelError

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--clients", "20", "--cohort", "5", "--local-epochs", "1", "--synthetic-per-label",
         "10", "--pretrain-epochs", "2", "--no-progress"]


def test_no_help_entry_states_its_default_twice():
    parser = build_parser()
    for action in parser._actions:
        text = (action.help or "").lower()
        assert text.count("default:") <= 1, (action.option_strings, action.help)
    assert "(default: auto)" not in parser.format_help().split("--server-lr")[1].split("--")[0]


def test_console_scripts_target_callable_mains_and_read_well_in_help(monkeypatch, capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"gptfl-sim", "gptfl-audit"}
    for name, target in scripts.items():
        module, attr = target.split(":")
        entry = getattr(importlib.import_module(module), attr)
        assert callable(entry)
        monkeypatch.setattr(sys, "argv", [f"/usr/local/bin/{name}", "--help"])
        with pytest.raises(SystemExit) as done:
            entry()
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: {name} ")
    monkeypatch.setattr(sys, "argv", ["/x/gptfl_secure/sim/__main__.py"])
    assert build_parser().prog == "python -m gptfl_secure.sim"


def test_offline_refusal_names_init_random_too():
    message = str(UnrenderableLabelError(["cat", "chien", "猫"]))
    assert "--init random" in message and "--generator diffusers:" in message


def _image_folder(root: Path, size: tuple[int, int]) -> Path:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", size, color=40 * i).save(root / label / f"{i}.png")
    return root


def test_resize_notice_names_the_source_and_target_sizes(tmp_path):
    folder = _image_folder(tmp_path / "digits28", (28, 28))
    notice = resize_notice(folder, 32)
    assert "28x28" in notice and "32x32" in notice
    assert resize_notice(folder, 28) is None


def test_durations_and_plurals_read_well():
    assert plural(1, "round") == "1 round" and plural(2, "round") == "2 rounds"
    assert format_duration(6.24) == "6.2 s" and format_duration(42) == "42 s"
    assert format_duration(186) == "3.1 min" and format_duration(7200) == "2.0 h"
    line = after_first_round(1, 6.2, 29)
    assert line.strip() == "round 1 took 6.2 s; about 3.0 min for the remaining 29 rounds"
    assert "remaining" not in after_first_round(5, 1.0, 0)


def test_pretraining_reports_every_epoch_and_the_weights_do_not_depend_on_it():
    rng = np.random.default_rng(0)
    data = Dataset(rng.random((40, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 40),
                   ("a", "b", "c"))
    from gptfl_secure.learning.models import SmallDigitsCNN

    def model():
        torch.manual_seed(0)
        return SmallDigitsCNN(num_classes=3)

    seen = []
    watched = pretrain(model(), data, PretrainConfig(epochs=3), seed=1,
                       on_epoch=lambda *a: seen.append(a))
    plain = pretrain(model(), data, PretrainConfig(epochs=3), seed=1)
    assert [e for e, _, _ in seen] == [1, 2, 3]
    assert all(loss > 0 and 0 <= acc <= 1 for _, loss, acc in seen)
    for a, b in zip(watched.state_dict().values(), plain.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy())


def test_sample_grid_keeps_square_images_square():
    rng = np.random.default_rng(0)
    data = Dataset(rng.random((12, 1, 16, 16), dtype=np.float32), np.repeat([0, 1, 2], 4),
                   ("zero", "one", "two"))
    fig = outputs.sample_grid(data, per_label=4)
    fig.canvas.draw()
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 12
    for ax in images:
        box = ax.get_position()
        width, height = fig.get_size_inches()
        assert box.width * width == pytest.approx(box.height * height, rel=0.02)
    outputs._pyplot().close(fig)


def test_a_run_prints_progress_notices_and_round_0(tmp_path, capsys, monkeypatch):
    plotted = {}
    real = outputs.plot_series

    def spy(path, rounds, key, ylabel, title, start=None):
        plotted[path.name] = start
        return real(path, rounds, key, ylabel, title, start=start)

    monkeypatch.setattr(outputs, "plot_series", spy)
    out = tmp_path / "run"
    assert main([*SMALL, "--rounds", "1", "--secagg", "plus", "--dropout", "0.4",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    # before any work: the skipped-rounds warning and a rough estimate
    first_step = next(i for i, line in enumerate(lines) if line.startswith("[1/3]"))
    assert any("fewer than 4 of its 5 clients" in line and "% of the rounds" in line
               for line in lines[:first_step])
    assert any("rough estimate" in line for line in lines[:first_step])
    assert "generated 10/10 labels (100/100 examples" in text
    assert "pretraining epoch 1/2: loss" in text and "pretraining epoch 2/2: loss" in text
    assert "round 1 took" in text or "round 1 skipped" in text
    assert "after 1 round (" in text
    wrote = next(line for line in lines if line.startswith("wrote "))
    for name in ("metrics.json", "metrics.csv", "accuracy.png", "gradient_diversity.png",
                 "transcript_summary.json", "synthetic_samples.png", "checkpoint.npz"):
        assert name in wrote and (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["initial_test_accuracy"] == metrics["pretrain"]["test_accuracy"]
    assert plotted["accuracy.png"] == metrics["initial_test_accuracy"]
    assert plotted["gradient_diversity.png"] is None


def test_random_init_stores_its_starting_accuracy_in_the_checkpoint(tmp_path, capsys):
    from gptfl_secure.pipeline.state import load_checkpoint

    out = tmp_path / "run"
    assert main([*SMALL, "--rounds", "1", "--init", "random", "--out", str(out)]) == 0
    start = load_checkpoint(out).initial_accuracy
    assert 0 <= start <= 1
    assert json.loads((out / "metrics.json").read_text())["initial_test_accuracy"] == start
    assert f"random initial model: test accuracy {start:.4f}" in capsys.readouterr().out


def test_generation_progress_bar_counts_examples(tmp_path, capsys):
    from gptfl_secure.synth.backends import make_image_generator
    from gptfl_secure.synth.cache import SyntheticCache
    from gptfl_secure.synth.synthetic_set import build_synthetic_set

    cache = SyntheticCache(tmp_path)
    build_synthetic_set(make_image_generator("offline", image_size=8, channels=1),
                        {"1": ["1"], "2": ["2"]}, 3, ("1", "2"), 0, cache, (1, 8, 8),
                        progress=True)
    assert "6/6" in capsys.readouterr().err


def test_a_folder_run_says_its_images_are_resized(tmp_path, capsys):
    folder = _image_folder(tmp_path / "digits28", (28, 28))
    out = tmp_path / "run"
    assert main(["--dataset", str(folder), "--init", "random", "--clients", "2", "--cohort",
                 "2", "--rounds", "1", "--local-epochs", "1", "--min-client-size", "1",
                 "--alpha", "100", "--secagg", "off", "--no-progress", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    first_step = next(i for i, line in enumerate(lines) if line.startswith("[1/3]"))
    assert any("28x28 are resized to 32x32" in line for line in lines[:first_step])
