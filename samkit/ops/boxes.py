"""Box conversions, IoU and mask-to-box, over torch tensors or numpy arrays.

Box formats (all in pixels, last dimension of size 4):

* XYXY: ``(x1, y1, x2, y2)``, top-left and bottom-right corners.
* XYWH: ``(x, y, w, h)``, top-left corner plus width and height (COCO ``bbox``).

Conversions are plain arithmetic (``w = x2 - x1``) and do not care whether ``x2`` is an
exclusive edge or an inclusive pixel index. :func:`masks_to_boxes_xyxy` returns *inclusive*
pixel indices, exactly like Meta's ``batched_mask_to_box``.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "box_area",
    "box_iou",
    "clip_boxes",
    "mask_to_box_xyxy",
    "masks_to_boxes_xyxy",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def _check_boxes(boxes: torch.Tensor | np.ndarray, name: str = "boxes") -> None:
    if not isinstance(boxes, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or np.ndarray, got {type(boxes).__name__}")
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(boxes.shape)}")


def _stack(parts: list, like: torch.Tensor | np.ndarray):
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)


def xyxy_to_xywh(boxes: ArrayT) -> ArrayT:
    """Convert (..., 4) XYXY boxes to XYWH (``w = x2 - x1``, ``h = y2 - y1``).

    Accepts a torch tensor or numpy array and returns the same type and dtype.
    """
    _check_boxes(boxes)
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    return _stack([x1, y1, x2 - x1, y2 - y1], boxes)


def xywh_to_xyxy(boxes: ArrayT) -> ArrayT:
    """Convert (..., 4) XYWH boxes to XYXY (``x2 = x + w``, ``y2 = y + h``).

    Accepts a torch tensor or numpy array and returns the same type and dtype.
    """
    _check_boxes(boxes)
    x, y, w, h = (boxes[..., i] for i in range(4))
    return _stack([x, y, x + w, y + h], boxes)


def clip_boxes(boxes_xyxy: ArrayT, height: int, width: int) -> ArrayT:
    """Clamp (..., 4) XYXY pixel boxes to the image: x into ``[0, width]``, y into ``[0, height]``.

    Returns a new tensor/array of the same type and dtype; the input is not modified.
    """
    _check_boxes(boxes_xyxy, "boxes_xyxy")
    x1, y1, x2, y2 = (boxes_xyxy[..., i] for i in range(4))
    if isinstance(boxes_xyxy, torch.Tensor):
        parts = [
            x1.clamp(0, width),
            y1.clamp(0, height),
            x2.clamp(0, width),
            y2.clamp(0, height),
        ]
    else:
        parts = [np.clip(x1, 0, width), np.clip(y1, 0, height)]
        parts += [np.clip(x2, 0, width), np.clip(y2, 0, height)]
        parts = [p.astype(boxes_xyxy.dtype, copy=False) for p in parts]
    return _stack(parts, boxes_xyxy)


def box_area(boxes_xyxy: ArrayT) -> ArrayT:
    """Area ``(x2 - x1) * (y2 - y1)`` of (..., 4) XYXY boxes, shape (...).

    Degenerate boxes (``x2 < x1`` or ``y2 < y1``) have area 0.
    """
    _check_boxes(boxes_xyxy, "boxes_xyxy")
    w = boxes_xyxy[..., 2] - boxes_xyxy[..., 0]
    h = boxes_xyxy[..., 3] - boxes_xyxy[..., 1]
    if isinstance(boxes_xyxy, torch.Tensor):
        return w.clamp(min=0) * h.clamp(min=0)
    return np.maximum(w, 0) * np.maximum(h, 0)


def box_iou(a: ArrayT, b: ArrayT) -> ArrayT:
    """Pairwise IoU of XYXY boxes ``a`` (N, 4) and ``b`` (M, 4); returns (N, M) floats.

    Pairs whose union is empty (both boxes degenerate) get IoU 0 rather than NaN.
    Both inputs must be of the same kind (torch or numpy).
    """
    _check_boxes(a, "a")
    _check_boxes(b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"box_iou needs 2-D inputs, got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
        raise TypeError("box_iou: a and b must both be torch tensors or both numpy arrays")
    if isinstance(a, torch.Tensor):
        dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
        a, b = a.to(dtype), b.to(dtype)
        lt = torch.maximum(a[:, None, :2], b[None, :, :2])
        rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        union = box_area(a)[:, None] + box_area(b)[None, :] - inter
        return torch.where(union > 0, inter / union.clamp(min=torch.finfo(dtype).tiny), 0.0)
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.maximum(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def masks_to_boxes_xyxy(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of bool masks (..., H, W); returns int64 (..., 4).

    Right/bottom are *inclusive* pixel indices (``x2`` is the largest column that is True), as
    in Meta's ``batched_mask_to_box``. Empty masks give ``[0, 0, 0, 0]``.
    """
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    if masks.ndim < 2:
        raise ValueError(f"masks must have shape (..., H, W), got {tuple(masks.shape)}")
    masks = masks.bool()
    h, w = masks.shape[-2:]
    lead = masks.shape[:-2]
    if h == 0 or w == 0:
        return torch.zeros((*lead, 4), dtype=torch.int64, device=masks.device)
    # max over a uint8 view: much faster than bool any() on the CPU
    flags = masks.view(torch.uint8)
    cols = flags.amax(dim=-2) > 0  # (..., W)
    rows = flags.amax(dim=-1) > 0  # (..., H)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x2 = torch.where(cols, xs, -1).amax(dim=-1)
    y2 = torch.where(rows, ys, -1).amax(dim=-1)
    x1 = torch.where(cols, xs, w).amin(dim=-1)
    y1 = torch.where(rows, ys, h).amin(dim=-1)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    empty = ~cols.any(dim=-1)
    return torch.where(empty[..., None], 0, boxes).to(torch.int64)


def mask_to_box_xyxy(mask: np.ndarray) -> np.ndarray:
    """Tight XYXY box of one HxW numpy mask as int64 (4,), inclusive right/bottom.

    Empty masks give ``[0, 0, 0, 0]``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    mask = mask.astype(bool, copy=False)
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return np.zeros(4, dtype=np.int64)
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.int64)
