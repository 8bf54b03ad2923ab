"""The ``offline`` generator: label names that are numbers, rendered as distorted glyphs.

The embedded default backend. It needs no model weights and no network: only the TrueType fonts
on the machine (matplotlib's bundled DejaVu / STIX / Computer Modern fonts, anything under
``/usr/share/fonts``, and Pillow's built-in scalable font). A label is renderable when it is a
number written in digits (``"7"``, ``"12"``) or as an English number word (``"seven"``,
``"Twenty-one"``); :func:`label_to_text` maps it to the digits drawn. Any other label raises
:class:`UnrenderableLabelError`, which points to a real generative model
(``--generator diffusers:MODEL_OR_PATH``).

Each image is the label's text drawn in a random type face or, with probability
``handwritten_share``, in a small embedded stroke font of handwriting-style digits (open 4,
crossed 7, 1 without a foot, ...), then put through a handwriting-like distortion: a random affine
map (rotation, shear, anisotropic scale), a size normalisation that makes the glyph fill the
frame's height, a smooth random elastic displacement, a stroke width chosen so that a random
fraction of the frame is inked (thickening or thinning the font's strokes through the glyph's
signed distance field), a slight blur, and an area-averaging downsample from a canvas 4x the
output size. At 8x8 this mimics how scikit-learn's digits were made (32x32 bitmaps of
size-normalised digits, counted in 4x4 blocks). Finally a little noise is added. Images are
grayscale, replicated when more channels are asked for. The default ranges were tuned so that a
small CNN trained only on 300 images per digit reaches about 85% accuracy on the 1797 real
scikit-learn digits.

Output is deterministic in ``(label text, count, seed)`` for a given set of installed fonts
(labels with the same text, such as ``"3"`` and ``"three"``, give the same images). The
generator sees label names only, never client data.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from .base import GeneratorError

__all__ = [
    "OfflineGlyphGenerator",
    "UnrenderableLabelError",
    "available_fonts",
    "label_to_text",
]

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORDS: dict[str, int] = {word: i for i, word in enumerate(_UNITS)}
_WORDS.update({word: 20 + 10 * i for i, word in enumerate(_TENS)})
_TEN_VALUES = {word: 20 + 10 * i for i, word in enumerate(_TENS)}
_DIGITS_RE = re.compile(r"[0-9]+")
_DIGIT_TEXTS = tuple("0123456789")
_SYSTEM_FONT_DIR = Path("/usr/share/fonts")


class UnrenderableLabelError(GeneratorError):
    """Labels the offline generator cannot draw (it draws numbers only); a ValueError."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        listed = ", ".join(repr(label) for label in self.labels)
        super().__init__(
            f"the offline generator renders numbers only (digits or number words such as "
            f"'7' or 'seven') and cannot render {len(self.labels)} label(s): {listed}; "
            f"use a generative model instead (--generator diffusers:MODEL_OR_PATH), or skip "
            f"the synthetic stage and start from a random model (--init random)"
        )


def label_to_text(label: str) -> str | None:
    """The digits to draw for ``label``, or None when it is not a number.

    ``"7"`` -> ``"7"``, ``" Seven "`` -> ``"7"``, ``"12"`` -> ``"12"``, ``"twenty-one"`` /
    ``"twenty one"`` -> ``"21"``. ASCII digits and English number words from zero to
    ninety-nine are recognised, case- and surrounding-whitespace-insensitively.
    """
    text = label.strip()
    if _DIGITS_RE.fullmatch(text):
        return text
    words = re.split(r"[\s\-]+", text.lower())
    if len(words) == 1 and words[0] in _WORDS:
        return str(_WORDS[words[0]])
    if len(words) == 2 and words[0] in _TEN_VALUES and words[1] in _UNITS[1:10]:
        return str(_TEN_VALUES[words[0]] + _WORDS[words[1]])
    return None


# --------------------------------------------------------------------------------------------
# Fonts


def _load_font(path: Path | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(path), size)


