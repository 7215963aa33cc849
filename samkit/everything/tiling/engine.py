"""Tiled segmentation of large images: native-resolution tiles, bounded memory, seam merge.

:func:`segment_everything_tiled` cuts the image into overlapping ``tile x tile`` windows (the
model's input size by default, so nothing is downscaled), reads them a row of tiles at a time
from the source, encodes them in batches, runs the segment-everything engine on each, keeps
every mask cropped to its box and merges the masks of one object across seams
(:func:`samkit.everything.tiling.masks.merge_tiled`). :func:`predict_tiled` routes box and point prompts to
a window around each of them (native resolution when the prompt fits in a tile, a larger
window, downscaled by the model, when a box is bigger than a tile).

Memory: one row of tiles (``tile x W x 3`` bytes) plus the cropped masks; never ``H x W``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ...errors import PromptError, SamkitError
from ...predict.sam_predictor import SamPredictor
from ..segment import segment_everything
from .masks import CroppedMasks, merge_tiled
from .raster import as_raster

__all__ = ["predict_tiled", "segment_everything_tiled", "tile_grid"]


def _sam_module(model: Any):
    """The ``Sam`` module of a :class:`~samkit.SAM`, a Predictor or a ``Sam`` itself."""
    inner = getattr(model, "model", None)
    if isinstance(inner, torch.nn.Module):
        return inner
    if isinstance(model, torch.nn.Module):
        return model
    raise SamkitError(f"expected a samkit SAM model or Sam module, got {type(model).__name__}")


def resolve_tile(model: Any, tile: int | bool | None, overlap: int | None) -> tuple[int, int]:
    """``(tile, overlap)`` in pixels: ``tile=True``/None = the model's input size; overlap
    defaults to a quarter of the tile."""
    size = int(_sam_module(model).image_size)
    t = size if tile is None or tile is True else int(tile)
    o = t // 4 if overlap is None else int(overlap)
    if t < 32:
        raise SamkitError(f"tile must be >= 32 pixels, got {tile!r}")
    if not 0 <= o < t:
        raise SamkitError(f"overlap must be in [0, tile) = [0, {t}), got {overlap!r}")
    return t, o


def _starts(n: int, tile: int, stride: int) -> list[int]:
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, stride))
    return s + [n - tile]


def tile_grid(height: int, width: int, tile: int, overlap: int) -> np.ndarray:
    """``T x 4`` int64 XYXY (exclusive) tile windows, row by row; the last row and column are
    moved back to end at the image edge, so every tile is ``tile x tile`` (or the image)."""
    stride = tile - overlap
    ys, xs = _starts(height, tile, stride), _starts(width, tile, stride)
    return np.array(
        [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs], np.int64
    ).reshape(-1, 4)


class _TilePredictor(SamPredictor):
    """A SamPredictor whose next ``set_image`` takes an embedding encoded beforehand in a batch."""

    pending = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        emb, self.pending = self.pending, None
        if emb is not None and tuple(emb.original_size) == tuple(image.shape[:2]):
            self.set_embedding(emb)
        else:
            super().set_image(image, image_format)


def segment_everything_tiled(
    model: Any,
    source: Any,
    tile: int | bool | None = None,
    overlap: int | None = None,
    *,
    batch: int = 8,
    merge: bool = True,
    band_iou: float = 0.5,
    dedupe_iou: float = 0.7,
    image_format: str = "RGB",
    precision: str | None = None,
    progress: bool = False,
    **params: Any,
) -> CroppedMasks:
    """Segment everything in a large image, tile by tile; masks in image pixels, cropped.

    Args:
        model: a :class:`~samkit.SAM` (or its ``Sam`` module).
        source: an ``H x W x 3`` uint8 array (``image_format``), an image or GeoTIFF path, or a
            raster (:mod:`samkit.everything.tiling.raster`, :func:`samkit.everything.tiling.geo.open_geotiff`).
        tile: tile side in pixels (None/True: the model's input size). overlap: pixels shared
            by neighbouring tiles (default tile / 4); objects up to about this size are seen
            whole by some tile, larger ones are joined across seams.
        batch: tiles per encoder pass. merge: False keeps every tile's masks as they are (the
            fixed-tile way: objects cut by seams stay cut, overlaps stay duplicated).
        band_iou, dedupe_iou: see :func:`samkit.everything.tiling.masks.merge_tiled`.
        precision: "fp32", "bf16", "auto" or None (the model's setting).
        params: segment-everything options (``points_stride``, ``conf_thres``, ...), per tile.

    Returns :class:`~samkit.everything.tiling.masks.CroppedMasks` (largest first) with ``stats``: tiles,
    tiles_skipped (all nodata), masks_before_merge, encode_s, everything_s, merge_s, total_s.
    """
    t_start = time.perf_counter()
    raster = as_raster(source, image_format)
    t, o = resolve_tile(model, tile, overlap)
    if int(batch) < 1:
        raise SamkitError(f"batch must be a positive integer, got {batch!r}")
    sam = _sam_module(model)
    if precision is None:
        precision = getattr(model, "precision", None) or "fp32"
    pred = _TilePredictor(sam, precision=precision)
    h, w = raster.height, raster.width
    grid = tile_grid(h, w, t, o)
    boxes, crops, scores, stab, points, tile_of = [], [], [], [], [], []
    stats = {"tiles": len(grid), "tiles_skipped": 0, "encode_s": 0.0, "everything_s": 0.0}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(grid), desc="tiles", unit="tile")
    for y0 in np.unique(grid[:, 1]):
        row = np.flatnonzero(grid[:, 1] == y0)
        y1 = int(grid[row[0], 3])
        band = raster.read(0, int(y0), w, y1)
        valid = raster.valid(0, int(y0), w, y1)
        for s in range(0, len(row), int(batch)):
            chunk = [int(k) for k in row[s : s + int(batch)]]
            images, masks_ok, kept = [], [], []
            for k in chunk:
                x0, _, x1, _ = grid[k]
                v = None if valid is None else valid[:, x0:x1]
                if v is not None and not v.any():
                    stats["tiles_skipped"] += 1
                    continue
                img = band[:, x0:x1]
                if v is not None and not v.all():
                    img = np.where(v[..., None], img, 0).astype(np.uint8)
                images.append(np.ascontiguousarray(img))
                masks_ok.append(v)
                kept.append(k)
            if not images:
                if bar is not None:
                    bar.update(len(chunk))
                continue
            t0 = time.perf_counter()
            embs = pred.encode_images(images, batch_size=len(images))
            stats["encode_s"] += time.perf_counter() - t0
            for k, img, v, emb in zip(kept, images, masks_ok, embs):
                tx0, ty0 = int(grid[k, 0]), int(grid[k, 1])
                pred.pending = emb
                t0 = time.perf_counter()
                out = segment_everything(pred, img, precision=precision, **params)
                stats["everything_s"] += time.perf_counter() - t0
                for m, b, sc, st, pt in zip(
                    out.masks, out.boxes, out.scores, out.stability, out.points
                ):
                    bx0, by0, bx1, by1 = (int(b[0]), int(b[1]), int(b[2]) + 1, int(b[3]) + 1)
                    crop = m[by0:by1, bx0:bx1]
                    if v is not None:  # no mask pixel on nodata; the box shrinks to fit
                        crop = crop & v[by0:by1, bx0:bx1]
                        rows, cols = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
                        if not len(rows):
                            continue
                        crop = crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
                        bx0, by0 = bx0 + int(cols[0]), by0 + int(rows[0])
                        bx1, by1 = bx0 + crop.shape[1], by0 + crop.shape[0]
                    if not crop.any():
                        continue
                    boxes.append((tx0 + bx0, ty0 + by0, tx0 + bx1, ty0 + by1))
                    crops.append(np.ascontiguousarray(crop))
                    scores.append(sc)
                    stab.append(st)
                    points.append((pt[0] + tx0, pt[1] + ty0))
                    tile_of.append(k)
            if bar is not None:
                bar.update(len(chunk))
        del band, valid
    if bar is not None:
        bar.close()
    found = CroppedMasks(
        (h, w),
        np.asarray(boxes, np.int64).reshape(-1, 4),
        crops,
        np.asarray(scores, np.float32),
        np.asarray(stab, np.float32),
        np.asarray(points, np.float64).reshape(-1, 2),
    )
    stats["masks_before_merge"] = len(found)
    t0 = time.perf_counter()
    if merge:
        out = merge_tiled(
            found, np.asarray(tile_of), grid, band_iou=band_iou, dedupe_iou=dedupe_iou, cell=t
        )
        stats.update(out.stats)
    else:
        out = found.sorted_by_area()
        out.prompt_index = np.arange(len(out), dtype=np.int64)
    stats["merge_s"] = time.perf_counter() - t0
    stats["total_s"] = time.perf_counter() - t_start
    out.stats = stats
    return out


# -- prompts ------------------------------------------------------------------------------------
def _object_prompts(bboxes, points, labels) -> tuple[np.ndarray | None, np.ndarray | None, Any]:
    """``(N x 4 boxes or None, N x K x 2 points or None, N x K labels or None)``."""
    b = None if bboxes is None else np.asarray(bboxes, np.float64)
    if b is not None:
        b = b.reshape(1, 4) if b.shape == (4,) else b
        if b.ndim != 2 or b.shape[1] != 4:
            raise PromptError(f"bboxes must be (N, 4) XYXY pixels, got shape {b.shape}")
        if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
            raise PromptError("bboxes must be XYXY with x2 >= x1 and y2 >= y1")
    p = lab = None
    if points is not None:
        p = np.asarray(points, np.float64)
        if p.ndim == 1 and p.shape == (2,):
            p = p.reshape(1, 1, 2)
        elif p.ndim == 2 and p.shape[1] == 2:
            p = p[:, None, :]
        if p.ndim != 3 or p.shape[2] != 2:
            raise PromptError(f"points must be (N, 2) or (N, K, 2) pixels, got shape {p.shape}")
        lab = np.ones(p.shape[:2], np.int64) if labels is None else np.asarray(labels, np.int64)
        lab = lab.reshape(p.shape[:2]) if lab.size == p.shape[0] * p.shape[1] else lab
        if lab.shape != p.shape[:2]:
            raise PromptError(f"labels must have shape {p.shape[:2]}, got {lab.shape}")
    if b is None and p is None:
        raise PromptError("give bboxes= and/or points= (for segment everything use no prompts)")
    if b is not None and p is not None and len(b) != len(p):
        raise PromptError(f"{len(b)} bboxes but {len(p)} point groups; one of each per object")
    return b, p, lab


def _extents(b, p, lab) -> np.ndarray:
    n = len(b) if b is not None else len(p)
    ext = np.full((n, 4), np.nan)
    ext[:, :2], ext[:, 2:] = np.inf, -np.inf
    if b is not None:
        ext = b.copy()
    if p is not None:
        for i in range(n):
            pts = p[i][lab[i] >= 0]
            if len(pts):
                ext[i, :2] = np.minimum(ext[i, :2], pts.min(0))
                ext[i, 2:] = np.maximum(ext[i, 2:], pts.max(0))
    if not np.isfinite(ext).all():
        raise PromptError("every object needs a box or at least one point with label 0 or 1")
    return ext


def _place(lo: float, hi: float, side: int, n: int) -> int:
    """Start of a window of ``side`` covering ``lo..hi`` as centred as the image (n) allows."""
    start = int(round((lo + hi) / 2 - side / 2))
    return max(0, min(start, n - side)) if n >= side else 0


def _windows(ext: np.ndarray, h: int, w: int, tile: int, margin: int) -> list[tuple]:
    """Group prompts into windows: ``[(x0, y0, x1, y1, [prompt indices]), ...]``.

    A prompt goes to the tile of a half-overlapping grid that holds its extent plus ``margin``
    most centrally (prompts in one tile share its encoding); a prompt too large for any tile
    gets its own square window, centred on it.
    """
    grid = tile_grid(h, w, tile, tile // 2)
    gx0, gy0, gx1, gy1 = (grid[:, k][None, :] for k in range(4))
    x0, y0, x1, y1 = (ext[:, k][:, None] for k in range(4))
    room = np.minimum.reduce(
        [
            np.where(gx0 == 0, np.inf, x0 - gx0),
            np.where(gy0 == 0, np.inf, y0 - gy0),
            np.where(gx1 == w, np.inf, gx1 - x1),
            np.where(gy1 == h, np.inf, gy1 - y1),
        ]
    )
    inside = (x0 >= gx0) & (y0 >= gy0) & (x1 <= gx1) & (y1 <= gy1) & (room >= margin)
    # the most central fitting tile (room to the nearest inner edge, capped for edge tiles)
    score = np.where(inside, np.minimum(room, tile), -1.0)
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for i in range(len(ext)):
        if score[i].max() >= 0:
            k = int(np.argmax(score[i]))
            key = tuple(int(v) for v in grid[k])
        else:
            ex0, ey0, ex1, ey1 = ext[i]
            side = max(int(np.ceil(max(ex1 - ex0, ey1 - ey0))) + 2 * margin, tile)
            sx, sy = min(side, w), min(side, h)
            wx0, wy0 = _place(ex0, ex1, sx, w), _place(ey0, ey1, sy, h)
            key = (wx0, wy0, wx0 + sx, wy0 + sy)
        groups.setdefault(key, []).append(i)
    return [(*key, members) for key, members in groups.items()]


def predict_tiled(
    model: Any,
    source: Any,
    bboxes: Any = None,
    points: Any = None,
    labels: Any = None,
    *,
    tile: int | bool | None = None,
    multimask_output: bool = False,
    image_format: str = "RGB",
    precision: str | None = None,
) -> CroppedMasks:
    """Prompted segmentation of a large image; each prompt is decoded in a window around it.

    Prompts are in image pixels (as ``SAM.__call__``): ``bboxes`` ``(N, 4)`` XYXY, ``points``
    ``(N, 2)`` / ``(N, K, 2)`` with ``labels`` (1, 0, -1 padding). A prompt whose extent plus a
    margin of tile / 16 fits in a tile is decoded in a ``tile x tile`` window at native
    resolution (a grid of tiles overlapping by half: prompts in one tile share its encoding); a larger box gets a square
    window covering it, which the model downscales to its input size.

    Returns :class:`~samkit.everything.tiling.masks.CroppedMasks` in prompt order; ``prompt_index`` gives
    the prompt of each mask (3 per prompt with ``multimask_output``); ``stats["windows"]``.
    """
    from ...predict.predictor import Predictor

    raster = as_raster(source, image_format)
    t, _ = resolve_tile(model, tile, 0)
    b, p, lab = _object_prompts(bboxes, points, labels)
    ext = _extents(b, p, lab)
    h, w = raster.height, raster.width
    if (
        (ext[:, 2] < 0).any()
        or (ext[:, 3] < 0).any()
        or (ext[:, 0] > w).any()
        or (ext[:, 1] > h).any()
    ):
        raise PromptError(f"a prompt lies outside the {w} x {h} image")
    ext = np.clip(ext, 0, [w, h, w, h])
    predictor = Predictor(model, image_format="RGB", precision=precision, defer_low_res=False)
    out_boxes, crops, scores, pidx = [], [], [], []
    wins = _windows(ext, h, w, t, max(1, t // 16))
    for x0, y0, x1, y1, members in wins:
        predictor.set_rgb(raster.read(x0, y0, x1, y1), path="window")
        idx = np.asarray(members)
        shift = np.array([x0, y0], np.float64)
        r = predictor(
            bboxes=None if b is None else b[idx] - np.tile(shift, 2),
            points=None if p is None else p[idx] - shift,
            labels=None if lab is None else lab[idx],
            multimask_output=multimask_output,
        )
        for m, sc, k, bb in zip(r.masks, r.scores, r.prompt_index, r.boxes):
            bx0, by0, bx1, by1 = int(bb[0]), int(bb[1]), int(bb[2]) + 1, int(bb[3]) + 1
            out_boxes.append((x0 + bx0, y0 + by0, x0 + bx1, y0 + by1))
            crops.append(np.ascontiguousarray(m[by0:by1, bx0:bx1]))
            scores.append(sc)
            pidx.append(int(idx[int(k)]))
    predictor.reset_image()
    order = np.argsort(np.asarray(pidx), kind="stable")
    res = CroppedMasks(
        (h, w),
        np.asarray(out_boxes, np.int64).reshape(-1, 4)[order],
        [crops[i] for i in order],
        np.asarray(scores, np.float32)[order],
        prompt_index=np.asarray(pidx, np.int64)[order],
    )
    res.stats = {"windows": len(wins)}
    return res
