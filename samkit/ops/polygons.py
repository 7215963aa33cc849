"""Mask <-> polygon conversion with OpenCV, and merging parts into one YOLO-style polygon.

Polygons are float32 arrays of shape (K, 2) holding ``(x, y)`` pixel coordinates, where pixel
``(col, row)`` has its centre at ``x = col, y = row`` (OpenCV's contour convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # torch tensors are accepted but torch is not imported (torch-free module)
    import torch

__all__ = ["mask_to_polygons", "merge_polygons", "normalize_polygon", "polygons_to_mask"]


def _as_uint8_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    if hasattr(mask, "detach"):  # a torch tensor
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    return np.ascontiguousarray(mask.astype(bool, copy=False), dtype=np.uint8)


def mask_to_polygons(mask: np.ndarray | torch.Tensor, holes: bool = False) -> list[np.ndarray]:
    """Outer contours of every part of an (H, W) mask as float32 (K, 2) xy pixel polygons.

    Uses ``cv2.findContours`` with ``CHAIN_APPROX_SIMPLE`` (only corners of straight runs are
    kept; ``polygons_to_mask`` of the result re-creates the part exactly). Parts whose
    contour has fewer than 3 points (1-pixel specks, 1-pixel-wide straight lines) are dropped.

    With ``holes=False`` (default, ``RETR_EXTERNAL``) holes are not represented: re-rasterizing
    fills them. With ``holes=True`` (``RETR_CCOMP``) each part's holes are joined into its
    outer polygon by zero-width bridges (see :func:`merge_polygons`), so re-rasterizing keeps
    the holes open up to the 1-pixel-wide bridge lines.
    """
    m = _as_uint8_mask(mask)
    if m.size == 0:
        return []
    mode = cv2.RETR_CCOMP if holes else cv2.RETR_EXTERNAL
    contours, hierarchy = cv2.findContours(m, mode, cv2.CHAIN_APPROX_SIMPLE)
    polys = [c.reshape(-1, 2).astype(np.float32) for c in contours]
    if not holes or hierarchy is None:
        return [p for p in polys if len(p) >= 3]
    # hierarchy rows: [next, previous, first_child, parent]; with RETR_CCOMP holes are the
    # children of outer contours.
    hier = hierarchy.reshape(-1, 4)
    out = []
    for i, poly in enumerate(polys):
        if hier[i, 3] != -1 or len(poly) < 3:
            continue
        parts = [poly]
        child = hier[i, 2]
        while child != -1:
            if len(polys[child]) >= 3:
                parts.append(polys[child])
            child = hier[child, 0]
        out.append(merge_polygons(parts) if len(parts) > 1 else poly)
    return out


def polygons_to_mask(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterize xy pixel polygons (each (K, 2)) into a bool (height, width) mask.

    Each polygon is filled (boundary included) with ``cv2.fillPoly`` on its own, so overlapping
    polygons give their union. Coordinates are rounded to the nearest pixel.
    """
    out = np.zeros((int(height), int(width)), dtype=np.uint8)
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(p) == 0:
            continue
        cv2.fillPoly(out, [np.round(p).astype(np.int32)], 1)
    return out.astype(bool)


