"""Plain helpers of automatic mask generation ("segment everything").

Point grids, crop boxes, the stability score, the crop-edge test and the uncrop transforms,
with the semantics of Meta's reference generator. Boxes are XYXY pixels unless a name says
otherwise; crop boxes are ``[x0, y0, x1, y1]`` with exclusive ``x1, y1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "batch_iterator",
    "build_all_layer_point_grids",
    "build_point_grid",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "stability_score",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n*n x 2`` float64 (x, y) points in [0, 1]: cell centres ``(i + 0.5) / n``.

    Row-major: y is the outer index, x the inner one. ``n = 0`` gives no points (a crop layer
    whose grid was downscaled to nothing).
    """
    if n_per_side < 0:
        raise ValueError(f"n_per_side must be >= 0, got {n_per_side}")
    if n_per_side == 0:
        return np.zeros((0, 2), dtype=np.float64)
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1.0 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """One grid per crop layer ``0..n_layers``; layer i has ``int(n / scale**i)`` points a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, exclusive right/bottom) and their layer indices.

    Layer 0 is the whole image; layer i >= 1 has ``2**i x 2**i`` overlapping crops, listed with
    x0 as the outer loop and y0 as the inner one. The overlap of layer i is
    ``int(overlap_ratio * short_side * 2 / 2**i)`` pixels.
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layers = [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_side))
        crop_w = crop_len(im_w, n_side, overlap)
        crop_h = crop_len(im_h, n_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def stability_score(
    logits: torch.Tensor, mask_threshold: float, threshold_offset: float
) -> torch.Tensor:
    """IoU of ``logits > thr + offset`` and ``logits > thr - offset`` for ``... x H x W`` logits.

    The first mask lies inside the second, so the IoU is the ratio of their pixel counts
    (float32; 0/0 gives NaN, as in the reference).
    """
    inter = (logits > (mask_threshold + threshold_offset)).sum((-1, -2), dtype=torch.int32)
    union = (logits > (mask_threshold - threshold_offset)).sum((-1, -2), dtype=torch.int32)
    return inter / union


def is_box_near_crop_edge(
    boxes_xyxy: torch.Tensor,
    crop_box: Sequence[int],
    orig_box: Sequence[int],
    atol: float = 20.0,
) -> torch.Tensor:
    """``N`` bools: a box (crop frame) lies within ``atol`` px of a crop edge that is not an
    image edge.

    ``boxes_xyxy`` (N, 4) are in the crop's frame; ``crop_box`` and ``orig_box`` (the image,
    ``[0, 0, W, H]``) are in the image frame.
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes_xyxy.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes_xyxy.device)
    boxes = uncrop_boxes_xyxy(boxes_xyxy, crop_box).float()
    near_crop = torch.isclose(boxes, crop[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None, :], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def uncrop_boxes_xyxy(boxes_xyxy: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift ``... x 4`` XYXY boxes from a crop's frame to the image frame."""
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    offset = torch.tensor([x0, y0, x0, y0], device=boxes_xyxy.device)
    return boxes_xyxy + offset


def uncrop_points(points: torch.Tensor | np.ndarray, crop_box: Sequence[int]):
    """Shift ``... x 2`` (x, y) points from a crop's frame to the image frame."""
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    if isinstance(points, torch.Tensor):
        return points + torch.tensor([x0, y0], device=points.device)
    return np.asarray(points) + np.array([x0, y0])


def uncrop_masks(
    masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int
) -> torch.Tensor:
    """Zero-pad ``... x h x w`` crop masks to the ``orig_h x orig_w`` image frame."""
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    return F.pad(masks, (x0, orig_w - x1, y0, orig_h - y1), value=0)


def batch_iterator(batch_size: int, *arrays: Any) -> Iterator[list[Any]]:
    """Yield ``[a[i:i + batch_size] for a in arrays]`` over equal-length sequences.

    The last batch may be shorter; nothing is yielded for empty inputs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not arrays or any(len(a) != len(arrays[0]) for a in arrays):
        raise ValueError("batch_iterator needs one or more sequences of the same length")
    n = len(arrays[0])
    for start in range(0, n, batch_size):
        yield [a[start : start + batch_size] for a in arrays]
