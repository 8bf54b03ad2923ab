"""Build tiny random-weight generative models and save them as ordinary pretrained folders.

The real backends load models with ``from_pretrained`` from a hub id or a local folder. No
weights can be downloaded here, so the tests build miniature models with the same
architectures from small configs (the "dummy components" pattern of the diffusers and
transformers test suites), save them with ``save_pretrained`` and hand the folder to the
backends exactly as a user would pass a downloaded model. Their outputs are noise-like: they
exercise the code path, not the quality of synthetic data.

Tokenizers need vocabulary files. They are written here, offline:

* CLIP and RoBERTa (byte-level BPE): a ``vocab.json`` holding the 256 byte symbols of the
  GPT-2 byte-to-unicode map (and, for CLIP, each with the ``</w>`` end-of-word suffix) plus the
  special tokens, and a ``merges.txt`` with a few merges of frequent letter pairs, loaded
  through the tokenizer class's own ``from_pretrained``.
* SpeechT5: a character-level SentencePiece model ``spm_char.model`` serialised directly in
  the SentencePiece protobuf format (:func:`write_spm_char_model`), the layout of the real
  ``microsoft/speecht5_tts`` folder.

Each folder is well under 5 MB and generates a couple of examples in well under a second on CPU.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
SPM_SPECIALS = (("<s>", 3), ("<pad>", 3), ("</s>", 3), ("<unk>", 2))  # (piece, type)
SPM_WORD_BOUNDARY = "\u2581"  # "▁", SentencePiece's escaped space
# Letters, digits and punctuation of the character vocabulary of the tiny SpeechT5 tokenizer.
SPM_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'.,?!-"
_LETTER_MERGES = ("e s", "o n", "t h", "e r", "i n", "a n", "r e", "o u")


def byte_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-level BPE map from the 256 byte values to printable unicode symbols."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _write_bpe_files(
    folder: Path, vocab: dict[str, int], merges: Iterable[str]
) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` (with its version header) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), "utf-8")
    return vocab_file, merges_file


def tiny_clip_tokenizer(model_max_length: int = 77):  # -> transformers.CLIPTokenizer
    """A CLIP tokenizer over a 512-symbol byte-level vocabulary (+ 2 specials, + merges)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(CLIP_SPECIALS)}
    for symbol in byte_to_unicode().values():
        for token in (symbol, symbol + "</w>"):
            vocab.setdefault(token, len(vocab))
    merges = []
    for merge in _LETTER_MERGES:  # word-internal and word-final forms
        left, right = merge.split()
        for token, rule in ((left + right, merge), (left + right + "</w>", f"{left} {right}</w>")):
            vocab.setdefault(token, len(vocab))
            merges.append(rule)
    with tempfile.TemporaryDirectory() as tmp:
        _write_bpe_files(Path(tmp), vocab, merges)
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=model_max_length)


def tiny_roberta_tokenizer(model_max_length: int = 32):  # -> transformers.RobertaTokenizer
    """A RoBERTa tokenizer over the 256 byte symbols (+ specials, + a few merges)."""
    from transformers import RobertaTokenizer

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(ROBERTA_SPECIALS)}
    for symbol in byte_to_unicode().values():
        vocab.setdefault(symbol, len(vocab))
    vocab["<mask>"] = len(vocab)
    merges = list(_LETTER_MERGES)
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        _write_bpe_files(Path(tmp), vocab, merges)
        return RobertaTokenizer.from_pretrained(tmp, model_max_length=model_max_length)


# --- SentencePiece model files, written without the sentencepiece package ---------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = _varint((number << 3) | wire_type)
    if wire_type == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def write_spm_char_model(path: str | Path, characters: str = SPM_CHARACTERS) -> list[str]:
    """Write a character-level SentencePiece ``ModelProto`` to ``path``; return its pieces.

    Pieces: ``<s>``, ``<pad>``, ``</s>`` (control), ``<unk>`` (unknown), ``▁`` (word boundary)
    and one normal piece per character of ``characters``, with ids in that order (the id layout
    of SpeechT5's ``spm_char.model``). Trainer spec: model type CHAR; normalizer: ``identity``
    with the SentencePiece defaults (dummy prefix, whitespace collapsing and escaping).
    """
    pieces: list[tuple[str, int]] = list(SPM_SPECIALS) + [(SPM_WORD_BOUNDARY, 1)]
    pieces += [(ch, 1) for ch in dict.fromkeys(characters) if ch != SPM_WORD_BOUNDARY]
    blob = bytearray()
    for index, (piece, kind) in enumerate(pieces):
        score = 0.0 if kind != 1 else -float(index)
        entry = (
            _field(1, 2, piece.encode("utf-8"))
            + _field(2, 5, struct.pack("<f", score))
            + _field(3, 0, _varint(kind))
        )
        blob += _field(1, 2, entry)
    trainer = (
        _field(3, 0, _varint(4))  # model_type = CHAR
        + _field(4, 0, _varint(len(pieces)))  # vocab_size
        + _field(40, 0, _varint(3))  # unk_id
        + _field(41, 0, _varint(0))  # bos_id
        + _field(42, 0, _varint(2))  # eos_id
        + _field(43, 0, _varint(1))  # pad_id
    )
    normalizer = (
        _field(1, 2, b"identity")
        + _field(3, 0, _varint(1))  # add_dummy_prefix
        + _field(4, 0, _varint(1))  # remove_extra_whitespaces
        + _field(5, 0, _varint(1))  # escape_whitespaces
    )
    blob += _field(2, 2, trainer) + _field(3, 2, normalizer)
    Path(path).write_bytes(bytes(blob))
    return [piece for piece, _ in pieces]