def _render_mask(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> np.ndarray:
    """The glyph's ink coverage in [0, 1], cropped to its bounding box (empty: shape (0, 0))."""
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    margin = 4
    width, height = max(right - left, 1) + 2 * margin, max(bottom - top, 1) + 2 * margin
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).text((margin - left, margin - top), text, fill=255, font=font)
    ink = np.asarray(image, dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0.25)
    if rows.size == 0:
        return np.zeros((0, 0), np.float32)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _signature(mask: np.ndarray, side: int = 16) -> np.ndarray:
    """A centred, unit-norm, aspect-preserving ``side`` x ``side`` thumbnail of a glyph."""
    height, width = mask.shape
    square = max(height, width)
    padded = np.zeros((square, square), np.float32)
    top, left = (square - height) // 2, (square - width) // 2
    padded[top : top + height, left : left + width] = mask
    image = Image.fromarray((padded * 255).astype(np.uint8)).resize(
        (side, side), Image.Resampling.BOX
    )
    thumb = ndimage.gaussian_filter(np.asarray(image, np.float32) / 255.0, 1.0)
    thumb -= thumb.mean()
    return (thumb / (np.linalg.norm(thumb) + 1e-9)).ravel()


@lru_cache(maxsize=1)
def _reference_signatures() -> np.ndarray | None:
    """Digit thumbnails in Pillow's built-in scalable font, or None without FreeType."""
    font = ImageFont.load_default(size=64)
    if not isinstance(font, ImageFont.FreeTypeFont):
        return None
    return np.stack([_signature(_render_mask(font, digit)) for digit in _DIGIT_TEXTS])


def _renders_digits(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> bool:
    """Whether ``font`` draws 0-9 as ten distinct, non-empty glyphs that look like digits.

    Symbol fonts fail it: their digit code points are empty, all one glyph (a last-resort box),
    or other symbols, which do not match the reference digits of Pillow's built-in font.
    """
    masks = [_render_mask(font, digit) for digit in _DIGIT_TEXTS]
    if any(mask.size == 0 or mask.sum() < 4.0 for mask in masks):
        return False
    signatures = np.stack([_signature(mask) for mask in masks])
    similarity = signatures @ signatures.T
    np.fill_diagonal(similarity, -1.0)
    if similarity.max() > 0.97:  # two digits drawn (nearly) alike
        return False
    reference = _reference_signatures()
    if reference is None:
        return True
    recognised = int(np.sum(np.argmax(signatures @ reference.T, axis=1) == np.arange(10)))
    return recognised >= 5


def _font_candidates() -> list[Path]:
    import matplotlib

    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = sorted(bundled.glob("*.ttf"))
    if _SYSTEM_FONT_DIR.is_dir():
        system = [p for p in _SYSTEM_FONT_DIR.rglob("*") if p.suffix.lower() == ".ttf"]
        paths += sorted(system)
    return paths


@lru_cache(maxsize=1)
def _available_fonts() -> tuple[Path, ...]:
    found: dict[tuple[str, str], Path] = {}
    for path in _font_candidates():
        try:
            font = ImageFont.truetype(str(path), 64)
            family, style = font.getname()
            key = (str(family), str(style))
            if key in found or not _renders_digits(font):
                continue
        except (OSError, ValueError):
            continue
        found[key] = path
    return tuple(sorted(found.values(), key=lambda p: (p.name, str(p))))


def available_fonts() -> list[Path]:
    """TrueType fonts that draw the digits 0-9, in a fixed order (cached).

    Searched: matplotlib's bundled fonts, then ``/usr/share/fonts/**/*.ttf``. Each font is
    checked by rendering the ten digits (see :func:`_renders_digits`); a font already found under
    the same family and style name is skipped. The generator always adds Pillow's built-in
    scalable font, so it has a font even when this list is empty.
    """
    return list(_available_fonts())


# --------------------------------------------------------------------------------------------
# A small embedded stroke font: digits as pen paths, in handwriting styles that type faces lack
# (open 4, crossed 7, 1 without a foot, straight-tailed 9). Coordinates: x in [0, 0.7] to the
# right, y in [0, 1] downwards; each digit has variants, each variant a list of pen strokes.

_Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float) -> _Stroke:
    """Points on an elliptical arc, angles in degrees counter-clockwise from 3 o'clock."""
    steps = max(4, int(abs(stop - start) / 15))
    angles = np.deg2rad(np.linspace(start, stop, steps + 1))
    return [(cx + rx * float(np.cos(a)), cy - ry * float(np.sin(a))) for a in angles]


