"""Log-mel features for audio tasks, in numpy (and scipy for resampling) only.

The paper's keyword-spotting features are log-mel spectrograms with 128 mel bins, a 1024-point
FFT with a Hann window and a hop of 10 ms. This module computes exactly those, with these
conventions (they match ``torchaudio.transforms.MelSpectrogram`` defaults and
``transformers.audio_utils.spectrogram`` with ``center=True``):

* **Framing**: centred frames. The wave is padded by ``n_fft // 2`` samples on both sides
  (reflect padding; zero padding when the wave has no more than ``n_fft // 2`` samples, where
  reflection is undefined) and frame ``t`` covers padded samples ``[t * hop, t * hop + n_fft)``,
  so ``frames = 1 + len(wave) // hop``: a 1 s clip at 16 kHz gives 101 frames.
* **Window**: periodic Hann of length ``n_fft`` (``scipy.signal.get_window("hann", n_fft)``).
* **Spectrum**: power spectrum ``|rfft|**2`` (``n_fft // 2 + 1`` bins from 0 Hz to Nyquist).
* **Mel scale**: HTK, ``mel = 2595 * log10(1 + f / 700)``; ``n_mels`` triangular filters with
  centres equally spaced in mel between ``f_min`` (0 Hz) and ``f_max`` (Nyquist), triangles
  drawn in hertz, peak weight 1, no area normalisation (``norm=None``).
* **Log**: ``log(mel + 1e-6)`` (natural log).

``hop_ms`` is converted to samples as ``round(sample_rate * hop_ms / 1000)`` (160 at 16 kHz).
"""

from __future__ import annotations

from math import gcd

import numpy as np

LOG_OFFSET = 1e-6


def _check_wave(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validate a mono wave and a sample rate; return the wave as float64."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D mono wave, got shape {wave.shape}")
    if wave.size == 0:
        raise ValueError("the wave is empty")
    if np.iscomplexobj(wave):
        raise ValueError("complex-valued waves are not supported")
    if not np.issubdtype(wave.dtype, np.number) and wave.dtype != np.bool_:
        raise ValueError(f"expected a numeric wave, got dtype {wave.dtype}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise ValueError(f"sample_rate must be an integer, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wave = wave.astype(np.float64)
    if not np.all(np.isfinite(wave)):
        raise ValueError("the wave contains NaN or infinite samples")
    return wave


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``; hertz in, mels out."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`; mels in, hertz out."""
    return 700.0 * (10.0 ** (np.asarray(mels, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int,
    n_fft: int = 1024,
    n_mels: int = 128,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """Triangular HTK mel filters, shape ``(n_mels, n_fft // 2 + 1)`` float64.

    Row ``m`` weights the FFT bins (bin ``k`` at ``k * sample_rate / n_fft`` Hz) for mel band
    ``m``: it rises linearly from 0 at centre ``m - 1`` to 1 at centre ``m`` and falls back to 0 at
    centre ``m + 1`` (the ``n_mels + 2`` edges are equally spaced in mel between ``f_min`` and
    ``f_max``, default Nyquist). No area normalisation.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if n_fft < 2:
        raise ValueError(f"n_fft must be at least 2, got {n_fft}")
    if n_mels < 1:
        raise ValueError(f"n_mels must be positive, got {n_mels}")
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}"
        )
    fft_freqs = np.arange(n_fft // 2 + 1, dtype=np.float64) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(edges)  # (n_mels + 1,)
    offsets = edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, bins)
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(rising, falling))


def hop_samples(sample_rate: int, hop_ms: float) -> int:
    """The hop in samples for ``hop_ms`` milliseconds at ``sample_rate`` (at least 1)."""
    if not hop_ms > 0:
        raise ValueError(f"hop_ms must be positive, got {hop_ms}")
    return max(1, int(round(sample_rate * hop_ms / 1000.0)))


def num_frames(num_samples: int, sample_rate: int, hop_ms: float = 10.0) -> int:
    """Frames :func:`log_mel_spectrogram` returns for ``num_samples`` samples:
    ``1 + num_samples // hop``."""
    return 1 + int(num_samples) // hop_samples(sample_rate, hop_ms)


def log_mel_spectrogram(
    wave: np.ndarray,
    sample_rate: int,
    n_mels: int = 128,
    n_fft: int = 1024,
    hop_ms: float = 10.0,
) -> np.ndarray:
    """Log-mel spectrogram of a mono wave.

    Inputs: ``wave`` 1-D real samples (any scale; typically [-1, 1]) at ``sample_rate`` Hz.
    Output: ``(n_mels, 1 + len(wave) // hop)`` float32 holding ``log(mel_power + 1e-6)``, with
    ``hop = round(sample_rate * hop_ms / 1000)``; see the module docstring for the conventions.
    Raises ValueError for an empty, non-1-D, complex or non-finite wave, or a bad rate.
    """
    from scipy.signal import get_window

    samples = _check_wave(wave, sample_rate)
    if n_fft < 2:
        raise ValueError(f"n_fft must be at least 2, got {n_fft}")
    hop = hop_samples(sample_rate, hop_ms)
    pad = n_fft // 2
    mode = "reflect" if samples.size > pad else "constant"
    padded = np.pad(samples, (pad, pad), mode=mode)
    frames = 1 + (padded.size - n_fft) // hop
    strided = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:frames]
    window = get_window("hann", n_fft, fftbins=True)
    power = np.abs(np.fft.rfft(strided * window, n=n_fft, axis=-1)) ** 2  # (frames, bins)
    mel = mel_filterbank(sample_rate, n_fft=n_fft, n_mels=n_mels) @ power.T
    return np.log(mel + LOG_OFFSET).astype(np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D wave from ``orig_sr`` to ``target_sr`` Hz with a polyphase filter
    (``scipy.signal.resample_poly``); returns float32 of length ``ceil(len * target / orig)``.
    The same rate returns a float32 copy."""
    from scipy.signal import resample_poly

    samples = _check_wave(wave, orig_sr)
    if isinstance(target_sr, bool) or not isinstance(target_sr, int | np.integer):
        raise ValueError(f"target_sr must be an integer, got {target_sr!r}")
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    if orig_sr == target_sr:
        return samples.astype(np.float32)
    common = gcd(int(orig_sr), int(target_sr))
    out = resample_poly(samples, int(target_sr) // common, int(orig_sr) // common)
    return np.asarray(out, dtype=np.float32)


def fix_length(features: np.ndarray, frames: int, pad_value: float | None = None) -> np.ndarray:
    """Crop or pad the last (time) axis of ``features`` to exactly ``frames`` frames.

    Longer inputs keep their first ``frames`` frames; shorter ones are padded at the end with
    ``pad_value``, which defaults to ``log(1e-6)`` (the log-mel value of silence). Returns a new
    float32 array of shape ``features.shape[:-1] + (frames,)``.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim < 1:
        raise ValueError("features need at least one (time) axis")
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    fill = float(np.log(LOG_OFFSET)) if pad_value is None else float(pad_value)
    have = features.shape[-1]
    if have >= frames:
        return np.ascontiguousarray(features[..., :frames])
    out = np.full(features.shape[:-1] + (int(frames),), fill, dtype=np.float32)
    out[..., :have] = features
    return out
