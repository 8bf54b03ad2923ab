"""Load a user's own images from a folder laid out as one subfolder per label.

Expected layout::

    data/
        cat/
            001.png
            kitten.jpg
        dog/
            a.jpeg
            b.webp
        ...

* Every immediate subfolder of ``data/`` is a label; its name is the label name (the string that
  a client puts into its IBLT sketch, so at most 64 bytes of UTF-8). At least 2 labels are needed.
* Every immediate file of a label folder whose extension is one of .png .jpg .jpeg .bmp .gif
  .webp (any case) is an image of that label; other files, nested folders, and anything whose
  name starts with '.' are ignored. Every label folder needs at least one image.
* Files directly inside ``data/`` are ignored.

Images are decoded with Pillow (first frame of animated files, EXIF orientation applied),
converted to RGB (``channels=3``) or grayscale (``channels=1``), resized to
``image_size x image_size`` with a bilinear filter (aspect ratio is not kept), scaled to [0, 1]
and laid out ``(n, C, H, W)`` as float32, like
:func:`~gptfl_secure.learning.data.load_digits_split`.
Label names are NFC-normalised, so the same name typed on different systems gives the same bytes.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np

from .data import Dataset

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
"""File extensions (lower case) that are read as images."""

AUDIO_EXTENSIONS: frozenset[str] = frozenset({".wav"})
"""File extensions (lower case) that are read as audio clips (PCM WAV)."""

MAX_LABEL_BYTES = 64
"""Longest label name in bytes of UTF-8: labels are IBLT keys with ``max_key_bytes=64``."""

MIN_IMAGE_SIZE = 8

_EXTENSIONS_TEXT = " ".join(sorted(IMAGE_EXTENSIONS))


class ImageFolderError(ValueError):
    """The folder's contents do not match the layout that :func:`load_image_folder` expects."""


def _check_root(path: str | os.PathLike[str]) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"image folder {str(root)!r} does not exist; pass a folder that holds one subfolder "
            "of images per label"
        )
    if not root.is_dir():
        raise NotADirectoryError(
            f"{str(root)!r} is a file, not a folder; pass the folder that holds one subfolder of "
            "images per label (e.g. data/ with data/cat/*.png and data/dog/*.jpg)"
        )
    return root


