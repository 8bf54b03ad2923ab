"""Audio backends for keyword-spotting tasks: text-to-speech (SpeechT5) and text-to-audio
(AudioLDM). Both return log-mel features ``(count, 1, n_mels, frames)`` float32 computed by
:mod:`gptfl_secure.learning.audio_features` (128 mel bins, 1024-point FFT, 10 ms hop by
default) from the generated waveform, resampled to ``sample_rate`` first when the model speaks
at another rate, then cropped or padded (with the log-mel of silence) to ``frames`` frames.

* ``--generator speecht5:MODEL`` → :class:`SpeechT5Generator`: ``SpeechT5ForTextToSpeech``
  speaks each prompt (e.g. the keyword ``"yes"``) and a ``SpeechT5HifiGan`` vocoder (a second
  hub id or folder) renders the waveform. SpeechT5 needs a speaker x-vector; real x-vectors come
  from a speaker-embedding data set (``Matthijs/cmu-arctic-xvectors``), which cannot be
  downloaded here, so by default each clip gets a random 512-d Gaussian vector (seeded) scaled
  to unit L2 norm like the real ones; pass an ``.npy`` file of real x-vectors
  (``speaker_embeddings=``) to draw from those instead. Text is tokenised with
  ``SpeechT5Processor`` where ``sentencepiece`` is installed; otherwise the character-level
  ``spm_char.model`` of the model folder is read directly (:class:`CharPieceTokenizer`), which
  gives the same ids for character vocabularies such as SpeechT5's.
* ``--generator audioldm:MODEL`` → :class:`AudioLDMGenerator`: diffusers ``AudioLDMPipeline``
  with a guidance scale drawn uniformly from [1, 5] per clip (one pipeline call per clip, since
  a call takes one scalar scale) and noise seeded ``seed + i`` for clip ``i``; the clip length
  is ``(frames - 1) * hop`` so that its features have exactly ``frames`` frames.

SpeechT5's decoder prenet applies dropout at inference time (by design) from torch's global
generator; :class:`SpeechT5Generator` seeds it inside ``torch.random.fork_rng`` per clip, so
outputs are reproducible for a seed and the caller's global RNG state is left untouched.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..learning import audio_features as af
from .base import GeneratorError
from .image_diffusers import (
    GUIDANCE_RANGE,
    check_label_names,
    check_model_spec,
    check_request,
    draw_guidance_scales,
    dtype_kwargs,
    item_seed,
    load_failure,
    pick_device,
    prompt_cycle,
)

_SPM_WORD_BOUNDARY = "\u2581"
_SPEAKER_TAG = 0x5EA4E2


def _check_feature_args(frames: int, sample_rate: int, n_mels: int, hop_ms: float) -> None:
    for what, value in (("frames", frames), ("sample_rate", sample_rate), ("n_mels", n_mels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GeneratorError(f"{what} must be a positive integer, got {value!r}")
    if not hop_ms > 0:
        raise GeneratorError(f"hop_ms must be positive, got {hop_ms!r}")


def wave_to_features(
    wave: np.ndarray,
    wave_rate: int,
    *,
    sample_rate: int,
    frames: int,
    n_mels: int = 128,
    hop_ms: float = 10.0,
) -> np.ndarray:
    """A generated waveform at ``wave_rate`` Hz to ``(n_mels, frames)`` float32 log-mel features
    at ``sample_rate`` Hz (resampled when the rates differ; an empty wave counts as silence)."""
    wave = np.nan_to_num(np.asarray(wave, dtype=np.float64).reshape(-1))
    if wave.size == 0:
        wave = np.zeros(1)
    if int(wave_rate) != int(sample_rate):
        wave = af.resample(wave, int(wave_rate), int(sample_rate))
    feats = af.log_mel_spectrogram(wave, int(sample_rate), n_mels=n_mels, hop_ms=hop_ms)
    return af.fix_length(feats, frames)


# --- SentencePiece character models without the sentencepiece package -------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _read_fields(data: bytes) -> list[tuple[int, int, Any]]:
    """Decode one protobuf message into ``(field, wire_type, value)`` triples (no nesting)."""
    fields = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated protobuf message")
        fields.append((number, wire, value))
    return fields


class CharPieceTokenizer:
    """Encode text with a character-level SentencePiece model file, without ``sentencepiece``.

    Reads the ``ModelProto`` (pieces, their types, and the normalizer flags) and splits the
    normalised text into single characters, as SentencePiece does for a vocabulary whose normal
    pieces are all single characters (SpeechT5's ``spm_char.model``): NFKC unless the
    normalizer is ``identity``, whitespace stripped and collapsed, a leading ``▁`` (dummy
    prefix), spaces written ``▁``, unknown characters mapped to ``<unk>``, and ``</s>``
    appended (what ``SpeechT5Tokenizer`` adds). Raises ValueError for other vocabularies.
    """

    def __init__(self, pieces: Sequence[tuple[str, int]], normalizer: dict[str, Any]) -> None:
        self.pieces = [piece for piece, _ in pieces]
        self.ids = {piece: i for i, (piece, _) in enumerate(pieces)}
        unknown = [i for i, (_, kind) in enumerate(pieces) if kind == 2]
        if not unknown:
            raise ValueError("the SentencePiece model has no <unk> piece")
        self.unk_id = unknown[0]
        self.eos_id = self.ids.get("</s>")
        normal = [piece for piece, kind in pieces if kind == 1]
        if any(len(piece) != 1 for piece in normal):
            raise ValueError(
                "not a character vocabulary (multi-character pieces); install sentencepiece"
            )
        self.normalizer_name = str(normalizer.get("name", "nmt_nfkc"))
        self.add_dummy_prefix = bool(normalizer.get("add_dummy_prefix", True))
        self.remove_extra_whitespaces = bool(normalizer.get("remove_extra_whitespaces", True))
        self.escape_whitespaces = bool(normalizer.get("escape_whitespaces", True))

    @classmethod
    def from_file(cls, path: str | Path) -> CharPieceTokenizer:
        """Parse a SentencePiece model file."""
        data = Path(path).read_bytes()
        pieces: list[tuple[str, int]] = []
        normalizer: dict[str, Any] = {}
        names = {1: "name", 3: "add_dummy_prefix", 4: "remove_extra_whitespaces"}
        names[5] = "escape_whitespaces"
        for number, wire, value in _read_fields(data):
            if number == 1 and wire == 2:
                piece, kind = "", 1
                for sub, sub_wire, sub_value in _read_fields(value):
                    if sub == 1 and sub_wire == 2:
                        piece = sub_value.decode("utf-8")
                    elif sub == 3 and sub_wire == 0:
                        kind = sub_value
                pieces.append((piece, kind))
            elif number == 3 and wire == 2:
                for sub, sub_wire, sub_value in _read_fields(value):
                    if sub in names:
                        decoded = sub_value.decode("utf-8") if sub_wire == 2 else sub_value
                        normalizer[names[sub]] = decoded
        if not pieces:
            raise ValueError(f"{path} holds no SentencePiece pieces")
        return cls(pieces, normalizer)

    def normalize(self, text: str) -> str:
        """The text as SentencePiece's normalizer would present it to the model."""
        if self.normalizer_name != "identity":
            text = unicodedata.normalize("NFKC", text)
        if self.remove_extra_whitespaces:
            text = " ".join(text.split())
        if self.add_dummy_prefix and text:
            text = " " + text
        if self.escape_whitespaces:
            text = text.replace(" ", _SPM_WORD_BOUNDARY)
        return text

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` followed by ``</s>``."""
        ids = [self.ids.get(ch, self.unk_id) for ch in self.normalize(text)]
        if self.eos_id is not None:
            ids.append(self.eos_id)
        return ids


# --- SpeechT5 -----------------------------------------------------------------------------------


def _speecht5_text_encoder(model: str) -> Any:
    """A callable ``text -> list[int]`` for a SpeechT5 model folder or hub id."""
    from transformers.utils import is_sentencepiece_available

    if is_sentencepiece_available():
        from transformers import SpeechT5Processor

        processor = SpeechT5Processor.from_pretrained(model)
        return lambda text: processor(text=text, return_tensors="pt")["input_ids"][0].tolist()
    from transformers.utils import cached_file

    spm_file = cached_file(model, "spm_char.model")
    if spm_file is None:  # pragma: no cover - cached_file raises when the file is missing
        raise OSError(f"{model} has no spm_char.model")
    return CharPieceTokenizer.from_file(spm_file).encode


def load_transformers_model(model_class: Any, spec: str, device: str) -> Any:
    """``model_class.from_pretrained(spec)`` in eval mode on ``device``, refusing a folder whose
    config names another model type or whose weights mostly do not fit (transformers would
    otherwise initialise them at random with a warning). Raises ValueError or OSError."""
    config_class = model_class.config_class
    config_dict, _ = config_class.get_config_dict(spec)
    found, expected = config_dict.get("model_type"), config_class.model_type
    if found != expected:
        raise ValueError(f"config.json describes a {found!r} model, not {expected!r}")
    loaded, info = model_class.from_pretrained(spec, output_loading_info=True)
    missing = len(info.get("missing_keys", ())) + len(info.get("mismatched_keys", ()))
    if missing > len(loaded.state_dict()) // 2:
        raise ValueError(f"{missing} weights of {model_class.__name__} are missing or mismatched")
    return loaded.to(device).eval()


def random_speaker_embedding(seed: int, dim: int = 512) -> np.ndarray:
    """A random unit-norm ``(dim,)`` float32 stand-in for an x-vector, deterministic in seed."""
    rng = np.random.default_rng([int(seed) % 2**63, _SPEAKER_TAG])
    vec = rng.standard_normal(dim)
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def load_speaker_embeddings(source: str | Path | np.ndarray, dim: int) -> np.ndarray:
    """Speaker x-vectors ``(n, dim)`` float32 from an array or an ``.npy`` file."""
    try:
        table = np.load(source) if isinstance(source, str | Path) else np.asarray(source)
    except (OSError, ValueError) as exc:
        raise GeneratorError(f"cannot read speaker embeddings {source!s}: {exc}") from exc
    table = np.asarray(table, dtype=np.float32)
    if table.ndim == 1:
        table = table[None]
    if table.ndim != 2 or table.shape[1] != dim or table.shape[0] == 0:
        raise GeneratorError(f"speaker embeddings must have shape (n, {dim}), got {table.shape}")
    return table


class SpeechT5Generator:
    """Spoken keywords as log-mel features ``(count, 1, n_mels, frames)`` from SpeechT5."""

    def __init__(
        self,
        model: Any,
        vocoder: Any,
        encode: Any,
        *,
        name: str,
        frames: int,
        sample_rate: int = 16000,
        device: str = "cpu",
        speaker_embeddings: np.ndarray | None = None,
        n_mels: int = 128,
        hop_ms: float = 10.0,
    ) -> None:
        _check_feature_args(frames, sample_rate, n_mels, hop_ms)
        self.model = model
        self.vocoder = vocoder
        self.encode = encode
        self.name = name
        self.frames = frames
        self.sample_rate = sample_rate
        self.device = device
        self.n_mels = n_mels
        self.hop_ms = float(hop_ms)
        self.speaker_dim = int(getattr(model.config, "speaker_embedding_dim", 512))
        self.speaker_table = (
            None
            if speaker_embeddings is None
            else load_speaker_embeddings(speaker_embeddings, self.speaker_dim)
        )
        self.model_rate = int(getattr(vocoder.config, "sampling_rate", 16000))

    @classmethod
    def from_spec(
        cls,
        model: str,
        vocoder: str,
        *,
        frames: int,
        sample_rate: int = 16000,
        device: str | None = None,
        speaker_embeddings: str | Path | np.ndarray | None = None,
        n_mels: int = 128,
        hop_ms: float = 10.0,
    ) -> SpeechT5Generator:
        """Load a SpeechT5 TTS model and a HiFi-GAN vocoder (hub ids or local folders; e.g.
        ``microsoft/speecht5_tts`` and ``microsoft/speecht5_hifigan``). ``name`` is
        ``f"speecht5:{model}"``. Raises GeneratorError when either cannot be loaded."""
        _check_feature_args(frames, sample_rate, n_mels, hop_ms)
        model_source = check_model_spec(model, "speecht5")
        vocoder_source = check_model_spec(vocoder, "speecht5")
        resolved = pick_device(device)
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan

        what = "SpeechT5 text-to-speech model"
        try:
            tts = load_transformers_model(SpeechT5ForTextToSpeech, model_source, resolved)
            encode = _speecht5_text_encoder(model_source)
        except Exception as exc:
            raise load_failure(model_source, "speecht5", what, exc) from exc
        try:
            voc = load_transformers_model(SpeechT5HifiGan, vocoder_source, resolved)
        except Exception as exc:
            what = "SpeechT5 HiFi-GAN vocoder"
            raise load_failure(vocoder_source, "speecht5", what, exc) from exc
        return cls(
            tts,
            voc,
            encode,
            name=f"speecht5:{model}",
            frames=frames,
            sample_rate=sample_rate,
            device=resolved,
            speaker_embeddings=speaker_embeddings,
            n_mels=n_mels,
            hop_ms=hop_ms,
        )

    def check_labels(self, labels: Sequence[str]) -> None:
        """Any non-empty label name can be spoken."""
        check_label_names(labels, self.name)

    def speaker_embedding(self, seed: int, index: int) -> np.ndarray:
        """The x-vector of clip ``index`` of a request seeded ``seed``: a row of the supplied
        table chosen at random, or a random unit vector (see the module docstring)."""
        clip_seed = item_seed(seed, index)
        if self.speaker_table is None:
            return random_speaker_embedding(clip_seed, self.speaker_dim)
        rng = np.random.default_rng([clip_seed, _SPEAKER_TAG])
        return self.speaker_table[rng.integers(len(self.speaker_table))]

    def synthesize(self, text: str, seed: int, index: int = 0) -> np.ndarray:
        """The waveform (float32, at ``self.model_rate`` Hz) of ``text`` for clip ``index``."""
        import torch

        ids = torch.tensor([self.encode(text)], dtype=torch.long, device=self.device)
        speaker = torch.from_numpy(self.speaker_embedding(seed, index))[None].to(self.device)
        devices = [self.device] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(item_seed(seed, index))
            wave = self.model.generate_speech(ids, speaker, vocoder=self.vocoder)
        return wave.detach().float().cpu().numpy().reshape(-1)

    def generate(self, label: str, prompts: Sequence[str], count: int, seed: int) -> np.ndarray:
        """``count`` clips of the prompts (cycled) spoken by per-clip random speakers."""
        check_request(label, count, seed)
        out = np.empty((count, 1, self.n_mels, self.frames), dtype=np.float32)
        for i, text in enumerate(prompt_cycle(label, prompts, count)):
            try:
                wave = self.synthesize(text, seed, i)
            except Exception as exc:
                raise GeneratorError(f"{self.name} failed on label {label!r}: {exc}") from exc
            out[i, 0] = wave_to_features(
                wave,
                self.model_rate,
                sample_rate=self.sample_rate,
                frames=self.frames,
                n_mels=self.n_mels,
                hop_ms=self.hop_ms,
            )
        return out


# --- AudioLDM -----------------------------------------------------------------------------------


class AudioLDMGenerator:
    """Text-to-audio clips as log-mel features ``(count, 1, n_mels, frames)`` from AudioLDM."""

    def __init__(
        self,
        pipeline: Any,
        *,
        name: str,
        frames: int,
        steps: int = 10,
        sample_rate: int = 16000,
        device: str = "cpu",
        n_mels: int = 128,
        hop_ms: float = 10.0,
        guidance_range: tuple[float, float] = GUIDANCE_RANGE,
    ) -> None:
        _check_feature_args(frames, sample_rate, n_mels, hop_ms)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise GeneratorError(f"steps must be a positive integer, got {steps!r}")
        self.pipeline = pipeline
        self.name = name
        self.frames = frames
        self.steps = steps
        self.sample_rate = sample_rate
        self.device = device
        self.n_mels = n_mels
        self.hop_ms = float(hop_ms)
        self.guidance_range = (float(guidance_range[0]), float(guidance_range[1]))
        self.last_guidance_scales: np.ndarray = np.empty(0)
        vocoder_config = pipeline.vocoder.config
        self.model_rate = int(vocoder_config.sampling_rate)
        # The shortest clip the pipeline accepts: one latent row of the mel image.
        vae_scale = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
        self.min_seconds = float(np.prod(vocoder_config.upsample_rates)) * vae_scale
        self.min_seconds /= self.model_rate

    @classmethod
    def from_spec(
        cls,
        model: str,
        *,
        frames: int,
        steps: int = 10,
        sample_rate: int = 16000,
        device: str | None = None,
        dtype: str | None = None,
        n_mels: int = 128,
        hop_ms: float = 10.0,
    ) -> AudioLDMGenerator:
        """Load an AudioLDM pipeline (hub id such as ``cvssp/audioldm-s-full-v2`` or a local
        folder); float16 on CUDA unless ``dtype`` says otherwise. ``name`` is
        ``f"audioldm:{model}"``. Raises GeneratorError when it cannot be loaded."""
        import torch

        _check_feature_args(frames, sample_rate, n_mels, hop_ms)
        source = check_model_spec(model, "audioldm")
        resolved = pick_device(device)
        dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
        if dtype is None:
            dtype = "float16" if resolved.startswith("cuda") else "float32"
        if dtype not in dtypes:
            raise GeneratorError(f"audioldm: dtype must be one of {sorted(dtypes)}, got {dtype!r}")
        try:
            from diffusers import AudioLDMPipeline

            pipe = AudioLDMPipeline.from_pretrained(source, **dtype_kwargs(dtypes[dtype]))
            pipe = pipe.to(resolved)
        except Exception as exc:
            raise load_failure(source, "audioldm", "AudioLDM pipeline", exc) from exc
        pipe.set_progress_bar_config(disable=True)
        return cls(
            pipe,
            name=f"audioldm:{model}",
            frames=frames,
            steps=steps,
            sample_rate=sample_rate,
            device=resolved,
            n_mels=n_mels,
            hop_ms=hop_ms,
        )

    @property
    def audio_length_in_s(self) -> float:
        """Clip length asked of the pipeline: ``(frames - 1)`` hops, at least its minimum."""
        return max((self.frames - 1) * self.hop_ms / 1000.0, self.min_seconds)

    def check_labels(self, labels: Sequence[str]) -> None:
        """Any non-empty label name can be prompted."""
        check_label_names(labels, self.name)

    def guidance_scales(self, count: int, seed: int) -> np.ndarray:
        """The guidance scale of each of ``count`` clips of a request seeded ``seed``."""
        return draw_guidance_scales(count, seed, *self.guidance_range)

    def generate(self, label: str, prompts: Sequence[str], count: int, seed: int) -> np.ndarray:
        """``count`` clips, clip ``i`` prompted with ``prompts[i % len]``, one call per clip."""
        import torch

        check_request(label, count, seed)
        scales = self.guidance_scales(count, seed)
        self.last_guidance_scales = scales
        out = np.empty((count, 1, self.n_mels, self.frames), dtype=np.float32)
        for i, text in enumerate(prompt_cycle(label, prompts, count)):
            generator = torch.Generator(device=self.device).manual_seed(item_seed(seed, i))
            try:
                result = self.pipeline(
                    prompt=text,
                    audio_length_in_s=self.audio_length_in_s,
                    num_inference_steps=self.steps,
                    guidance_scale=float(scales[i]),
                    generator=generator,
                    output_type="np",
                )
            except Exception as exc:
                raise GeneratorError(f"{self.name} failed on label {label!r}: {exc}") from exc
            out[i, 0] = wave_to_features(
                np.asarray(result.audios[0]),
                self.model_rate,
                sample_rate=self.sample_rate,
                frames=self.frames,
                n_mels=self.n_mels,
                hop_ms=self.hop_ms,
            )
        return out
