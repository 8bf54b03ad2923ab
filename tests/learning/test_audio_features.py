"""Log-mel features: framing, mel placement of tones, agreement with transformers' reference
implementation, resampling, length fixing and input validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gptfl_secure.learning import audio_features as af

SR = 16000


def tone(freq: float, seconds: float = 0.5, sample_rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def mel_centres(sample_rate: int, n_mels: int = 128) -> np.ndarray:
    edges = af.mel_to_hz(np.linspace(0.0, af.hz_to_mel(sample_rate / 2), n_mels + 2))
    return edges[1:-1]


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050])
@pytest.mark.parametrize("length", [1, 100, 511, 512, 513, 1024, 16000, 16159])
def test_frames_are_one_plus_length_over_hop(sample_rate: int, length: int) -> None:
    wave = np.random.default_rng(length).standard_normal(length)
    feats = af.log_mel_spectrogram(wave, sample_rate)
    hop = round(sample_rate / 100)
    assert feats.shape == (128, 1 + length // hop)
    assert feats.shape[1] == af.num_frames(length, sample_rate)
    assert feats.dtype == np.float32
    assert np.all(np.isfinite(feats))


def test_one_second_at_16k_is_101_frames_with_160_sample_hop() -> None:
    assert af.hop_samples(SR, 10.0) == 160
    assert af.log_mel_spectrogram(np.zeros(SR), SR).shape == (128, 101)


def test_custom_mels_fft_and_hop() -> None:
    feats = af.log_mel_spectrogram(tone(440.0), SR, n_mels=40, n_fft=512, hop_ms=20.0)
    assert feats.shape == (40, 1 + 8000 // 320)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_sine_energy_lands_in_the_matching_mel_band(freq: float) -> None:
    feats = af.log_mel_spectrogram(tone(freq), SR)
    band = int(np.argmax(feats[:, 5:-5].mean(axis=1)))
    nearest = int(np.argmin(np.abs(mel_centres(SR) - freq)))
    assert abs(band - nearest) <= 1
    # Far-away bands are many orders of magnitude (in power) below the peak band.
    far = np.abs(np.arange(128) - nearest) > 20
    assert feats[:, 5:-5].mean(axis=1)[far].max() < feats[band, 5:-5].mean() - 10


def test_silence_is_log_offset() -> None:
    feats = af.log_mel_spectrogram(np.zeros(4000), SR)
    np.testing.assert_allclose(feats, np.log(af.LOG_OFFSET), rtol=1e-6)


def test_louder_tone_has_higher_log_energy_by_log_of_power_ratio() -> None:
    quiet = af.log_mel_spectrogram(tone(1000.0), SR)
    loud = af.log_mel_spectrogram(2.0 * tone(1000.0), SR)
    band = int(np.argmax(quiet.mean(axis=1)))
    assert loud[band, 5:-5].mean() - quiet[band, 5:-5].mean() == pytest.approx(np.log(4.0), 1e-3)


def test_filterbank_rows_are_unit_peak_triangles_covering_the_spectrum() -> None:
    bank = af.mel_filterbank(SR)
    assert bank.shape == (128, 513)
    assert np.all(bank >= 0.0)
    assert np.all(bank.max(axis=1) > 0.0)  # no empty filter at 16 kHz / 1024 points
    assert bank.max() <= 1.0 + 1e-12
    assert np.all(bank.sum(axis=0)[1:-1] > 0.0)  # every inner FFT bin feeds some band


@pytest.fixture(scope="module")
def audio_utils():
    """The reference implementation, ``transformers.audio_utils``."""
    return pytest.importorskip("transformers.audio_utils")


class TestAgreementWithTransformers:
    """``transformers.audio_utils`` (HTK filters, ``center=True``, reflect padding, power 2)."""

    @pytest.mark.parametrize("sample_rate", [16000, 22050, 44100])
    def test_filterbank_matches(self, audio_utils, sample_rate: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = audio_utils.mel_filter_bank(
                num_frequency_bins=513,
                num_mel_filters=128,
                min_frequency=0.0,
                max_frequency=sample_rate / 2,
                sampling_rate=sample_rate,
                norm=None,
                mel_scale="htk",
            )
        np.testing.assert_allclose(af.mel_filterbank(sample_rate).T, ref, atol=1e-10)

    @pytest.mark.parametrize(
        ("sample_rate", "wave_kind"), [(16000, "noise"), (16000, "tone"), (22050, "noise")]
    )
    def test_log_mel_matches(self, audio_utils, sample_rate: int, wave_kind: str) -> None:
        if wave_kind == "noise":
            wave = 0.1 * np.random.default_rng(0).standard_normal(sample_rate // 2)
        else:
            wave = tone(700.0, 0.5, sample_rate)
        hop = af.hop_samples(sample_rate, 10.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bank = audio_utils.mel_filter_bank(513, 128, 0.0, sample_rate / 2, sample_rate)
        power = audio_utils.spectrogram(
            wave,
            audio_utils.window_function(1024, "hann"),
            frame_length=1024,
            hop_length=hop,
            fft_length=1024,
            power=2.0,
            center=True,
            pad_mode="reflect",
            mel_filters=bank,
            mel_floor=0.0,
        )
        ref = np.log(power + af.LOG_OFFSET)
        ours = af.log_mel_spectrogram(wave, sample_rate)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize(
    "wave",
    [np.zeros(0), np.zeros((2, 100)), np.zeros((1, 1, 5))],
    ids=["empty", "2-D", "3-D"],
)
def test_bad_wave_shapes_raise(wave: np.ndarray) -> None:
    with pytest.raises(ValueError):
        af.log_mel_spectrogram(wave, SR)


def test_non_finite_and_complex_waves_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        af.log_mel_spectrogram(np.array([0.0, np.nan, 1.0]), SR)
    with pytest.raises(ValueError, match="complex"):
        af.log_mel_spectrogram(np.ones(100, dtype=complex), SR)


@pytest.mark.parametrize("rate", [0, -16000, 16000.0, True, "16000"])
def test_bad_sample_rates_raise(rate) -> None:
    with pytest.raises(ValueError):
        af.log_mel_spectrogram(np.zeros(1000), rate)


def test_bad_hop_and_fft_raise() -> None:
    with pytest.raises(ValueError):
        af.log_mel_spectrogram(np.zeros(1000), SR, hop_ms=0.0)
    with pytest.raises(ValueError):
        af.log_mel_spectrogram(np.zeros(1000), SR, n_fft=1)
    with pytest.raises(ValueError):
        af.mel_filterbank(SR, f_min=5000.0, f_max=4000.0)


@pytest.mark.parametrize(("orig", "target"), [(22050, 16000), (44100, 16000), (16000, 8000)])
def test_resample_length_and_tone(orig: int, target: int) -> None:
    wave = tone(1000.0, 0.5, orig)
    out = af.resample(wave, orig, target)
    assert out.dtype == np.float32
    assert out.shape == (int(np.ceil(wave.size * target / orig)),)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak_hz = np.argmax(spectrum) * target / out.size
    assert abs(peak_hz - 1000.0) < 5.0
    assert np.sqrt(np.mean(out[100:-100] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_resample_same_rate_is_a_float32_copy() -> None:
    wave = np.arange(10, dtype=np.float64)
    out = af.resample(wave, SR, SR)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, wave)
    assert not np.shares_memory(out, wave)


@pytest.mark.parametrize("rates", [(0, 16000), (16000, 0), (16000, -1), (16000, 8000.5)])
def test_resample_bad_rates_raise(rates) -> None:
    with pytest.raises(ValueError):
        af.resample(np.zeros(100), *rates)


def test_fix_length_crops_and_pads_with_silence() -> None:
    feats = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    cropped = af.fix_length(feats, 4)
    np.testing.assert_array_equal(cropped, feats[..., :4])
    padded = af.fix_length(feats, 8)
    assert padded.shape == (2, 3, 8)
    np.testing.assert_array_equal(padded[..., :5], feats)
    np.testing.assert_allclose(padded[..., 5:], np.log(af.LOG_OFFSET))
    np.testing.assert_array_equal(af.fix_length(feats, 5), feats)
    assert np.all(af.fix_length(feats, 7, pad_value=0.0)[..., 5:] == 0.0)


@pytest.mark.parametrize("frames", [0, -3, 2.5, True])
def test_fix_length_bad_frames_raise(frames) -> None:
    with pytest.raises(ValueError):
        af.fix_length(np.zeros((3, 4)), frames)
