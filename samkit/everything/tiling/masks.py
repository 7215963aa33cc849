"""Masks of a large image kept cropped to their boxes, and the seam merge of tiled masks.

A :class:`CroppedMasks` holds one bool crop per mask plus its box in image pixels, so memory
grows with the objects' areas, never with the image's. :func:`merge_tiled` joins the masks that
tiles of one image found for the same object: two masks from overlapping tiles are the same
object when they agree inside the band the two tiles share (mask IoU within the band, not box
overlap); a group's mask is the union of its members. Fragments (masks cut by a tile edge that
lie inside a larger mask) and duplicates are removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ...ops.rle import _counts_to_string

__all__ = ["CroppedMasks", "crop_to_coco_rle", "match_masks", "merge_tiled"]


def crop_to_coco_rle(
    crop: np.ndarray, x0: int, y0: int, height: int, width: int
) -> dict[str, object]:
    """Compressed COCO RLE of an ``height x width`` mask that is zero outside ``crop`` (placed
    with its top-left pixel at ``(x0, y0)``), computed without building the full mask."""
    ct = np.zeros((crop.shape[1], crop.shape[0] + 2), np.int8)
    ct[:, 1:-1] = crop.T
    d = np.diff(ct, axis=1)
    sc, sy = np.nonzero(d == 1)  # sorted by column, then row: column-major order
    ec, ey = np.nonzero(d == -1)
    starts = (x0 + sc).astype(np.int64) * height + y0 + sy
    ends = (x0 + ec).astype(np.int64) * height + y0 + ey
    if len(starts) > 1:  # runs that continue into the next column (crop of full height)
        join = starts[1:] == ends[:-1]
        starts = np.concatenate([starts[:1], starts[1:][~join]])
        ends = np.concatenate([ends[:-1][~join], ends[-1:]])
    total = height * width
    if len(starts) == 0:
        counts = [total]
    else:
        runs = np.empty(2 * len(starts) + 1, np.int64)
        runs[0] = starts[0]
        runs[1::2] = ends - starts
        runs[2:-1:2] = starts[1:] - ends[:-1]
        runs[-1] = total - ends[-1]
        counts = runs.tolist()
        if counts[-1] == 0:
            counts.pop()
    return {"size": [int(height), int(width)], "counts": _counts_to_string(counts)}


@dataclass
class CroppedMasks:
    """``N`` masks of an ``H x W`` image, each a bool crop inside its box.

    Attributes:
        image_size: ``(H, W)``. boxes: ``N x 4`` int64 XYXY, exclusive (``crops[i]`` is
        ``y1 - y0`` x ``x1 - x0``). crops: list of 2-D bool arrays. scores: ``N`` float32
        (predicted IoU). stability: ``N`` float32 or None. points: ``N x 2`` float64 (x, y)
        prompt point of each mask (NaN when it came from a box). prompt_index: ``N`` int64
        (the prompt each mask answers; ``arange`` for segment-everything). tiles: ``N`` int64,
        how many tiles a mask was seen in (after the seam merge).
    """

    image_size: tuple[int, int]
    boxes: np.ndarray
    crops: list[np.ndarray]
    scores: np.ndarray
    stability: np.ndarray | None = None
    points: np.ndarray | None = None
    prompt_index: np.ndarray | None = None
    tiles: np.ndarray | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.crops)
        self.boxes = np.asarray(self.boxes, np.int64).reshape(n, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(n)
        for i, (c, b) in enumerate(zip(self.crops, self.boxes)):
            if c.shape != (b[3] - b[1], b[2] - b[0]):
                raise ValueError(f"crop {i} has shape {c.shape}, its box {b.tolist()} says other")
        if self.prompt_index is None:
            self.prompt_index = np.arange(n, dtype=np.int64)
        if self.tiles is None:
            self.tiles = np.ones(n, np.int64)
        if self.points is None:
            self.points = np.full((n, 2), np.nan)

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def areas(self) -> np.ndarray:
        """``N`` int64 mask areas in pixels."""
        return np.array([int(c.sum()) for c in self.crops], np.int64)

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """``N x 4`` float32 tight inclusive XYXY boxes (the convention of ``Results.boxes``)."""
        out = np.zeros((len(self), 4), np.float32)
        for i, (c, b) in enumerate(zip(self.crops, self.boxes)):
            ys, xs = np.nonzero(c.any(1))[0], np.nonzero(c.any(0))[0]
            if len(ys):
                out[i] = (b[0] + xs[0], b[1] + ys[0], b[0] + xs[-1], b[1] + ys[-1])
        return out

    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as a full ``H x W`` bool array."""
        h, w = self.image_size
        out = np.zeros((h, w), bool)
        x0, y0, x1, y1 = self.boxes[i]
        out[y0:y1, x0:x1] = self.crops[i]
        return out

    def dense(self, max_bytes: int = 2**31) -> np.ndarray:
        """All masks as ``N x H x W`` bool (refuses more than ``max_bytes``)."""
        h, w = self.image_size
        need = len(self) * h * w
        if need > max_bytes:
            raise MemoryError(
                f"{len(self)} full-size masks of {w} x {h} need {need / 2**30:.1f} GiB (limit "
                f"{max_bytes / 2**30:.1f} GiB); use the cropped masks, to_records() or the "
                "raster/vector writers instead"
            )
        out = np.zeros((len(self), h, w), bool)
        for i, (c, (x0, y0, x1, y1)) in enumerate(zip(self.crops, self.boxes)):
            out[i, y0:y1, x0:x1] = c
        return out

    def to_coco_rle(self) -> list[dict[str, object]]:
        """Compressed COCO RLE per mask (same format as ``Results.to_coco_rle``)."""
        h, w = self.image_size
        return [crop_to_coco_rle(c, b[0], b[1], h, w) for c, b in zip(self.crops, self.boxes)]

    def records(self) -> Iterator[dict[str, object]]:
        """One record per mask, the entries of ``Results.to_dict()["masks"]``."""
        h, w = self.image_size
        areas, boxes = self.areas, self.boxes_xyxy
        for i, (c, b) in enumerate(zip(self.crops, self.boxes)):
            rec = {
                "id": i,
                "prompt_index": int(self.prompt_index[i]),
                "score": float(self.scores[i]),
                "bbox_xyxy": [float(v) for v in boxes[i]],
                "area": int(areas[i]),
                "segmentation": crop_to_coco_rle(c, b[0], b[1], h, w),
            }
            if self.stability is not None:
                rec["stability_score"] = float(self.stability[i])
            yield rec

    def take(self, idx) -> CroppedMasks:
        idx = np.asarray(idx, np.int64).reshape(-1)
        return CroppedMasks(
            self.image_size,
            self.boxes[idx],
            [self.crops[i] for i in idx],
            self.scores[idx],
            None if self.stability is None else self.stability[idx],
            self.points[idx],
            self.prompt_index[idx],
            self.tiles[idx],
            dict(self.stats),
        )

    def sorted_by_area(self) -> CroppedMasks:
        """Largest first (the order of ``segment_everything``), stable."""
        return self.take(np.argsort(-self.areas, kind="stable"))

    def label_band(self, y0: int, y1: int, dtype=np.uint32) -> np.ndarray:
        """Rows ``y0:y1`` of an instance label image (0 = none, ``i + 1`` = mask i); smaller
        masks are painted over larger ones."""
        h, w = self.image_size
        out = np.zeros((y1 - y0, w), dtype)
        b = self.boxes
        hit = np.flatnonzero((b[:, 1] < y1) & (b[:, 3] > y0))
        for i in hit[np.argsort(-self.areas[hit], kind="stable")]:
            x0, by0, x1, by1 = (int(v) for v in b[i])
            s0, s1 = max(by0, y0), min(by1, y1)
            part = self.crops[i][s0 - by0 : s1 - by0]
            out[s0 - y0 : s1 - y0, x0:x1][part] = i + 1
        return out