def _is_image(entry: Path, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> bool:
    return (
        not entry.name.startswith(".")
        and entry.suffix.lower() in extensions
        and entry.is_file()
    )


def _scan(path: str | os.PathLike[str],
          extensions: frozenset[str] = IMAGE_EXTENSIONS) -> dict[str, list[Path]]:
    """Label name -> sorted member files (images, or ``extensions``), labels in sorted order;
    raises on a bad layout."""
    root = _check_root(path)
    noun = "images" if extensions == IMAGE_EXTENSIONS else "audio files"
    wanted = " ".join(sorted(extensions))
    folders: dict[str, Path] = {}
    for entry in root.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        label = unicodedata.normalize("NFC", entry.name)
        if label in folders:
            raise ImageFolderError(
                f"label folders {folders[label].name!r} and {entry.name!r} in {str(root)!r} are "
                "the same label name in different Unicode forms; merge them into one folder"
            )
        folders[label] = entry
    if not folders:
        loose = sum(1 for entry in root.iterdir() if _is_image(entry, extensions))
        hint = (
            f" (found {loose} image file(s) directly in it: move them into per-label subfolders)"
            if loose
            else ""
        )
        raise ImageFolderError(
            f"no label subfolders in {str(root)!r}{hint}; expected one subfolder per label, "
            "e.g. data/cat/*.png and data/dog/*.jpg"
        )
    if len(folders) < 2:
        (only,) = folders
        raise ImageFolderError(
            f"need at least 2 label folders, found 1 ({only!r}) in {str(root)!r}; add a "
            "subfolder of images for each other label"
        )
    scanned: dict[str, list[Path]] = {}
    for label in sorted(folders):
        size = len(label.encode("utf-8"))
        if size > MAX_LABEL_BYTES:
            raise ImageFolderError(
                f"label folder name {label!r} is {size} bytes of UTF-8, more than the "
                f"{MAX_LABEL_BYTES} that a label may have (labels are IBLT keys); rename the "
                "folder to something shorter"
            )
        folder = folders[label]
        images = sorted(
            (entry for entry in folder.iterdir() if _is_image(entry, extensions)),
            key=lambda p: p.name,
        )
        if not images:
            raise ImageFolderError(
                f"label folder {label!r} ({str(folder)!r}) has no {noun} (extensions "
                f"{wanted}); add {noun} to it or remove the folder"
            )
        scanned[label] = images
    return scanned


def folder_kind(path: str | os.PathLike[str]) -> str:
    """``"audio"`` when the label folders hold .wav files and no images, else ``"image"``."""
    root = _check_root(path)
    for sub in root.iterdir():
        if sub.is_dir() and not sub.name.startswith("."):
            names = [e for e in sub.iterdir() if e.is_file()]
            if any(_is_image(e) for e in names):
                return "image"
            if any(_is_image(e, AUDIO_EXTENSIONS) for e in names):
                return "audio"
    return "image"


def describe_folder(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{label: number of images}`` in sorted label order, without decoding any image.

    Checks the layout (same errors as :func:`load_image_folder` raises before it decodes), so a
    caller can validate a folder, and report what it holds, before doing any work.
    """
    return {label: len(files) for label, files in _scan(path).items()}


def resize_notice(path: str | os.PathLike[str], image_size: int,
                  per_label: int = 20) -> str | None:
    """One line telling that the folder's images are resized to ``image_size`` square (from
    the sizes of the first ``per_label`` images of every label, read from their headers), or
    None when those are all already that size. Unreadable files are left to the loader."""
    from PIL import Image

    sizes: dict[tuple[int, int], int] = {}
    for files in _scan(path).values():
        for file in files[:per_label]:
            try:
                with Image.open(file) as img:
                    size = img.size
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                continue
            sizes[size] = sizes.get(size, 0) + 1
    other = sorted((n, s) for s, n in sizes.items() if s != (image_size, image_size))
    if not other:
        return None
    shown = ", ".join(f"{w}x{h}" for _, (w, h) in reversed(other[-3:]))
    more = f" and {len(other) - 3} more sizes" if len(other) > 3 else ""
    return (f"      images of {shown}{more} are resized to {image_size}x{image_size} "
            f"(--image-size {image_size}; aspect ratio not kept)")


def _read_image(file: Path, image_size: int, mode: str) -> np.ndarray:
    """One image as a uint8 array (H, W) or (H, W, 3) of the requested size and mode."""
    from PIL import Image, ImageOps

    try:
        with Image.open(file) as img:
            img.draft(mode, (image_size, image_size))  # JPEG: decode at a reduced scale
            img = ImageOps.exif_transpose(img)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # avoids Pillow's palette-transparency warning
            img = img.convert(mode)
            img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageFolderError(
            f"{str(file)!r} is not a readable image ({type(err).__name__}: {err}); delete or "
            "replace the file, or give it an extension other than "
            f"{_EXTENSIONS_TEXT} so that it is ignored"
        ) from err


def _stratified_test_indices(
    y: np.ndarray, n_labels: int, test_fraction: float, seed: int
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in range(n_labels):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        count = len(idx)
        n_test = min(max(round(count * test_fraction), 1), count - 1) if count >= 2 else 0
        test_idx.append(idx[:n_test])
    return np.sort(np.concatenate(test_idx))


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    image_size: int = 32,
    channels: int = 3,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[Dataset, Dataset]:
    """Images from ``path/<label>/*.<ext>`` (see the module docstring), split ``(train, test)``.

    ``x`` is ``(n, channels, image_size, image_size)`` float32 in [0, 1]; ``label_names`` are the
    subfolder names in sorted order and ``y`` indexes into them. The split is stratified by label
    with ``numpy.random.default_rng(seed)``: ``round(count * test_fraction)`` images of each label
    go to test, but a label with at least 2 images keeps at least one in each part, and a label
    with a single image goes to train. Files are sorted by name before shuffling, so the result
    depends only on the folder's contents and the arguments.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise TypeError(f"image_size={image_size!r}: must be an int")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={image_size}: must be at least {MIN_IMAGE_SIZE} pixels")
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}: must be 1 (grayscale) or 3 (RGB)")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: must be in (0, 1)")

    scanned = _scan(path)
    names = tuple(scanned)
    n = sum(len(files) for files in scanned.values())
    mode = "RGB" if channels == 3 else "L"
    x = np.empty((n, channels, image_size, image_size), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    i = 0
    for label, files in enumerate(scanned.values()):
        for file in files:
            pixels = _read_image(file, image_size, mode)
            x[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
            y[i] = label
            i += 1
    x /= np.float32(255.0)

    test = _stratified_test_indices(y, len(names), test_fraction, seed)
    train = np.setdiff1d(np.arange(n), test)
    full = Dataset(x, y, names)
    return full.subset(train), full.subset(test)
