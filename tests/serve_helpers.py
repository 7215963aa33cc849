"""Shared pieces of the ``samkit serve`` tests: a synthetic image folder and a file snapshot."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from samkit.data.synthetic import ShapesImage, make_shapes_image


def write_folder(root: Path, n: int = 3, seed: int = 1, size=(256, 320)) -> list[ShapesImage]:
    """``root/images/0.png ..`` synthetic shapes (the demo model was trained on such images)."""
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes = []
    for i in range(n):
        s = make_shapes_image(rng, *size, max_objects=4, radius_range=(0.15, 0.3))
        Image.fromarray(s.image).save(root / "images" / f"{i}.png")
        shapes.append(s)
    return shapes


def inner_point(mask: np.ndarray) -> tuple[int, int]:
    """An (x, y) pixel deep inside ``mask`` (the maximum of the distance transform)."""
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def snapshot(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` (links included as text)."""
    out = {}
    if not folder.exists():
        return out
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[p.relative_to(folder).as_posix()] = "link->" + str(p.readlink())
        elif p.is_file():
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
