"""The diffusers / SpeechT5 / AudioLDM backends, end to end on tiny random-weight models.

Each model is built by :mod:`tests.synth.tiny_models`, saved with ``save_pretrained``
into a temporary folder and loaded back through ``from_spec(str(folder))``: the same code path
as ``--generator diffusers:/path/to/model`` with a downloaded model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gptfl_secure.synth.base import Generator, GeneratorError

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from gptfl_secure.synth.image_diffusers import (  # noqa: E402
    DiffusersImageGenerator,
    draw_guidance_scales,
    to_task_images,
)
from gptfl_secure.synth.speech import (  # noqa: E402
    AudioLDMGenerator,
    CharPieceTokenizer,
    SpeechT5Generator,
    random_speaker_embedding,
    wave_to_features,
)

from . import tiny_models  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models gain nothing from intra-op threads, and on a busy 2-core machine
    thread hand-offs dominate (milliseconds per op); restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd_path(tmp_path_factory) -> Path:
    return tiny_models.save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def image_gen(sd_path: Path) -> DiffusersImageGenerator:
    return DiffusersImageGenerator.from_spec(
        str(sd_path), image_size=12, channels=1, steps=2, device="cpu"
    )


@pytest.fixture(scope="module")
def speecht5_paths(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_models.save_tiny_speecht5(tmp_path_factory.mktemp("tiny-speecht5"))


@pytest.fixture(scope="module")
def speech_gen(speecht5_paths: tuple[Path, Path]) -> SpeechT5Generator:
    model_dir, vocoder_dir = speecht5_paths
    return SpeechT5Generator.from_spec(str(model_dir), str(vocoder_dir), frames=101, device="cpu")


@pytest.fixture(scope="module")
def audioldm_path(tmp_path_factory) -> Path:
    return tiny_models.save_tiny_audioldm(tmp_path_factory.mktemp("tiny-audioldm"))


@pytest.fixture(scope="module")
def audioldm_gen(audioldm_path: Path) -> AudioLDMGenerator:
    return AudioLDMGenerator.from_spec(str(audioldm_path), frames=51, steps=2, device="cpu")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- tiny models --------------------------------------------------------------------------------


def test_tiny_models_are_small(
    sd_path: Path, speecht5_paths: tuple[Path, Path], audioldm_path: Path
) -> None:
    for folder in (sd_path, *speecht5_paths, audioldm_path):
        assert 0 < folder_size(folder) < 5 * 2**20
    assert (sd_path / "model_index.json").is_file()
    assert (audioldm_path / "model_index.json").is_file()
    assert (speecht5_paths[0] / "spm_char.model").is_file()


def test_spm_char_model_round_trips(tmp_path: Path) -> None:
    pieces = tiny_models.write_spm_char_model(tmp_path / "spm.model", characters="abc")
    assert pieces == ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "a", "b", "c"]
    tok = CharPieceTokenizer.from_file(tmp_path / "spm.model")
    assert tok.encode("ab  c") == [4, 5, 6, 4, 7, 2]
    assert tok.encode("az") == [4, 5, 3, 2]  # unknown character -> <unk>
    assert tok.normalize(" a b ") == "\u2581a\u2581b"


def test_char_tokenizer_matches_speecht5_processor(speecht5_paths: tuple[Path, Path]) -> None:
    pytest.importorskip("sentencepiece")
    from transformers import SpeechT5Processor

    processor = SpeechT5Processor.from_pretrained(speecht5_paths[0])
    tok = CharPieceTokenizer.from_file(speecht5_paths[0] / "spm_char.model")
    for text in ["yes", "  Left  right!", "zero 0 é"]:
        assert processor(text=text)["input_ids"] == tok.encode(text)


def test_char_tokenizer_rejects_multi_character_vocabularies() -> None:
    with pytest.raises(ValueError, match="sentencepiece"):
        CharPieceTokenizer([("<unk>", 2), ("ab", 1)], {})


# --- diffusers images ---------------------------------------------------------------------------


def test_image_generator_shape_range_and_name(
    image_gen: DiffusersImageGenerator, sd_path: Path
) -> None:
    assert isinstance(image_gen, Generator)
    assert image_gen.name == f"diffusers:{sd_path}"
    images = image_gen.generate("cat", ["a photo of a cat", "a cat"], 3, seed=7)
    assert images.shape == (3, 1, 12, 12)
    assert images.dtype == np.float32
    assert np.all(np.isfinite(images))
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.0


def test_image_generator_is_deterministic_and_seeded_per_image(
    image_gen: DiffusersImageGenerator,
) -> None:
    first = image_gen.generate("cat", ["a cat"], 3, seed=11)
    again = image_gen.generate("cat", ["a cat"], 3, seed=11)
    np.testing.assert_array_equal(first, again)
    # Image i depends on (seed + i) and its own guidance draw only: a shorter request is a prefix.
    np.testing.assert_allclose(image_gen.generate("cat", ["a cat"], 2, seed=11), first[:2])
    other = image_gen.generate("cat", ["a cat"], 3, seed=12)
    assert np.abs(first - other).max() > 1e-4
    assert np.abs(first[0] - first[1]).max() > 1e-4


def test_guidance_scales_are_uniform_in_one_to_five_per_image(
    image_gen: DiffusersImageGenerator,
) -> None:
    image_gen.generate("dog", ["a dog"], 3, seed=5)
    scales = image_gen.last_guidance_scales
    assert scales.shape == (3,)
    assert np.all((scales >= 1.0) & (scales <= 5.0))
    assert len(set(scales.tolist())) == 3
    np.testing.assert_array_equal(scales, image_gen.guidance_scales(3, 5))
    many = draw_guidance_scales(20000, seed=1)
    assert many.min() >= 1.0 and many.max() < 5.0
    assert many.mean() == pytest.approx(3.0, abs=0.05)
    assert np.histogram(many, bins=4, range=(1, 5))[0].min() > 4500


def test_rgb_batched_mode_shares_guidance_within_a_batch(sd_path: Path) -> None:
    gen = DiffusersImageGenerator.from_spec(
        str(sd_path),
        image_size=20,
        channels=3,
        steps=2,
        batch_size=2,
        device="cpu",
        per_image_guidance=False,
    )
    images = gen.generate("car", ["a car"], 3, seed=3)
    assert images.shape == (3, 3, 20, 20)
    assert images.min() >= 0.0 and images.max() <= 1.0
    scales = gen.last_guidance_scales
    assert scales[0] == scales[1] != scales[2]
    assert np.all((scales >= 1.0) & (scales <= 5.0))


def test_empty_requests_and_missing_prompts(image_gen: DiffusersImageGenerator) -> None:
    assert image_gen.generate("cat", ["a cat"], 0, seed=0).shape == (0, 1, 12, 12)
    assert image_gen.generate("cat", [], 1, seed=0).shape == (1, 1, 12, 12)
    with pytest.raises(GeneratorError):
        image_gen.generate("cat", ["a cat"], -1, seed=0)
    with pytest.raises(GeneratorError):
        image_gen.generate("", ["a cat"], 1, seed=0)


def test_check_labels(image_gen: DiffusersImageGenerator) -> None:
    image_gen.check_labels(["cat", "dog", "traffic light"])
    image_gen.check_labels([])
    with pytest.raises(GeneratorError, match="''"):
        image_gen.check_labels(["cat", "", "  "])


def test_to_task_images_luma_and_resize() -> None:
    red = np.zeros((1, 16, 16, 3), dtype=np.float32)
    red[..., 0] = 1.0
    grey = to_task_images(red, 8, 1)
    assert grey.shape == (1, 1, 8, 8)
    np.testing.assert_allclose(grey, 0.299, atol=1e-6)
    rgb = to_task_images(red, 24, 3)
    assert rgb.shape == (1, 3, 24, 24)
    np.testing.assert_allclose(rgb[0, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(rgb[0, 1:], 0.0, atol=1e-6)
    # Shrinking averages: a fine checkerboard becomes (almost) uniform grey.
    board = (np.indices((16, 16)).sum(axis=0) % 2).astype(np.float32)
    small = to_task_images(np.repeat(board[None, ..., None], 3, axis=-1), 4, 1)
    np.testing.assert_allclose(small, 0.5, atol=0.05)
    with pytest.raises(GeneratorError, match="non-finite"):
        to_task_images(np.full((1, 4, 4, 3), np.nan, dtype=np.float32), 4, 1)


def test_bad_image_parameters_raise(image_gen: DiffusersImageGenerator) -> None:
    for kwargs in ({"channels": 2}, {"image_size": 0}, {"steps": 0}, {"batch_size": 0}):
        params = {"name": "x", "image_size": 8, "channels": 1, **kwargs}
        with pytest.raises(GeneratorError):
            DiffusersImageGenerator(image_gen.pipeline, **params)


def test_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(GeneratorError, match="no model folder") as info:
        DiffusersImageGenerator.from_spec(str(missing), image_size=8, channels=1)
    assert "download" in str(info.value) and str(missing) in str(info.value)


def test_folder_without_a_pipeline_is_a_generator_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(GeneratorError, match="could not load") as info:
        DiffusersImageGenerator.from_spec(str(tmp_path), image_size=8, channels=1)
    assert "model_index.json" in str(info.value)
    with pytest.raises(GeneratorError, match="not a model folder"):
        DiffusersImageGenerator.from_spec(str(tmp_path / "notes.txt"), image_size=8, channels=1)


def test_a_pipeline_that_is_not_text_to_image_is_refused(audioldm_path: Path) -> None:
    with pytest.raises(GeneratorError, match="not a text-to-image pipeline"):
        DiffusersImageGenerator.from_spec(str(audioldm_path), image_size=8, channels=1)


# --- SpeechT5 -----------------------------------------------------------------------------------


def test_speecht5_features(speech_gen: SpeechT5Generator, speecht5_paths) -> None:
    assert isinstance(speech_gen, Generator)
    assert speech_gen.name == f"speecht5:{speecht5_paths[0]}"
    feats = speech_gen.generate("yes", ["yes"], 2, seed=3)
    assert feats.shape == (2, 1, 128, 101)
    assert feats.dtype == np.float32
    assert np.all(np.isfinite(feats))
    assert feats.max() > np.log(1e-6) + 1.0  # not silence
    assert np.abs(feats[0] - feats[1]).max() > 1e-3  # different random speakers


def test_speecht5_is_deterministic_and_leaves_global_rng_alone(
    speech_gen: SpeechT5Generator,
) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    first = speech_gen.generate("no", ["no"], 2, seed=9)
    assert torch.equal(torch.rand(3), expected)
    np.testing.assert_array_equal(first, speech_gen.generate("no", ["no"], 2, seed=9))


def test_speaker_embeddings(speecht5_paths: tuple[Path, Path], tmp_path: Path) -> None:
    vec = random_speaker_embedding(5)
    assert vec.shape == (512,) and vec.dtype == np.float32
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(vec, random_speaker_embedding(5))
    assert np.abs(vec - random_speaker_embedding(6)).max() > 0.0
    table = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    np.save(tmp_path / "xvectors.npy", table)
    model_dir, vocoder_dir = speecht5_paths
    gen = SpeechT5Generator.from_spec(
        str(model_dir),
        str(vocoder_dir),
        frames=20,
        device="cpu",
        speaker_embeddings=tmp_path / "xvectors.npy",
    )
    rows = [tuple(gen.speaker_embedding(0, i)) for i in range(6)]
    assert all(any(np.allclose(r, t) for t in table) for r in rows)
    assert gen.generate("up", ["up"], 1, seed=0).shape == (1, 1, 128, 20)
    with pytest.raises(GeneratorError, match="shape"):
        SpeechT5Generator.from_spec(
            str(model_dir), str(vocoder_dir), frames=20, speaker_embeddings=np.zeros((2, 7))
        )


def test_speecht5_missing_folders(speecht5_paths: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, vocoder_dir = speecht5_paths
    with pytest.raises(GeneratorError, match="no model folder"):
        SpeechT5Generator.from_spec(str(tmp_path / "tts"), str(vocoder_dir), frames=10)
    with pytest.raises(GeneratorError, match="no model folder"):
        SpeechT5Generator.from_spec(str(model_dir), str(tmp_path / "voc"), frames=10)
    with pytest.raises(GeneratorError, match="could not load"):
        SpeechT5Generator.from_spec(str(model_dir), str(model_dir), frames=10)


# --- AudioLDM -----------------------------------------------------------------------------------


def test_audioldm_features_and_guidance(audioldm_gen: AudioLDMGenerator, audioldm_path) -> None:
    assert isinstance(audioldm_gen, Generator)
    assert audioldm_gen.name == f"audioldm:{audioldm_path}"
    assert audioldm_gen.audio_length_in_s == pytest.approx(0.5)
    feats = audioldm_gen.generate("dog", ["a dog barking", "a dog"], 2, seed=4)
    assert feats.shape == (2, 1, 128, 51)
    assert feats.dtype == np.float32
    assert np.all(np.isfinite(feats))
    assert feats.max() > np.log(1e-6) + 1.0
    scales = audioldm_gen.last_guidance_scales
    assert scales.shape == (2,) and np.all((scales >= 1.0) & (scales <= 5.0))
    np.testing.assert_array_equal(
        feats, audioldm_gen.generate("dog", ["a dog barking", "a dog"], 2, 4)
    )


def test_audioldm_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="no model folder"):
        AudioLDMGenerator.from_spec(str(tmp_path / "missing"), frames=51)
    with pytest.raises(GeneratorError, match="could not load"):
        AudioLDMGenerator.from_spec(str(tmp_path), frames=51)


def test_wave_to_features_resamples_and_fixes_length() -> None:
    wave = np.sin(2 * np.pi * 500 * np.arange(22050) / 22050)
    feats = wave_to_features(wave, 22050, sample_rate=16000, frames=50)
    assert feats.shape == (128, 50)
    silent = wave_to_features(np.zeros(0), 16000, sample_rate=16000, frames=7)
    np.testing.assert_allclose(silent, np.log(1e-6), rtol=1e-6)
