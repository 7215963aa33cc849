"""Validation of images and of Meta-style single-object prompts (``predict(point_coords,
point_labels, box, mask_input)``); torch-free, shared by the torch and onnxruntime predictors.

Each function returns a clean array or raises :class:`~samkit.errors.PromptError` (prompts) or
:class:`~samkit.errors.ImageError` (images) saying what was wrong. Coordinates are (x, y) pixels
of the original image; boxes are XYXY. (The Ultralytics-style multi-object prompts are checked by
:mod:`samkit.prompts`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImageError, PromptError

POINT_LABELS = {
    1: "foreground",
    0: "background",
    2: "box top-left",
    3: "box bottom-right",
    -1: "padding, ignored",
}


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's checked prompts in original-image pixels (each part may be None).

    ``coords`` ``N x 2`` float64 (x, y) with ``labels`` ``N`` int64; ``box`` ``4`` float64 XYXY;
    ``mask_input`` ``1 x h x w`` float32 low-res logits of an earlier prediction.
    """

    coords: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None


def check_prompt(
    point_coords: Any, point_labels: Any, box: Any, mask_input: Any, mask_size: tuple[int, int]
) -> ObjectPrompt:
    """Check the arguments of Meta's ``predict`` (``mask_size`` = the low-res logits' ``h, w``).

    ``point_labels`` without ``point_coords`` are ignored, as the reference does.
    """
    coords = labels = b = m = None
    if point_coords is not None:
        coords, labels = check_points(point_coords, point_labels)
    if box is not None:
        b = check_box(box)
    if mask_input is not None:
        m = check_mask_input(mask_input, mask_size)
    return ObjectPrompt(coords, labels, b, m)


def check_points(point_coords: Any, point_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(coords N x 2 float64, labels N int64)``; labels 1 fg, 0 bg (2 / 3 box corners, -1
    padding)."""
    if point_labels is None:
        raise PromptError("point_labels must be given with point_coords (1 = fg, 0 = bg)")
    try:
        coords = np.asarray(point_coords, dtype=np.float64)
        labels = np.asarray(point_labels, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PromptError(f"point_coords / point_labels must be numeric arrays: {e}") from e
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise PromptError(f"point_coords must be N x 2 (x, y), got shape {coords.shape}")
    if labels.shape != (coords.shape[0],):
        raise PromptError(
            f"point_labels must have one label per point ({coords.shape[0]}), got shape {labels.shape}"
        )
    if not np.isfinite(coords).all():
        raise PromptError("point_coords contain NaN or infinite values")
    if not np.isin(labels, list(POINT_LABELS)).all():
        bad = sorted(set(labels.tolist()) - set(POINT_LABELS))
        raise PromptError(
            f"point_labels must be 1 (foreground) or 0 (background) (2 / 3 mark box corners, -1 "
            f"padding), got {bad}"
        )
    return coords, labels.astype(np.int64)


def check_box(box: Any) -> np.ndarray:
    """One XYXY box as a ``4`` float64 array with ``x1 <= x2`` and ``y1 <= y2``."""
    try:
        b = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PromptError(f"box must be 4 numbers (x1, y1, x2, y2): {e}") from e
    if b.size != 4:
        raise PromptError(f"box must have 4 values (x1, y1, x2, y2), got shape {b.shape}")
    b = b.reshape(4)
    if not np.isfinite(b).all():
        raise PromptError(f"box contains NaN or infinite values: {b.tolist()}")
    if b[2] < b[0] or b[3] < b[1]:
        raise PromptError(f"box must be XYXY with x1 <= x2 and y1 <= y2, got {b.tolist()}")
    return b


def check_mask_input(mask_input: Any, size: tuple[int, int]) -> np.ndarray:
    """Low-res logits of an earlier prediction as a ``1 x h x w`` float32 array."""
    m = np.asarray(mask_input, dtype=np.float32)
    if m.shape != (1, *size):
        raise PromptError(
            f"mask_input must be 1 x {size[0]} x {size[1]} logits (one low_res_logits entry of an "
            f"earlier prediction), got shape {m.shape}"
        )
    return m


def check_image(image: Any) -> np.ndarray:
    """A non-empty ``H x W x 3`` uint8 image (RGB or BGR) as an array."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(
            f"expected an H x W x 3 image, got an array of shape {image.shape}; convert "
            "grayscale/RGBA images to 3-channel RGB first"
        )
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image (0-255), got dtype {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise ImageError(f"the image is empty (shape {image.shape})")
    return image
