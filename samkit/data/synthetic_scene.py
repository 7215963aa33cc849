"""Large synthetic scenes for tiling: textured shapes on a cloudy background, any size.

A scene is described by a small object table (position, kind, radius, seed per object), and
its pixels are rendered a band of rows at a time, so a 16,000 x 16,000 scene is written to
disk in bounded memory. The shapes are those of :mod:`samkit.data.synthetic` (ellipses, rotated
rectangles, polygons; flat or textured fills whose colour differs clearly from the background)
at the sizes the demo model was trained on (radius 16..40 px = 0.06..0.16 of its 256 x 256
input); they do not overlap, so each ground-truth mask is exactly the shape's pixels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .synthetic import _distinct_fill

__all__ = ["LargeScene", "make_large_scene"]

_CLOUD = 48  # background noise grid spacing, pixels


@dataclass
class LargeScene:
    """A scene ``height x width``; ``objects`` is an ``N x 6`` float64 table of
    ``cx, cy, kind, radius, angle, seed``; ``boxes`` ``N x 4`` int64 XYXY exclusive."""

    height: int
    width: int
    seed: int
    objects: np.ndarray
    boxes: np.ndarray
    noise: float = 6.0

    def __len__(self) -> int:
        return len(self.objects)

    # -- ground truth -----------------------------------------------------------------------
    def mask(self, i: int) -> np.ndarray:
        """Bool mask of object ``i`` cropped to ``boxes[i]`` (``y1 - y0`` x ``x1 - x0``)."""
        cx, cy, kind, radius, angle, seed = self.objects[i]
        x0, y0, x1, y1 = (int(v) for v in self.boxes[i])
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        rng = np.random.default_rng(int(seed))
        c = (cx - x0, cy - y0)
        if kind == 0:
            axes = (int(radius), max(2, int(radius * rng.uniform(0.5, 1.0))))
            cv2.ellipse(m, (int(c[0]), int(c[1])), axes, angle, 0, 360, 1, thickness=-1)
        elif kind == 1:
            k = rng.uniform(0.45, 1.0)  # aspect; the half diagonal is ``radius``
            w = 2 * radius / np.sqrt(1 + k * k)
            size = (w, k * w)
            corners = cv2.boxPoints((c, size, angle))
            cv2.fillPoly(m, [np.round(corners).astype(np.int32)], 1)
        else:
            n = int(rng.integers(4, 9))
            a = np.sort(rng.uniform(0, 2 * np.pi, n))
            r = radius * rng.uniform(0.6, 1.0, n)
            pts = np.stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a)], axis=1)
            cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
        return m.astype(bool)

    def truth(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(boxes N x 4 XYXY exclusive, crops)`` of every object (for
        :class:`samkit.everything.tiling.masks.CroppedMasks`)."""
        return self.boxes.copy(), [self.mask(i) for i in range(len(self))]

    def masks_in(self, box: tuple[int, int, int, int]) -> list[int]:
        """Indices of the objects whose box intersects ``box`` (XYXY exclusive)."""
        x0, y0, x1, y1 = box
        b = self.boxes
        hit = (b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0)
        return np.flatnonzero(hit).tolist()

    # -- pixels ------------------------------------------------------------------------------
    def _background(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` of the background, float ``h x w x 3``."""
        x1 = self.width if x1 is None else x1
        rng = np.random.default_rng([self.seed, 1])
        c1, c2 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
        gh, gw = self.height // _CLOUD + 2, self.width // _CLOUD + 2
        # the noise grid is drawn a row at a time from per-row seeds: any band reproduces it
        rows = range(y0 // _CLOUD, min(gh, (y1 - 1) // _CLOUD + 2))
        grid = np.stack([np.random.default_rng([self.seed, 2, r]).random(gw) for r in rows])
        ys = np.arange(y0, y1) / _CLOUD - rows[0]
        xs = np.arange(x0, x1) / _CLOUD
        iy, ix = np.floor(ys).astype(int), np.floor(xs).astype(int)
        fy, fx = (ys - iy)[:, None], (xs - ix)[None, :]
        g = grid.astype(np.float32)
        t = (g[iy][:, ix] * (1 - fx) + g[iy][:, ix + 1] * fx) * (1 - fy) + (
            g[iy + 1][:, ix] * (1 - fx) + g[iy + 1][:, ix + 1] * fx
        ) * fy
        return c1 + t[..., None] * (c2 - c1)

    def band(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` as ``(y1 - y0) x W x 3`` uint8 RGB."""
        img = self._background(y0, y1).astype(np.float32)
        for i in self.masks_in((0, y0, self.width, y1)):
            bx0, by0, bx1, by1 = (int(v) for v in self.boxes[i])
            m = self.mask(i)
            rng = np.random.default_rng([int(self.objects[i, 5]), 7])
            under = self._background(by0, by1, bx0, bx1)[m].mean(axis=0)
            fill = _distinct_fill(rng, by1 - by0, bx1 - bx0, under)
            s0, s1 = max(by0, y0), min(by1, y1)
            sub = m[s0 - by0 : s1 - by0]
            region = img[s0 - y0 : s1 - y0, bx0:bx1]
            region[sub] = fill[s0 - by0 : s1 - by0][sub]
        for k in range(y1 - y0):  # noise drawn per row: any split into bands gives the same
            img[k] += np.random.default_rng([self.seed, 3, y0 + k]).normal(
                0, self.noise, (self.width, 3)
            )
        return np.clip(img, 0, 255).astype(np.uint8)

    def bands(self, rows: int = 512) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(y0, band)`` covering the scene top to bottom."""
        for y0 in range(0, self.height, rows):
            yield y0, self.band(y0, min(self.height, y0 + rows))

    def image(self) -> np.ndarray:
        """The whole scene ``H x W x 3`` uint8 RGB (small scenes only)."""
        return np.concatenate([b for _, b in self.bands()], axis=0)

    def write_raw(self, path: str | os.PathLike) -> Path:
        """Write the pixels as a raw row-major ``H x W x 3`` uint8 file (see
        :class:`samkit.everything.tiling.raster.RawRaster`), band by band; returns the path."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            for _, b in self.bands():
                f.write(np.ascontiguousarray(b).tobytes())
        os.replace(tmp, path)
        return path


def make_large_scene(
    height: int,
    width: int,
    *,
    seed: int = 0,
    cell: int = 96,
    radius_range: tuple[float, float] = (16.0, 40.0),
    fill: float = 0.8,
) -> LargeScene:
    """A scene with one shape in about ``fill`` of the ``cell x cell`` cells of a grid, each
    jittered inside its cell with a 4 px gap to the neighbours (no overlaps).

    ``radius_range`` in pixels: 16..40 px is 0.06..0.16 of the demo model's 256 px input, inside
    the 0.06..0.3 range it was trained on. About ``fill * H * W / cell**2`` objects.
    """
    rmin, rmax = radius_range
    if not 0 < rmin <= rmax or 2 * rmax + 8 > cell:
        raise ValueError(f"radius_range {radius_range} must fit cell {cell} (2 * max + 8 <= cell)")
    rng = np.random.default_rng(seed)
    objs, boxes = [], []
    for gy in range(height // cell):
        for gx in range(width // cell):
            if rng.random() >= fill:
                continue
            r = float(rng.uniform(rmin, rmax))
            slack = cell / 2 - r - 4
            cx = gx * cell + cell / 2 + rng.uniform(-slack, slack)
            cy = gy * cell + cell / 2 + rng.uniform(-slack, slack)
            kind = int(rng.integers(3))
            objs.append((cx, cy, kind, r, rng.uniform(0, 180), rng.integers(2**31)))
            reach = r + 2
            boxes.append(
                (
                    max(0, int(cx - reach)),
                    max(0, int(cy - reach)),
                    min(width, int(np.ceil(cx + reach)) + 1),
                    min(height, int(np.ceil(cy + reach)) + 1),
                )
            )
    scene = LargeScene(
        height,
        width,
        seed,
        np.asarray(objs, np.float64).reshape(-1, 6),
        np.asarray(boxes, np.int64).reshape(-1, 4),
    )
    return scene