_STROKE_DIGITS: dict[str, list[list[_Stroke]]] = {
    "0": [
        [_arc(0.35, 0.5, 0.33, 0.5, 90, 450)],
        [_arc(0.33, 0.5, 0.24, 0.5, 100, 460)],
    ],
    "1": [
        [[(0.35, 0.0), (0.35, 1.0)]],
        [[(0.1, 0.22), (0.4, 0.0), (0.4, 1.0)]],
        [[(0.12, 0.2), (0.4, 0.0), (0.4, 1.0)], [(0.12, 1.0), (0.68, 1.0)]],
    ],
    "2": [
        [_arc(0.35, 0.27, 0.32, 0.26, 160, -40) + [(0.02, 1.0), (0.7, 1.0)]],
        [_arc(0.35, 0.3, 0.3, 0.3, 170, -20) + [(0.05, 0.97), (0.35, 0.9), (0.7, 1.0)]],
    ],
    "3": [
        [_arc(0.33, 0.25, 0.3, 0.24, 150, -90) + _arc(0.33, 0.74, 0.34, 0.26, 90, -150)],
        [[(0.05, 0.0), (0.62, 0.0), (0.3, 0.42)] + _arc(0.33, 0.7, 0.34, 0.29, 100, -150)],
    ],
    "4": [
        [[(0.1, 0.0), (0.02, 0.62), (0.7, 0.62)], [(0.55, 0.2), (0.55, 1.0)]],
        [[(0.52, 1.0), (0.52, 0.0), (0.0, 0.68), (0.7, 0.68)]],
        [[(0.05, 0.0), (0.05, 0.52), (0.7, 0.52)], [(0.55, 0.0), (0.55, 1.0)]],
    ],
    "5": [
        [[(0.65, 0.0), (0.12, 0.0), (0.08, 0.45)] + _arc(0.33, 0.7, 0.32, 0.3, 140, -150)],
        [
            [(0.12, 0.0), (0.65, 0.0)],
            [(0.12, 0.0), (0.1, 0.4)] + _arc(0.3, 0.68, 0.36, 0.32, 125, -160),
        ],
    ],
    "6": [
        [[(0.6, 0.0), (0.3, 0.15), (0.1, 0.42)] + _arc(0.35, 0.72, 0.3, 0.28, 180, 540)],
        [[(0.5, 0.0), (0.2, 0.3)] + _arc(0.36, 0.7, 0.32, 0.3, 160, 520)],
    ],
    "7": [
        [[(0.0, 0.0), (0.7, 0.0), (0.25, 1.0)]],
        [[(0.0, 0.0), (0.7, 0.0), (0.3, 1.0)], [(0.25, 0.52), (0.7, 0.48)]],
        [[(0.0, 0.18), (0.02, 0.0), (0.7, 0.0), (0.35, 1.0)]],
    ],
    "8": [
        [_arc(0.35, 0.24, 0.26, 0.24, 270, 630), _arc(0.35, 0.73, 0.33, 0.27, 90, 450)],
        [_arc(0.38, 0.23, 0.22, 0.23, 270, 630), _arc(0.32, 0.72, 0.3, 0.28, 90, 450)],
    ],
    "9": [
        [_arc(0.35, 0.28, 0.32, 0.27, 0, 360), [(0.67, 0.28), (0.62, 1.0)]],
        [
            _arc(0.33, 0.27, 0.3, 0.27, 0, 360),
            [(0.63, 0.3), (0.58, 0.75), (0.4, 0.97), (0.15, 1.0)],
        ],
        [_arc(0.38, 0.25, 0.28, 0.25, 0, 360), [(0.66, 0.25), (0.45, 1.0)]],
    ],
}
STROKE_STYLES = max(len(variants) for variants in _STROKE_DIGITS.values())


