"""Image folders for batch jobs: list image files in a stable order and read them as RGB uint8.

A small stand-in for the general image sources (``samkit.sources``): batch jobs such as
:func:`samkit.auto_annotate` need a folder listing that is the same on every run (so a resumed
run continues where it stopped) and a reader that turns any file Pillow opens into an
``H x W x 3`` RGB uint8 array, or raises :class:`~samkit.errors.ImageError` with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

IMAGE_SUFFIXES = frozenset(
    {".bmp", ".gif", ".jpe", ".jpeg", ".jpg", ".mpo", ".pbm", ".pgm", ".png", ".ppm"}
    | {".tif", ".tiff", ".webp"}
)


def list_images(
    data: str | os.PathLike, recursive: bool = False, exclude: Path | None = None
) -> tuple[Path, list[PurePosixPath]]:
    """Image files of a folder (or one image file): ``(root, relative paths)``, sorted.

    Files are recognized by suffix (``IMAGE_SUFFIXES``, any case); hidden files and folders
    (names starting with ``.``) are skipped, and so is the folder ``exclude`` (an output folder
    inside ``data``). Paths are relative to ``root`` and sorted by their POSIX string, so the
    order does not depend on the file system.
    """
    path = Path(data).expanduser()
    if path.is_file():
        return path.parent, [PurePosixPath(path.name)]
    if not path.is_dir():
        raise ImageError(f"data not found: {path} (give a folder of images or an image file)")
    skip = exclude.resolve() if exclude is not None else None
    found: list[PurePosixPath] = []
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        dirnames[:] = [
            d
            for d in dirnames
            if recursive and not d.startswith(".") and (here / d).resolve() != skip
        ]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            found.append(PurePosixPath((here / name).relative_to(path).as_posix()))
    found.sort(key=lambda p: p.as_posix())
    return path, found


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``H x W x 3`` RGB uint8, upright (EXIF orientation applied).

    Grayscale, palette, CMYK and alpha images are converted to RGB (alpha is dropped); 16-bit
    images are scaled to 8 bits (value / 257). Raises :class:`ImageError` naming the file and
    the reason when it cannot be decoded (not an image, truncated, too large, ...).
    """
    try:
        with Image.open(path) as im:
            upright = ImageOps.exif_transpose(im)
            rgb = _to_rgb(upright)
    except ImageError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types for broken files
        reason = str(exc) or type(exc).__name__
        raise ImageError(f"cannot read image {path}: {reason}") from exc
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(
            f"cannot read image {path}: it has no pixels ({rgb.shape[1]}x{rgb.shape[0]})"
        )
    return rgb


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if im.mode.startswith("I") or im.mode == "F":
        values = np.asarray(im).astype(np.float64)
        if im.mode != "F":
            values = values / 257.0  # 16-bit range -> 8-bit
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    return np.array(im.convert("RGB"), dtype=np.uint8)
