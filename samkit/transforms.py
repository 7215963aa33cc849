"""Resizing of images and prompts to the model's input frame, exactly as SAM's reference does."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Size ``(h, w)`` after scaling so that the longer side equals ``long_side`` (rounded)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an ``H x W x 3`` uint8 image with Pillow bilinear so its long side is ``long_side``."""
    h, w = image.shape[:2]
    new_h, new_w = preprocess_shape(h, w, long_side)
    if (new_h, new_w) == (h, w):
        return np.ascontiguousarray(image)
    resized = Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)
    return np.asarray(resized)


def scale_coords(
    coords: np.ndarray | torch.Tensor,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
) -> np.ndarray | torch.Tensor:
    """Map ``... x 2`` (x, y) pixel coordinates from the original image to the resized one."""
    sx = input_size[1] / original_size[1]
    sy = input_size[0] / original_size[0]
    if isinstance(coords, torch.Tensor):
        out = coords.to(torch.float32).clone()
        out[..., 0] = out[..., 0] * sx
        out[..., 1] = out[..., 1] * sy
        return out
    # The reference scales NumPy prompts in float64 before the cast to float32.
    out64 = np.array(coords, dtype=np.float64, copy=True)
    out64[..., 0] = out64[..., 0] * sx
    out64[..., 1] = out64[..., 1] * sy
    return out64.astype(np.float32)


def scale_boxes(
    boxes: np.ndarray | torch.Tensor,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
) -> np.ndarray | torch.Tensor:
    """Map ``... x 4`` XYXY boxes from the original image to the resized one."""
    shape = boxes.shape
    scaled = scale_coords(boxes.reshape(-1, 2, 2), original_size, input_size)
    return scaled.reshape(shape)
