"""Resizing of images and prompts to the model's input frame, exactly as SAM's reference does.

The NumPy/Pillow parts live in the torch-free :mod:`samkit.geometry`; this module adds the
torch-tensor variants used by the torch predictor.
"""

from __future__ import annotations

import numpy as np
import torch

from .geometry import preprocess_shape, resize_longest_side, scale_coords_np

__all__ = ["preprocess_shape", "resize_longest_side", "scale_boxes", "scale_coords"]


def scale_coords(
    coords: np.ndarray | torch.Tensor,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
) -> np.ndarray | torch.Tensor:
    """Map ``... x 2`` (x, y) pixel coordinates from the original image to the resized one."""
    if not isinstance(coords, torch.Tensor):
        # The reference scales NumPy prompts in float64 before the cast to float32.
        return scale_coords_np(coords, original_size, input_size)
    sx = input_size[1] / original_size[1]
    sy = input_size[0] / original_size[0]
    out = coords.to(torch.float32).clone()
    out[..., 0] = out[..., 0] * sx
    out[..., 1] = out[..., 1] * sy
    return out


def scale_boxes(
    boxes: np.ndarray | torch.Tensor,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
) -> np.ndarray | torch.Tensor:
    """Map ``... x 4`` XYXY boxes from the original image to the resized one."""
    shape = boxes.shape
    scaled = scale_coords(boxes.reshape(-1, 2, 2), original_size, input_size)
    return scaled.reshape(shape)
