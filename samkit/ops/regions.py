"""Clean-up of small connected regions in binary masks (SAM's mask post-processing)."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch

__all__ = ["fill_holes_and_sprinkles", "remove_small_regions"]


def remove_small_regions(
    mask: np.ndarray | torch.Tensor,
    area_thresh: float,
    mode: Literal["holes", "islands"],
) -> tuple[np.ndarray, bool]:
    """Fill small holes or remove small islands of an (H, W) mask; returns (bool mask, changed).

    Components are 8-connected and a component is *small* when its pixel count is strictly
    below ``area_thresh``.

    * ``"holes"``: small connected components of the background (``~mask``) are set to True.
      Any small background component counts, including one touching the image border.
    * ``"islands"``: small components of the foreground are set to False. If every
      component is small, the largest one is kept.

    ``changed`` is False (and the input returned as a bool array) when there was nothing small.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    if mask.size == 0:
        return mask, False

    fill_holes = mode == "holes"
    work = (mask != fill_holes).astype(np.uint8)  # background for holes, foreground otherwise
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]  # label 0 is what `work` calls background
    small = np.flatnonzero(areas < area_thresh) + 1
    if small.size == 0:
        return mask, False

    if fill_holes:
        # Keep label 0 (the original foreground) and turn the small holes on.
        keep = np.zeros(n_labels, dtype=bool)
        keep[0] = True
        keep[small] = True
    else:
        keep = np.ones(n_labels, dtype=bool)
        keep[0] = False
        keep[small] = False
        if not keep.any():
            keep[int(np.argmax(areas)) + 1] = True
    return keep[labels], True


def _small_components(binary: np.ndarray, max_area: float) -> np.ndarray:
    """Pixels of ``binary`` (H, W) in 8-connected components of at most ``max_area`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    small = np.zeros(n, dtype=bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] <= max_area
    return small[labels]


def fill_holes_and_sprinkles(
    logits: torch.Tensor,
    threshold: float = 0.0,
    max_hole_area: float = 0.0,
    max_sprinkle_area: float = 0.0,
) -> torch.Tensor:
    """SAM 2's mask clean-up on ``... x H x W`` logits (what its CUDA-only kernel intends).

    Background components (``logits <= threshold``, 8-connected) of at most ``max_hole_area``
    pixels become ``threshold + 10``; foreground components (``> threshold``) of at most
    ``max_sprinkle_area`` pixels become ``threshold - 10``. Both are found on the input logits
    (as the reference does), so a filled hole is never removed again as a speck. 0 disables a step.
    """
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    flat = logits.detach().float().reshape(-1, *logits.shape[-2:]).cpu().numpy()
    out = flat.copy()
    for i, m in enumerate(flat):
        fg = m > threshold
        if max_hole_area > 0:
            out[i][_small_components(~fg, max_hole_area)] = threshold + 10.0
        if max_sprinkle_area > 0:
            out[i][_small_components(fg, max_sprinkle_area)] = threshold - 10.0
    return torch.from_numpy(out).reshape(logits.shape).to(logits.device, logits.dtype)
