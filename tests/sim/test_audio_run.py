"""An audio task end to end: a folder of .wav clips, log-mel features, the audio model, and
synthetic pretraining from a tiny AudioLDM built from a config and loaded via from_pretrained."""

import json

import numpy as np
import pytest
from scipy.io import wavfile

from gptfl_secure.learning.audio_folder import load_audio_folder
from gptfl_secure.learning.folder import ImageFolderError, folder_kind
from gptfl_secure.sim.cli import main


def _wav_folder(root, tones=(("low", 300.0), ("high", 3000.0)), per_label=8, rate=8000):
    rng = np.random.default_rng(0)
    t = np.arange(int(0.3 * rate)) / rate
    for label, freq in tones:
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
            wavfile.write(root / label / f"{i}.wav", rate, (wave * 32767).astype(np.int16))
    return root


def test_audio_folder_gives_log_mel_features(tmp_path):
    data = _wav_folder(tmp_path / "data")
    assert folder_kind(data) == "audio"
    train, test = load_audio_folder(data, frames=20, test_fraction=0.25)
    assert train.x.shape[1:] == (1, 128, 20) and train.x.dtype == np.float32
    assert train.label_names == ("high", "low") and len(train) + len(test) == 16
    high = train.x[train.y == 0].mean(axis=(0, 1, 3))
    low = train.x[train.y == 1].mean(axis=(0, 1, 3))
    assert np.argmax(high) > np.argmax(low)  # the 3 kHz tone sits in a higher mel band


def test_a_broken_wav_is_named(tmp_path):
    data = _wav_folder(tmp_path / "data")
    (data / "low" / "bad.wav").write_bytes(b"RIFF0000garbage")
    with pytest.raises(ImageFolderError, match="bad.wav.*not a readable WAV"):
        load_audio_folder(data)


def test_audio_task_refuses_an_image_generator_before_any_work(tmp_path, capsys):
    data = _wav_folder(tmp_path / "data")
    with pytest.raises(SystemExit):
        main(["--dataset", str(data), "--clients", "2", "--cohort", "2", "--min-client-size",
              "1", "--out", str(tmp_path / "out")])
    assert "this task is audio" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_audio_task_pretrains_on_a_tiny_audioldm_and_runs_a_round(tmp_path):
    from ..synth.tiny_models import save_tiny_audioldm

    model = save_tiny_audioldm(tmp_path / "audioldm")
    data = _wav_folder(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["--dataset", str(data), "--generator", f"audioldm:{model}", "--clients", "3",
                 "--cohort", "3", "--min-client-size", "1", "--alpha", "10", "--rounds", "1",
                 "--local-epochs", "1", "--audio-frames", "16", "--synthetic-per-label", "2",
                 "--pretrain-epochs", "1", "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pretrain"]["synthetic_examples"] == 4
    assert metrics["label_discovery"]["counts"].keys() == {"high", "low"}
    assert len(metrics["rounds"]) == 1
    assert (out / "synthetic_samples.png").exists()
