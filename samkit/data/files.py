"""Image folders for batch jobs: image files in a stable order, read as RGB uint8.

Batch jobs such as :func:`samkit.auto_annotate` need a listing that is the same on every run
(so a resumed run continues where it stopped), with paths relative to the folder (they name the
outputs) and an output folder inside the data left out. Decoding is :mod:`samkit.sources`'.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import ImageError
from .sources import IMAGE_SUFFIXES, load_image


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

    :func:`samkit.sources.load_image`: grayscale, palette, CMYK and alpha images become RGB,
    16-bit ones 8-bit; an unreadable file raises :class:`ImageError` naming it and the reason.
    """
    return load_image(os.fspath(path))