def merge_polygons(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Join several polygons into a single (K, 2) float32 polygon (one YOLO line per object).

    Like Ultralytics' segment merging, parts are connected at their closest points by
    zero-width bridges that are walked there and back: the path goes around a part, detours
    across a bridge, goes fully around the next part and comes back the same way. Parts are
    linked along a minimum spanning tree of closest-point distances, which keeps bridges short.
    The first polygon's first point starts the result. Empty parts are ignored.
    """
    parts = [np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in polygons]
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros((0, 2), dtype=np.float32)
    if len(parts) == 1:
        return parts[0].copy()

    n = len(parts)
    sizes = np.array([len(p) for p in parts])
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    allpts = np.concatenate(parts).astype(np.float64)
    owner = np.repeat(np.arange(n), sizes)

    # Prim's algorithm over parts; distance between parts = closest pair of points.
    in_tree = np.zeros(n, dtype=bool)
    best_d = np.full(n, np.inf)
    best_from = np.zeros(n, dtype=np.int64)  # global index of the tree-side point
    best_to = np.zeros(n, dtype=np.int64)  # global index of the point in the outside part
    children: list[dict[int, list[tuple[int, int]]]] = [{} for _ in range(n)]

    lo = np.stack([allpts[offsets[i] : offsets[i + 1]].min(0) for i in range(n)])  # (n, 2)
    hi = np.stack([allpts[offsets[i] : offsets[i + 1]].max(0) for i in range(n)])

    def add(part: int) -> None:
        in_tree[part] = True
        # A part whose bounding box is no closer than its current link cannot get a shorter
        # one: skip it. Same result as measuring every point, without the quadratic cost for
        # masks made of thousands of specks.
        gap = np.maximum(0.0, np.maximum(lo - hi[part], lo[part] - hi))
        near = np.flatnonzero(~in_tree & ((gap**2).sum(1) < best_d))
        if near.size == 0:
            return
        counts = sizes[near]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        segment = np.repeat(np.arange(near.size), counts)
        idx = np.arange(int(counts.sum())) + np.repeat(offsets[near] - starts, counts)
        pts = allpts[offsets[part] : offsets[part + 1]]
        dx = pts[:, None, 0] - allpts[idx, 0]
        dy = pts[:, None, 1] - allpts[idx, 1]
        d2 = dx * dx + dy * dy  # (K_part, T_near)
        rows = d2.argmin(axis=0)
        dmin = d2[rows, np.arange(idx.size)]
        part_min = np.minimum.reduceat(dmin, starts)
        closer = part_min < best_d[near]  # only parts that got closer are updated
        if not closer.any():
            return
        hits = np.flatnonzero((dmin == part_min[segment]) & closer[segment])
        _, first = np.unique(segment[hits], return_index=True)  # first closest point per part
        at = hits[first]
        q = near[segment[at]]
        best_d[q] = dmin[at]
        best_to[q] = idx[at]
        best_from[q] = offsets[part] + rows[at]

    add(0)
    for _ in range(n - 1):
        cand = np.where(in_tree, np.inf, best_d)
        q = int(cand.argmin())
        src = int(best_from[q])
        parent = int(owner[src])
        children[parent].setdefault(src - int(offsets[parent]), []).append(
            (q, int(best_to[q] - offsets[q]))
        )
        add(q)

    # Walk the tree without recursion. A frame is [part, start, step, next_child]; a
    # non-root part is walked all the way round back to its start point.
    out: list[np.ndarray] = []
    stack = [[0, 0, 0, 0]]
    while stack:
        frame = stack[-1]
        part, start, step, nxt = frame
        k = len(parts[part])
        total = k if len(stack) == 1 else k + 1
        if step == total:
            stack.pop()
            if stack:  # walk back over the bridge to the parent's point
                par = stack[-1]
                out.append(parts[par[0]][(par[1] + par[2]) % len(parts[par[0]])])
            continue
        j = (start + step) % k
        if nxt == 0:
            out.append(parts[part][j])
        kids = children[part].get(j, []) if step < k else []
        if nxt < len(kids):
            frame[3] += 1
            child, child_start = kids[nxt]
            stack.append([child, child_start, 0, 0])
        else:
            frame[2] += 1
            frame[3] = 0
    return np.asarray(out, dtype=np.float32).reshape(-1, 2)


def normalize_polygon(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale an xy pixel polygon (K, 2) to normalized xyn in 0..1 (x / width, y / height).

    Returns float32 (K, 2), clipped to [0, 1].
    """
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}, {width}")
    scaled = p / np.array([width, height], dtype=np.float64)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)