# --- the tiny models ----------------------------------------------------------------------------


def save_tiny_stable_diffusion(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny ``StableDiffusionPipeline`` (random weights) to ``path``; return the path.

    UNet ``(8, 16)`` channels, one layer per block, 8x8 latents (16x16 images); a 2-level
    ``AutoencoderKL``; a 2-layer CLIP text encoder of width 16; the byte-level CLIP tokenizer of
    :func:`tiny_clip_tokenizer`; a PNDM scheduler; no safety checker.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    tokenizer = tiny_clip_tokenizer(model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            projection_dim=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = Path(path)
    pipe.save_pretrained(path)
    return path


def _tiny_hifigan_config(model_in_dim: int, upsample_rates: tuple[int, ...], init_std: float):
    """A tiny ``SpeechT5HifiGanConfig``: width 32 halving per upsampling stage (at most 5).

    ``init_std`` is the weight initialisation scale; the real default (0.01) makes a random
    vocoder this narrow output near-silence (~1e-9), so the tiny ones use 0.2-0.25, which gives
    waves with a standard deviation around 0.01-0.5 that depends on the input spectrogram.
    """
    from transformers import SpeechT5HifiGanConfig

    return SpeechT5HifiGanConfig(
        model_in_dim=model_in_dim,
        sampling_rate=16000,
        upsample_initial_channel=32,
        upsample_rates=list(upsample_rates),
        upsample_kernel_sizes=[2 * r for r in upsample_rates],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
        initializer_range=init_std,
    )


def save_tiny_speecht5(path: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny SpeechT5 text-to-speech model and a tiny HiFi-GAN vocoder under ``path``.

    Returns ``(model_dir, vocoder_dir)`` = ``(path / "tts", path / "hifigan")``, mirroring the two
    hub repositories ``microsoft/speecht5_tts`` and ``microsoft/speecht5_hifigan``. ``model_dir``
    holds the model, ``spm_char.model`` (see :func:`write_spm_char_model`), the tokenizer config
    and the ``SpeechT5FeatureExtractor`` config, so ``SpeechT5Processor.from_pretrained`` loads
    it where ``sentencepiece`` is installed. The decoder is 1 layer of width 16 with 80 mel bins
    and the real 512-d speaker embedding; its stop-token bias is set to -5 so that the random
    model speaks until its length limit (10 decoder steps per input token) instead of stopping
    at a random step. The vocoder upsamples 256x (16 ms per mel frame at 16 kHz), like the real
    one.
    """
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
    )

    path = Path(path)
    model_dir, vocoder_dir = path / "tts", path / "hifigan"
    model_dir.mkdir(parents=True, exist_ok=True)
    pieces = write_spm_char_model(model_dir / "spm_char.model")
    tokenizer_config = {
        "tokenizer_class": "SpeechT5Tokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "normalize": False,
        "model_max_length": 600,
    }
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    special = {k: tokenizer_config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (model_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    SpeechT5FeatureExtractor().save_pretrained(model_dir)

    torch.manual_seed(seed)
    config = SpeechT5Config(
        vocab_size=len(pieces),
        hidden_size=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        speech_decoder_prenet_units=16,
        speech_decoder_postnet_units=16,
        speech_decoder_postnet_layers=2,
        speaker_embedding_dim=512,
        reduction_factor=2,
        max_text_positions=128,
        max_speech_positions=512,
        encoder_max_relative_position=16,
        conv_dim=(16, 16),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    model = SpeechT5ForTextToSpeech(config)
    with torch.no_grad():
        model.speech_decoder_postnet.prob_out.bias.fill_(-5.0)
    model.save_pretrained(model_dir)

    torch.manual_seed(seed + 1)
    vocoder = SpeechT5HifiGan(_tiny_hifigan_config(80, (4, 4, 4, 4), 0.2))
    vocoder.save_pretrained(vocoder_dir)
    return model_dir, vocoder_dir


def save_tiny_audioldm(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny ``AudioLDMPipeline`` (random weights) to ``path``; return the path.

    UNet ``(8, 16)`` conditioned through a ``simple_projection`` class embedding on the 16-d CLAP
    text embedding (as AudioLDM is); a 1-channel ``AutoencoderKL`` over 16-bin mel images
    (latents 8 bins wide); a 2-layer ``ClapTextModelWithProjection`` of width 16; the byte-level
    RoBERTa tokenizer of :func:`tiny_roberta_tokenizer`; a DDIM scheduler; a HiFi-GAN vocoder
    upsampling 160x (10 ms per mel frame at 16 kHz, as in AudioLDM).
    """
    import torch
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
        attention_head_dim=2,
        norm_num_groups=4,
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=16,
        class_embeddings_concat=True,
    )
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
    )
    tokenizer = tiny_roberta_tokenizer(model_max_length=32)
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=40,
            projection_dim=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    torch.manual_seed(seed + 1)
    vocoder = SpeechT5HifiGan(_tiny_hifigan_config(16, (5, 4, 2, 2, 2), 0.25))
    pipe = AudioLDMPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        vocoder=vocoder,
    )
    path = Path(path)
    pipe.save_pretrained(path)
    return path