# -- the seam merge ------------------------------------------------------------------------------
def _intersect(a, b) -> tuple[int, int, int, int] | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _window(crop: np.ndarray, box, win) -> np.ndarray:
    """The part of a crop (placed at ``box``) inside ``win`` (zero-padded where absent)."""
    x0, y0, x1, y1 = win
    out = np.zeros((y1 - y0, x1 - x0), bool)
    r = _intersect(box, win)
    if r is not None:
        out[r[1] - y0 : r[3] - y0, r[0] - x0 : r[2] - x0] = crop[
            r[1] - box[1] : r[3] - box[1], r[0] - box[0] : r[2] - box[0]
        ]
    return out


def _pairs(boxes: np.ndarray, cell: int) -> Iterator[tuple[int, int]]:
    """Pairs ``i < j`` whose boxes intersect, found through a grid of ``cell`` px buckets."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        for gy in range(y0 // cell, (y1 - 1) // cell + 1):
            for gx in range(x0 // cell, (x1 - 1) // cell + 1):
                buckets.setdefault((gx, gy), []).append(i)
    seen = set()
    for members in buckets.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                i, j = members[a], members[b]
                if (i, j) in seen or _intersect(boxes[i], boxes[j]) is None:
                    continue
                seen.add((i, j))
                yield i, j


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def merge_tiled(
    masks: CroppedMasks,
    tile_of: np.ndarray,
    tile_boxes: np.ndarray,
    *,
    band_iou: float = 0.5,
    dedupe_iou: float = 0.7,
    fragment_cover: float = 0.8,
    cell: int = 256,
) -> CroppedMasks:
    """Merge masks that tiles found for the same object and remove duplicates.

    Args:
        masks: every tile's masks, in image pixels. tile_of: ``N`` the tile of each mask.
        tile_boxes: ``T x 4`` XYXY exclusive tile windows.
        band_iou: two masks of different, overlapping tiles are one object when their IoU
            restricted to the tiles' shared band is at least this (and both have pixels there).
        dedupe_iou: of two remaining masks with a mask IoU above this, the higher-scoring stays.
        fragment_cover: a mask cut by an inner tile edge (and not merged with a mask that goes
            on past it) is dropped when at least this fraction of it lies in a larger mask.

    Returns merged masks (``tiles`` counts the tiles each was seen in), largest first;
    ``stats`` has ``merged_pairs``, ``groups``, ``fragments_removed``, ``duplicates_removed``.
    """
    n = len(masks)
    h, w = masks.image_size
    boxes = masks.boxes
    tb = np.asarray(tile_boxes, np.int64)
    parent = list(range(n))
    merged_pairs = 0
    for i, j in _pairs(boxes, cell):
        ti, tj = int(tile_of[i]), int(tile_of[j])
        if ti == tj:
            continue
        band = _intersect(tb[ti], tb[tj])
        if band is None:
            continue
        a = _window(masks.crops[i], boxes[i], band)
        b = _window(masks.crops[j], boxes[j], band)
        inter = np.count_nonzero(a & b)
        union = np.count_nonzero(a | b)
        if union and inter >= band_iou * union:
            ri, rj = _find(parent, i), _find(parent, j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
                merged_pairs += 1
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(_find(parent, i), []).append(i)
    # a member is cut when its mask touches an edge of its tile inside the image
    cut = np.zeros(n, bool)
    for i in range(n):
        tx0, ty0, tx1, ty1 = tb[int(tile_of[i])]
        x0, y0, x1, y1 = boxes[i]
        c = masks.crops[i]
        cut[i] = (
            (x0 == tx0 and tx0 > 0 and c[:, 0].any())
            or (y0 == ty0 and ty0 > 0 and c[0].any())
            or (x1 == tx1 and tx1 < w and c[:, -1].any())
            or (y1 == ty1 and ty1 < h and c[-1].any())
        )
    g_boxes, g_crops, g_scores, g_stab, g_points, g_tiles, g_cut = [], [], [], [], [], [], []
    areas = masks.areas
    for members in groups.values():
        mb = boxes[members]
        box = (mb[:, 0].min(), mb[:, 1].min(), mb[:, 2].max(), mb[:, 3].max())
        crop = np.zeros((box[3] - box[1], box[2] - box[0]), bool)
        for k in members:
            x0, y0, x1, y1 = boxes[k]
            crop[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]] |= masks.crops[k]
        wgt = areas[members].astype(np.float64) + 1e-9
        g_boxes.append(box)
        g_crops.append(crop)
        g_scores.append(float(np.average(masks.scores[members], weights=wgt)))
        if masks.stability is not None:
            g_stab.append(float(np.average(masks.stability[members], weights=wgt)))
        best = members[int(np.argmax(areas[members]))]
        g_points.append(masks.points[best])
        g_tiles.append(len({int(tile_of[k]) for k in members}))
        # truncated: every tile that saw it cut it, so no tile saw it whole
        g_cut.append(bool(cut[members].all()))
    out = CroppedMasks(
        (h, w),
        np.asarray(g_boxes, np.int64).reshape(-1, 4),
        g_crops,
        np.asarray(g_scores, np.float32),
        np.asarray(g_stab, np.float32) if masks.stability is not None else None,
        np.asarray(g_points, np.float64).reshape(-1, 2),
        None,
        np.asarray(g_tiles, np.int64),
    )
    keep, fragments, duplicates = _dedupe(out, np.asarray(g_cut, bool), dedupe_iou, fragment_cover)
    out = out.take(keep).sorted_by_area()
    out.prompt_index = np.arange(len(out), dtype=np.int64)
    out.stats = {
        "merged_pairs": merged_pairs,
        "groups": len(groups),
        "fragments_removed": fragments,
        "duplicates_removed": duplicates,
    }
    return out


def _dedupe(
    m: CroppedMasks, truncated: np.ndarray, iou_thr: float, cover: float
) -> tuple[np.ndarray, int, int]:
    """Indices to keep: drop truncated fragments lying in larger masks, then mask-IoU NMS."""
    n = len(m)
    areas = m.areas
    drop = np.zeros(n, bool)
    fragments = duplicates = 0
    pairs = list(_pairs(m.boxes, 256))
    inter = {}
    for i, j in pairs:
        r = _intersect(m.boxes[i], m.boxes[j])
        a = _window(m.crops[i], m.boxes[i], r)
        b = _window(m.crops[j], m.boxes[j], r)
        inter[(i, j)] = np.count_nonzero(a & b)
    for (i, j), k in inter.items():
        for small, big in ((i, j), (j, i)):
            if truncated[small] and areas[big] > areas[small] and k >= cover * areas[small]:
                if not drop[small]:
                    fragments += 1
                drop[small] = True
    order = np.lexsort((-areas, -m.scores))  # higher score first, then larger
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    for (i, j), k in sorted(inter.items(), key=lambda kv: min(rank[kv[0][0]], rank[kv[0][1]])):
        if drop[i] or drop[j]:
            continue
        union = areas[i] + areas[j] - k
        if union and k > iou_thr * union:
            loser = j if rank[i] < rank[j] else i
            drop[loser] = True
            duplicates += 1
    return np.flatnonzero(~drop), fragments, duplicates


def match_masks(
    pred: CroppedMasks, truth: CroppedMasks, part: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Compare predicted with true masks of one image (both cropped).

    Returns per true mask ``(best mask IoU with any prediction, number of predictions that
    lie mostly inside it)``; a prediction lies mostly inside when at least ``part`` of its
    area is in the true mask (two or more mean the object came out in pieces or twice).
    """
    nt = len(truth)
    best = np.zeros(nt)
    pieces = np.zeros(nt, np.int64)
    if nt == 0 or len(pred) == 0:
        return best, pieces
    cell = 256
    buckets: dict[tuple[int, int], list[int]] = {}
    for j, (x0, y0, x1, y1) in enumerate(pred.boxes):
        for gy in range(y0 // cell, (y1 - 1) // cell + 1):
            for gx in range(x0 // cell, (x1 - 1) // cell + 1):
                buckets.setdefault((gx, gy), []).append(j)
    p_area = pred.areas
    t_area = truth.areas
    for i, tb in enumerate(truth.boxes):
        cand = set()
        for gy in range(tb[1] // cell, (tb[3] - 1) // cell + 1):
            for gx in range(tb[0] // cell, (tb[2] - 1) // cell + 1):
                cand.update(buckets.get((gx, gy), ()))
        for j in cand:
            r = _intersect(tb, pred.boxes[j])
            if r is None:
                continue
            k = np.count_nonzero(
                _window(truth.crops[i], tb, r) & _window(pred.crops[j], pred.boxes[j], r)
            )
            union = t_area[i] + p_area[j] - k
            if union:
                best[i] = max(best[i], k / union)
            if p_area[j] and k >= part * p_area[j]:
                pieces[i] += 1
    return best, pieces
