"""Synthetic shapes: textured images with ellipses, rectangles and polygons and their masks.

Every object is drawn without anti-aliasing, so its mask is exactly the pixels it painted; objects
drawn later occlude earlier ones and each instance mask is the *visible* part. The datasets written
here use the formats :mod:`samkit.datasets` reads (YOLO segmentation and COCO instances), so tests,
demos and the demo model's training use the same readers as real data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..ops.polygons import mask_to_polygons, merge_polygons, normalize_polygon
from ..ops.rle import encode_coco_rle

__all__ = ["SHAPE_NAMES", "ShapesImage", "make_shapes_image", "write_shapes_dataset"]

SHAPE_NAMES = ("ellipse", "rectangle", "polygon")


@dataclass
class ShapesImage:
    """One synthetic image: ``image`` H x W x 3 uint8 RGB, ``masks`` N x H x W bool (visible
    parts, in drawing order), ``classes`` N class ids (indices into :data:`SHAPE_NAMES`)."""

    image: np.ndarray
    masks: np.ndarray
    classes: np.ndarray


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random H x W x 3 float texture in 0..255: gradient, clouds, stripes or checks."""
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(4)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    if kind == 0:  # linear gradient
        a = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(a) + yy * np.sin(a)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    elif kind == 1:  # smooth clouds: upsampled noise
        small = rng.random((max(2, h // 32), max(2, w // 32))).astype(np.float32)
        t = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    elif kind == 2:  # stripes
        a = rng.uniform(0, np.pi)
        period = rng.uniform(6, 30)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
    else:  # checks
        p = rng.uniform(8, 32)
        t = ((xx // p + yy // p) % 2).astype(np.float32)
    return c1 + t[..., None] * (c2 - c1)


def _shape_mask(rng: np.random.Generator, kind: int, h: int, w: int, radius: float) -> np.ndarray:
    """A bool H x W mask of one ellipse (0), rotated rectangle (1) or random polygon (2)."""
    m = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    angle = rng.uniform(0, 180)
    if kind == 0:
        axes = (max(2, int(radius)), max(2, int(radius * rng.uniform(0.4, 1.0))))
        cv2.ellipse(m, (int(cx), int(cy)), axes, angle, 0, 360, 1, thickness=-1)
    elif kind == 1:
        size = (2 * radius, 2 * radius * rng.uniform(0.35, 1.0))
        corners = cv2.boxPoints(((cx, cy), size, angle))
        cv2.fillPoly(m, [np.round(corners).astype(np.int32)], 1)
    else:
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.5, 1.0, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m.astype(bool)


def _distinct_fill(rng: np.random.Generator, h: int, w: int, under: np.ndarray) -> np.ndarray:
    """A texture whose mean colour differs clearly from ``under`` (the covered pixels' mean)."""
    for _ in range(20):
        tex = _texture(rng, h, w)
        if rng.random() < 0.5:  # half the objects are nearly flat
            tex = np.broadcast_to(tex.mean(axis=(0, 1)), tex.shape)
        if np.abs(tex.mean(axis=(0, 1)) - under).sum() > 90:
            return tex
    return 255.0 - np.broadcast_to(under, (h, w, 3))


def make_shapes_image(
    rng: np.random.Generator,
    height: int = 256,
    width: int = 256,
    max_objects: int = 8,
    min_area: int = 64,
    radius_range: tuple[float, float] = (0.06, 0.3),
    noise: float = 8.0,
) -> ShapesImage:
    """Draw 1..``max_objects`` shapes on a textured background.

    ``radius_range`` is the shape radius as a fraction of ``min(height, width)``. Instances whose
    visible area is below ``min_area`` pixels (after occlusion) are dropped from the masks; their
    pixels stay in the image. ``noise`` is the std of Gaussian pixel noise (0..255 scale).
    """
    img = _texture(rng, height, width)
    masks: list[np.ndarray] = []
    classes: list[int] = []
    side = min(height, width)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(len(SHAPE_NAMES)))
        radius = side * rng.uniform(*radius_range)
        m = _shape_mask(rng, kind, height, width, radius)
        if not m.any():
            continue
        ys, xs = np.nonzero(m)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        box = m[y0:y1, x0:x1]
        fill = _distinct_fill(rng, y1 - y0, x1 - x0, img[m].mean(axis=0))
        img[y0:y1, x0:x1][box] = fill[box]
        masks = [prev & ~m for prev in masks]
        masks.append(m)
        classes.append(kind)
    img = img + rng.normal(0, noise, img.shape)
    keep = [i for i, m in enumerate(masks) if int(m.sum()) >= min_area]
    stacked = np.stack([masks[i] for i in keep]) if keep else np.zeros((0, height, width), bool)
    return ShapesImage(
        image=np.clip(img, 0, 255).astype(np.uint8),
        masks=stacked,
        classes=np.array([classes[i] for i in keep], dtype=np.int64),
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _yolo_lines(masks: np.ndarray, classes: np.ndarray) -> list[str]:
    h, w = masks.shape[1:]
    lines = []
    for m, c in zip(masks, classes):
        polys = mask_to_polygons(m, holes=True)
        if not polys:
            continue
        poly = normalize_polygon(merge_polygons(polys), h, w)
        lines.append(f"{int(c)} " + " ".join(f"{v:.6f}" for v in poly.ravel()))
    return lines


def write_shapes_dataset(
    root: str | os.PathLike,
    n_train: int = 200,
    n_val: int = 50,
    *,
    seed: int = 0,
    height: int = 256,
    width: int = 256,
    max_objects: int = 8,
    radius_range: tuple[float, float] = (0.06, 0.3),
) -> Path:
    """Write a synthetic-shapes dataset in both YOLO and COCO layout; returns ``root/data.yaml``.

    Layout: ``images/{train,val}/NNNNNN.png``, ``labels/{train,val}/NNNNNN.txt`` (YOLO: class and
    normalized polygon per line; occlusion holes joined by zero-width bridges),
    ``annotations/instances_{train,val}.json`` (COCO, exact masks as compressed RLE) and
    ``data.yaml``. The same ``seed`` always gives the same files. ``max_objects`` and
    ``radius_range`` are passed to :func:`make_shapes_image`.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        coco_images, coco_anns = [], []
        for i in range(count):
            s = make_shapes_image(rng, height, width, max_objects, radius_range=radius_range)
            name = f"{i:06d}"
            tmp = img_dir / f".{name}.tmp-{os.getpid()}.png"
            Image.fromarray(s.image).save(tmp)
            os.replace(tmp, img_dir / f"{name}.png")
            text = "\n".join(_yolo_lines(s.masks, s.classes))
            _write_atomic(lbl_dir / f"{name}.txt", (text + "\n" if text else "").encode())
            coco_images.append(
                {"id": i + 1, "file_name": f"{name}.png", "height": height, "width": width}
            )
            for m, c in zip(s.masks, s.classes):
                ys, xs = np.nonzero(m)
                x0, y0 = int(xs.min()), int(ys.min())
                coco_anns.append(
                    {
                        "id": len(coco_anns) + 1,
                        "image_id": i + 1,
                        "category_id": int(c) + 1,
                        "segmentation": encode_coco_rle(m),
                        "area": int(m.sum()),
                        "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                        "iscrowd": 0,
                    }
                )
        coco = {
            "images": coco_images,
            "annotations": coco_anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(SHAPE_NAMES)],
        }
        _write_atomic(root / "annotations" / f"instances_{split}.json", json.dumps(coco).encode())
    names = "\n".join(f"  {k}: {n}" for k, n in enumerate(SHAPE_NAMES))
    yaml_text = f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    _write_atomic(root / "data.yaml", yaml_text.encode())
    return root / "data.yaml"
