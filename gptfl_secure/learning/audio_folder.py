"""Load a user's audio clips from a folder laid out as one subfolder of .wav files per label
(``data/yes/*.wav``, ``data/no/*.wav``), as the paper's features for the audio model.

Each clip is read with scipy (PCM or float WAV), mixed down to mono, resampled to
``sample_rate``, turned into a log-mel spectrogram (128 bins, 1024-point FFT, 10 ms hop:
:func:`.audio_features.log_mel_spectrogram`) and padded or cropped to ``frames`` frames. ``x``
is ``(n, 1, 128, frames)`` float32. The layout rules and errors are those of :mod:`.folder`
(label names at most 64 bytes, at least 2 labels, hidden files ignored).
"""

from __future__ import annotations

import os

import numpy as np

from .audio_features import fix_length, log_mel_spectrogram, resample
from .data import Dataset
from .folder import AUDIO_EXTENSIONS, ImageFolderError, _scan, _stratified_test_indices

N_MELS = 128


def read_wave(path: os.PathLike[str] | str) -> tuple[np.ndarray, int]:
    """``(mono float64 wave in [-1, 1], sample rate)``; raises ImageFolderError on a bad file."""
    from scipy.io import wavfile

    try:
        rate, data = wavfile.read(path)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageFolderError(f"{str(path)!r} is not a readable WAV file ({exc}); delete or "
                               "replace it") from None
    data = np.asarray(data)
    if data.dtype.kind == "i":
        wave = data / float(np.iinfo(data.dtype).max)
    elif data.dtype.kind == "u":  # 8-bit PCM is unsigned, centred at 128
        wave = (data.astype(np.float64) - 128.0) / 128.0
    else:
        wave = data.astype(np.float64)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    if wave.size == 0:
        raise ImageFolderError(f"{str(path)!r} holds no samples; delete or replace it")
    return wave, int(rate)


def clip_features(wave: np.ndarray, rate: int, *, sample_rate: int, frames: int) -> np.ndarray:
    """One clip's ``(128, frames)`` log-mel features at ``sample_rate``."""
    if rate != sample_rate:
        wave = resample(wave, rate, sample_rate)
    return fix_length(log_mel_spectrogram(wave, sample_rate, n_mels=N_MELS), frames)


def load_audio_folder(path: os.PathLike[str] | str, *, frames: int = 101,
                      sample_rate: int = 16000, test_fraction: float = 0.2,
                      seed: int = 0) -> tuple[Dataset, Dataset]:
    """Clips from ``path/<label>/*.wav`` as log-mel features, split ``(train, test)`` stratified
    by label exactly like :func:`~.folder.load_image_folder`."""
    if not isinstance(frames, int) or frames < 4:
        raise ValueError(f"frames={frames}: must be an int >= 4")
    if not isinstance(sample_rate, int) or sample_rate < 4000:
        raise ValueError(f"sample_rate={sample_rate}: must be an int >= 4000")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: must be in (0, 1)")
    scanned = _scan(path, AUDIO_EXTENSIONS)
    names = tuple(scanned)
    total = sum(len(files) for files in scanned.values())
    x = np.empty((total, 1, N_MELS, frames), dtype=np.float32)
    y = np.empty(total, dtype=np.int64)
    i = 0
    for label_index, label in enumerate(names):
        for file in scanned[label]:
            wave, rate = read_wave(file)
            x[i, 0] = clip_features(wave, rate, sample_rate=sample_rate, frames=frames)
            y[i] = label_index
            i += 1
    full = Dataset(x, y, names)
    test = _stratified_test_indices(y, len(names), test_fraction, seed)
    train = np.setdiff1d(np.arange(total), test)
    return full.subset(train), full.subset(test)