def _stroke_mask(style: int, text: str, height: int = 80) -> np.ndarray:
    """``text`` in stroke style ``style`` (variant ``style`` modulo each digit's count)."""
    pen = max(2, height // 10)
    advance = 0.95 * height
    pad = pen + 2
    width = int(advance * len(text))
    image = Image.new("L", (width + 2 * pad, height + 2 * pad), 0)
    draw = ImageDraw.Draw(image)
    for position, char in enumerate(text):
        variants = _STROKE_DIGITS[char]
        for stroke in variants[style % len(variants)]:
            xy = [(pad + position * advance + x * height, pad + y * height) for x, y in stroke]
            draw.line(xy, fill=255, width=pen, joint="curve")
            for x, y in (xy[0], xy[-1]):
                r = pen / 2.0
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    ink = np.asarray(image, dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0.25)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


# --------------------------------------------------------------------------------------------
# Glyphs: signed distance fields, cached per (font, text)

_GLYPH_SIZE = 96  # font size of the source glyphs, in pixels
_SDF_MARGIN = 24  # pixels of distance field kept around the glyph's bounding box


class _GlyphSet:
    """The text in every font, as stacked signed distance fields (source pixels, < 0 inside)."""

    def __init__(self, text: str, sources: Sequence[Path | int | None]) -> None:
        fields, boxes, widths, handwritten = [], [], [], []
        for source in sources:
            if isinstance(source, int):
                mask = _stroke_mask(source, text) > 0.5
            else:
                mask = _render_mask(_load_font(source, _GLYPH_SIZE), text) > 0.5
            if mask.sum() < 4:
                continue
            handwritten.append(isinstance(source, int))
            mask = np.pad(mask, _SDF_MARGIN)
            sdf = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
            fields.append(sdf.astype(np.float32))
            boxes.append(mask.shape)
            # stroke width ~ 2 * area / perimeter (a stroke of width w, length L: w L and 2 L)
            boundary = mask & ~ndimage.binary_erosion(mask)
            widths.append(2.0 * mask.sum() / max(int(boundary.sum()), 1))
        if not fields:
            raise UnrenderableLabelError([text])
        height = max(h for h, _ in boxes)
        width = max(w for _, w in boxes)
        far = float(height + width)
        self.sdf = np.full((len(fields), height, width), far, np.float32)
        for i, field in enumerate(fields):
            self.sdf[i, : field.shape[0], : field.shape[1]] = field
        # ink extents of each glyph, centre of its bounding box, and sampled ink coordinates
        self.shapes = np.asarray(boxes, np.float64)
        self.centres = (self.shapes - 1.0) / 2.0
        self.stroke = np.asarray(widths, np.float64)
        self.handwritten = np.asarray(handwritten, bool)
        self.ink_points = np.empty((len(fields), 512, 2))  # (glyph, point, row/col offset)
        for i, field in enumerate(fields):
            rows, cols = np.nonzero(field < 0.0)
            points = np.stack([rows, cols], axis=1).astype(np.float64) - self.centres[i]
            self.ink_points[i] = points[np.linspace(0, len(points) - 1, 512).astype(int)]

    def __len__(self) -> int:
        return self.sdf.shape[0]


@lru_cache(maxsize=64)
def _glyph_set(text: str, sources: tuple[Path | int | None, ...]) -> _GlyphSet:
    return _GlyphSet(text, sources)


# --------------------------------------------------------------------------------------------
# The generator


@lru_cache(maxsize=8)
def _smooth_basis(length: int, knots: int) -> np.ndarray:
    """``(length, knots)`` Gaussian bumps on evenly spaced knots, rows of unit norm: smooth
    random fields are ``basis @ noise @ basis.T`` with unit-variance values."""
    position = np.arange(length) + 0.5
    centres = (np.arange(knots) + 0.5) * length / knots
    basis = np.exp(-0.5 * ((position[:, None] - centres[None, :]) / (length / knots)) ** 2)
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


class OfflineGlyphGenerator:
    """Numbers drawn as distorted font glyphs; see the module docstring.

    ``generate(label, count, seed)`` returns float32 ``(count, channels, image_size,
    image_size)`` in [0, 1]; ``check_labels(labels)`` raises :class:`UnrenderableLabelError`
    naming every label that is not a number.
    """

    name = "offline"

    # Distortion ranges; lengths are in pixels of a 32-pixel canvas (scaled for other sizes).
    handwritten_share = 0.7  # fraction of images drawn in the stroke styles
    ink_coverage = (0.2, 0.3)  # fraction of the canvas inked: sets the stroke width
    stroke_limits = (0.8, 10.0)  # stroke width bounds
    rotation_deg = 8.0
    shear = 0.25
    aspect = (0.75, 1.1)  # horizontal stretch relative to vertical
    height_fill = (0.94, 1.0)  # glyph height / canvas height
    width_fill = 0.85  # max glyph width / canvas width
    shift = 2.0  # translation jitter
    elastic_alpha = (0.0, 5.0)
    elastic_grid = 4  # control points per side of the displacement field
    blur_sigma = (0.3, 0.9)
    noise_std = 0.02

    def __init__(self, image_size: int = 8, channels: int = 1) -> None:
        if image_size < 2:
            raise ValueError(f"image_size must be >= 2, got {image_size}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.image_size = image_size
        self.channels = channels
        self.canvas = 4 * image_size
        # glyph sources: font files, Pillow's built-in font (None), the stroke styles (int)
        self.sources: tuple[Path | int | None, ...] = (
            *available_fonts(),
            None,
            *range(STROKE_STYLES),
        )

    def check_labels(self, labels: Iterable[str]) -> None:
        """Raise UnrenderableLabelError listing every label that is not a number."""
        bad = [label for label in labels if label_to_text(label) is None]
        if bad:
            raise UnrenderableLabelError(bad)

    def generate(self, label: str, count: int, seed: int) -> np.ndarray:
        """``count`` images of ``label``, float32 ``(count, channels, size, size)`` in [0, 1]."""
        text = label_to_text(label)
        if text is None:
            raise UnrenderableLabelError([label])
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        size = self.image_size
        if count == 0:
            return np.zeros((0, self.channels, size, size), np.float32)
        glyphs = _glyph_set(text, self.sources)
        seed_seq = np.random.SeedSequence([seed & 0xFFFFFFFF, zlib.crc32(text.encode()), count])
        rng = np.random.default_rng(seed_seq)
        step = max(1, 2**18 // self.canvas**2)  # images per vectorised batch
        chunks = [
            self._render(glyphs, rng, min(step, count - start)) for start in range(0, count, step)
        ]
        images = np.concatenate(chunks)
        factor = self.canvas // size
        images = images.reshape(count, size, factor, size, factor).mean(axis=(2, 4))
        images += rng.normal(0.0, self.noise_std, images.shape)
        images = np.clip(images, 0.0, 1.0).astype(np.float32)
        return np.repeat(images[:, None], self.channels, axis=1)

    def _render(self, glyphs: _GlyphSet, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` canvas-sized images in [0, 1] (before downsampling)."""
        canvas = self.canvas
        unit = canvas / 32.0
        # a glyph: from the stroke styles with probability handwritten_share, else a type face
        pools = [np.flatnonzero(~glyphs.handwritten), np.flatnonzero(glyphs.handwritten)]
        pick = rng.random(n) < self.handwritten_share
        if len(pools[1]) == 0 or len(pools[0]) == 0:
            pools = [pools[0]] * 2 if len(pools[0]) else [pools[1]] * 2
        font = np.where(
            pick,
            pools[1][rng.integers(0, len(pools[1]), n)],
            pools[0][rng.integers(0, len(pools[0]), n)],
        )
        # linear part: rotation . shear . anisotropic scale (acting on (row, col) coordinates)
        theta = np.deg2rad(rng.uniform(-self.rotation_deg, self.rotation_deg, n))
        shear = rng.uniform(-self.shear, self.shear, n)
        aspect = rng.uniform(*self.aspect, n)
        cos, sin = np.cos(theta), np.sin(theta)
        linear = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
        linear = linear @ np.stack(
            [np.stack([np.ones(n), np.zeros(n)], -1), np.stack([shear, aspect], -1)], -2
        )  # rot @ [[1, 0], [shear, 1]] @ diag(1, aspect): a slant, then a horizontal stretch
        # extents of each transformed glyph's stroke centre lines (ink box less one stroke)
        native = glyphs.stroke[font]
        ink = glyphs.ink_points[font] @ np.swapaxes(linear, 1, 2)
        low, high = ink.min(axis=1), ink.max(axis=1)
        middle = (low + high) / 2.0
        extent = np.maximum(high - low + 1.0 - native[:, None], 1.0)
        fill = (
            np.stack([rng.uniform(*self.height_fill, n), np.full(n, self.width_fill)], -1) * canvas
        )
        shift = rng.uniform(-self.shift, self.shift, (n, 2)) * unit
        coverage = rng.uniform(*self.ink_coverage, n)
        # canvas pixel grid, elastically displaced
        grid = np.stack(np.meshgrid(np.arange(canvas), np.arange(canvas), indexing="ij"), -1)
        grid = grid.astype(np.float64) - (canvas - 1) / 2.0
        k = self.elastic_grid
        basis = _smooth_basis(canvas, k)
        coarse = rng.normal(0.0, 1.0, (n, 2, k, k))
        field = np.einsum("ya,ncab,xb->nyxc", basis, coarse, basis, optimize=True)
        field -= field.mean(axis=(1, 2), keepdims=True)  # deform, do not move
        field *= (rng.uniform(*self.elastic_alpha, n) * unit)[:, None, None, None]
        points = grid[None] + field - shift[:, None, None, :]
        low_w, high_w = (w * unit for w in self.stroke_limits)
        width = np.full(n, 0.5 * (low_w + high_w))  # first guess of the final stroke width
        step = max(1, canvas // 16)  # the width is estimated on a (canvas / step)^2 subgrid
        for final in (False, True):
            grid_points = points if final else points[:, ::step, ::step]
            # fit the centre lines plus one stroke width into the frame
            scale = np.min((fill - width[:, None]) / extent, axis=1)
            scale = np.maximum(scale, 0.25 * np.min(fill / extent, axis=1))
            forward = linear * scale[:, None, None]  # source offsets -> canvas offsets
            inverse = np.linalg.inv(forward)
            offsets = grid_points + (scale[:, None] * middle)[:, None, None, :]
            source = (
                inverse[:, None, None, :, 0] * offsets[..., :1]
                + inverse[:, None, None, :, 1] * offsets[..., 1:]
                + glyphs.centres[font][:, None, None, :]
            )
            index = np.broadcast_to(font[:, None, None, None], (*source.shape[:3], 1))
            coords = np.concatenate([index, source], -1).reshape(-1, 3).T
            sdf = ndimage.map_coordinates(glyphs.sdf, coords, order=1, mode="nearest")
            # distance to the stroke centre lines, in canvas pixels
            iso = np.sqrt(np.abs(np.linalg.det(forward)))
            centre_dist = sdf.reshape(source.shape[:3]) + native[:, None, None] / 2.0
            centre_dist *= iso[:, None, None]
            # the stroke width that inks ``coverage`` of the canvas
            sample = centre_dist[:, ::step, ::step] if final else centre_dist
            ranked = np.sort(sample.reshape(n, -1), axis=1)
            rank = np.minimum((coverage * ranked.shape[1]).astype(int), ranked.shape[1] - 1)
            width = np.clip(2.0 * ranked[np.arange(n), rank], low_w, high_w)
        images = np.clip(0.5 + width[:, None, None] / 2.0 - centre_dist, 0.0, 1.0)
        # Gaussian blur, zero outside the canvas: K @ image @ K.T with a per-image kernel K
        sigma = np.maximum(rng.uniform(*self.blur_sigma, n) * unit, 1e-3)
        offset = np.arange(canvas)[:, None] - np.arange(canvas)[None, :]
        kernel = np.exp(-0.5 * (offset[None] / sigma[:, None, None]) ** 2)
        taps = np.arange(-canvas, canvas + 1)[None] / sigma[:, None]
        kernel /= np.exp(-0.5 * taps**2).sum(axis=1)[:, None, None]
        return kernel @ images @ np.swapaxes(kernel, 1, 2)
