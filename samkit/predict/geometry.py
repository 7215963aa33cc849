"""Torch-free image and prompt geometry: long-side resize, coordinate scaling, normalize + pad.

NumPy and Pillow only, so the onnxruntime predictor can use it where torch is not installed.
Every function reproduces SAM's reference pre-processing exactly (same rounding, same dtypes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..models.input_spec import SAM_PIXEL_MEAN as PIXEL_MEAN
from ..models.input_spec import SAM_PIXEL_STD as PIXEL_STD


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Size ``(h, w)`` after scaling so that the longer side equals ``long_side`` (rounded)."""
    scale = long_side * 1.0 / max(height, width)
    # at least 1 pixel: a 10000 x 1 image would otherwise round to an empty 1024 x 0 input
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an ``H x W x 3`` uint8 image with Pillow bilinear so its long side is ``long_side``."""
    h, w = image.shape[:2]
    new_h, new_w = preprocess_shape(h, w, long_side)
    if (new_h, new_w) == (h, w):
        return np.ascontiguousarray(image)
    resized = Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)
    return np.array(resized)  # writable, so torch.as_tensor can share it


def scale_coords_np(
    coords: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
    """Map ``... x 2`` (x, y) pixel coordinates from the original image to the resized one.

    Computed in float64 and returned as float32, like the reference does for NumPy prompts.
    """
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * (input_size[1] / original_size[1])
    out[..., 1] = out[..., 1] * (input_size[0] / original_size[0])
    return out.astype(np.float32)


def scale_boxes_np(
    boxes: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
    """Map ``... x 4`` XYXY boxes from the original image to the resized one (float32)."""
    shape = np.shape(boxes)
    return scale_coords_np(np.reshape(boxes, (-1, 2, 2)), original_size, input_size).reshape(shape)


def normalize_and_pad(
    resized: np.ndarray,
    size: int,
    mean: Sequence[float] = PIXEL_MEAN,
    std: Sequence[float] = PIXEL_STD,
) -> np.ndarray:
    """``h x w x 3`` uint8 (long side ``size``) -> ``1 x 3 x size x size`` float32 model input.

    ``(pixel - mean) / std`` in float32, then zero-padded at the bottom and right, as
    ``Sam.preprocess`` does.
    """
    h, w = resized.shape[:2]
    if max(h, w) > size:
        raise ValueError(f"image of size {h} x {w} is larger than the model input {size}")
    x = resized.astype(np.float32).transpose(2, 0, 1)
    x = (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[
        :, None, None
    ]
    out = np.zeros((1, 3, size, size), dtype=np.float32)
    out[0, :, :h, :w] = x
    return out
