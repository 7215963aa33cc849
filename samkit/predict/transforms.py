"""Resizing of images and prompts to the model's input frame, exactly as SAM's reference does.

The NumPy/Pillow parts live in the torch-free :mod:`samkit.geometry`; this module adds the
torch-tensor variants used by the torch predictor.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.input_spec import InputSpec
from .geometry import preprocess_shape, resize_longest_side, scale_coords_np

__all__ = [
    "preprocess_shape",
    "resize_longest_side",
    "resize_to_input",
    "scale_boxes",
    "scale_coords",
]


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


def resize_to_input(image_rgb: np.ndarray, spec: InputSpec, device: torch.device | str = "cpu"):
    """``H x W x 3`` uint8 RGB -> ``1 x 3 x h x w`` tensor resized as ``spec`` says, on its
    ``pixel_scale`` (not yet normalized or padded: ``Sam.preprocess`` does that).

    ``"longest"``: Pillow bilinear on uint8 (SAM v1's reference), a uint8 tensor for the
    0-255 scale; ``"square"``: divided by ``255 / pixel_scale`` in float32, then resized to
    ``S x S`` by bilinear interpolation with antialias (torchvision's ``Resize`` on tensors).
    """
    div = 255.0 / spec.pixel_scale
    if spec.resize == "longest":
        resized = resize_longest_side(image_rgb, spec.image_size)
        if not resized.flags.writeable:
            resized = resized.copy()
        x = torch.from_numpy(resized).to(device).permute(2, 0, 1).contiguous()[None]
        return x if div == 1.0 else x.float() / div
    x = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(device).permute(2, 0, 1)[None]
    x = x.float() / div
    size = (spec.image_size, spec.image_size)
    return F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)
