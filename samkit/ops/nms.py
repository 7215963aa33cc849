"""Non-maximum suppression in pure torch/numpy, with torchvision's semantics.

Boxes are XYXY in pixels. Semantics follow ``torchvision.ops.nms``: boxes are visited in
descending score order (stable sort, so equal scores keep their input order); a box is
suppressed when its IoU with an already kept box is strictly greater than ``iou_threshold``.
IoU is computed in the boxes' floating dtype with torchvision's formula
``inter / (area_i + area_j - inter)`` (areas not clamped; 0/0 is NaN and never suppresses).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["batched_nms", "nms"]


def _check(boxes: torch.Tensor, scores: torch.Tensor) -> None:
    if not isinstance(boxes, torch.Tensor) or not isinstance(scores, torch.Tensor):
        raise TypeError("boxes and scores must be torch tensors")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must have shape (N,) matching boxes, got {tuple(scores.shape)} "
            f"for {boxes.shape[0]} boxes"
        )


def _as_numpy_float(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype != torch.float64:
        # float16/bfloat16 have no exact numpy twin for bfloat16; torchvision computes half
        # boxes in float on CPU as well.
        t = t.to(torch.float32)
    return t.numpy()


def _threshold_below(iou_threshold: float, dtype: np.dtype) -> np.generic:
    """Largest value ``f`` of ``dtype`` with ``f <= iou_threshold``.

    For ``x`` of ``dtype``, ``x > iou_threshold`` (compared as doubles, like torchvision)
    holds exactly when ``x > f``, so the comparison can stay in ``dtype``.
    """
    f = dtype.type(iou_threshold)
    if float(f) > iou_threshold:
        f = np.nextafter(f, dtype.type(-np.inf))
    return f


def _suppression_block(
    coords: tuple[np.ndarray, ...], areas: np.ndarray, rows: np.ndarray, cols: np.ndarray, thr
) -> np.ndarray:
    """``IoU(rows, cols) > thr`` as a (len(rows), len(cols)) bool matrix, torchvision's formula.

    Written with in-place ops to limit temporaries; the arithmetic order is that of
    ``inter / (area_i + area_j - inter)``.
    """
    x1, y1, x2, y2 = coords
    r, c = rows[:, None], cols[None, :]
    w = np.minimum(x2[r], x2[c])
    w -= np.maximum(x1[r], x1[c])
    np.maximum(w, 0, out=w)
    h = np.minimum(y2[r], y2[c])
    h -= np.maximum(y1[r], y1[c])
    np.maximum(h, 0, out=h)
    w *= h  # intersection
    union = np.add(areas[r], areas[c], out=h)
    union -= w
    np.divide(w, union, out=w)
    return np.greater(w, thr)


def _greedy(boxes: np.ndarray, iou_threshold: float, block_elems: int = 1 << 22) -> np.ndarray:
    """Greedy NMS over boxes already sorted by descending score; returns kept positions.

    Rows are taken in blocks: the "IoU > threshold" matrix of the block's still-alive boxes
    against all later still-alive boxes is computed at once, then the greedy pass over the
    block only ORs bool rows.
    """
    n = boxes.shape[0]
    thr = _threshold_below(iou_threshold, boxes.dtype)
    coords = tuple(np.ascontiguousarray(boxes[:, i]) for i in range(4))
    x1, y1, x2, y2 = coords
    areas = (x2 - x1) * (y2 - y1)
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    block = int(min(256, max(16, block_elems // max(n, 1))))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for r0 in range(0, n, block):
            # Alive boxes from r0 on; the block's alive rows are the first ones of them.
            cols = np.flatnonzero(~removed[r0:]) + r0
            n_rows = int(np.count_nonzero(cols < r0 + block))
            if n_rows == 0:
                continue
            sup = _suppression_block(coords, areas, cols[:n_rows], cols, thr)
            dead = np.zeros(cols.size, dtype=bool)
            for k in range(n_rows):
                if dead[k]:
                    continue
                keep.append(int(cols[k]))
                dead |= sup[k]  # also flags k itself and earlier rows: already decided
            removed[cols[dead]] = True
    return np.asarray(keep, dtype=np.int64)


def nms(boxes_xyxy: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression of (N, 4) XYXY boxes with (N,) scores.

    Returns the int64 indices (into the input) of kept boxes, sorted by descending score.
    Empty input gives an empty int64 tensor. Same results as ``torchvision.ops.nms``.
    """
    _check(boxes_xyxy, scores)
    device = boxes_xyxy.device
    if boxes_xyxy.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    sorted_boxes = _as_numpy_float(boxes_xyxy[order])
    kept = torch.from_numpy(_greedy(sorted_boxes, float(iou_threshold)))
    return order.cpu()[kept].to(device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS per category: boxes with different ``idxs`` (N,) never suppress each other.

    ``boxes`` are (N, 4) XYXY. Each category is shifted by its own offset so categories cannot
    overlap (the coordinate-offset trick), then a single :func:`nms` runs. The offset step is
    ``max(max_coord, max_coord - min_coord) + 1``: identical to torchvision's
    ``max_coord + 1`` for non-negative coordinates, and still separating when some are
    negative. Returns int64 indices sorted by descending score.
    """
    _check(boxes, scores)
    if idxs.ndim != 1 or idxs.shape[0] != boxes.shape[0]:
        raise ValueError(f"idxs must have shape (N,) matching boxes, got {tuple(idxs.shape)}")
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.detach()
    if not boxes.is_floating_point():
        boxes = boxes.to(torch.float32)
    max_coord = boxes.max()
    step = torch.maximum(max_coord, max_coord - boxes.min()) + 1
    offsets = idxs.to(boxes) * step
    return nms(boxes + offsets[:, None], scores, iou_threshold)
