"""GeoTIFF in, georeferenced masks out (extra ``geo``: rasterio and pyogrio).

>>> scene = open_geotiff("scene.tif", bands=(3, 2, 1))        # read lazily, window by window
>>> masks = segment_everything_tiled(SAM("sam_b"), scene)      # samkit.everything.tiling
>>> write_mask_raster(masks, "masks.tif", scene)               # instance ids, same grid and CRS
>>> write_vectors(masks, "masks.gpkg", scene)                  # polygons, CRS kept
>>> masks = predict_map(model, scene, bboxes=[[x0, y0, x1, y1]])   # prompts in map units

Pixels other than 8-bit (16-bit, float) are stretched to 0..255 per band between the 2nd and
98th percentiles of a decimated read (or ``scale=(low, high)``); nodata pixels (the band's
nodata value or the dataset's mask) are black to the model and never part of a mask.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DependencyError, ImageError, PromptError
from .masks import CroppedMasks

__all__ = [
    "GeoRaster",
    "map_to_pixel",
    "mask_polygons",
    "open_geotiff",
    "pixel_to_map",
    "predict_map",
    "write_mask_raster",
    "write_vectors",
]


def _rasterio():
    try:
        import rasterio
    except ImportError as exc:
        raise DependencyError(
            "GeoTIFF input and output need rasterio: pip install 'samkit[geo]'"
        ) from exc
    return rasterio


class GeoRaster:
    """A GeoTIFF (or any raster GDAL reads) opened for window reads; see :func:`open_geotiff`.

    Attributes: height, width, crs (``rasterio.crs.CRS`` or None), transform (``Affine``,
    pixel -> map), bands (1-based, 3 of them), scale (``3 x 2`` low/high per band, or None for
    uint8 data), path.
    """

    def __init__(self, path, bands=None, scale=None, nodata=None) -> None:
        rasterio = _rasterio()
        self.path = Path(path)
        try:
            self._ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise ImageError(f"{self.path}: cannot open as a raster ({exc})") from None
        ds = self._ds
        self.height, self.width = ds.height, ds.width
        self.crs, self.transform = ds.crs, ds.transform
        if bands is None:
            bands = (1, 2, 3) if ds.count >= 3 else (1, 1, 1)
        bands = tuple(int(b) for b in bands)
        if len(bands) == 1:
            bands = bands * 3
        if len(bands) != 3 or not all(1 <= b <= ds.count for b in bands):
            raise ImageError(
                f"{self.path}: bands must be 1 or 3 band numbers in 1..{ds.count}, got {bands}"
            )
        self.bands = bands
        self.nodata = ds.nodata if nodata is None else nodata
        self._has_mask = self.nodata is not None or any(
            "all_valid" not in [f.name for f in ds.mask_flag_enums[b - 1]] for b in bands
        )
        dtype = np.dtype(ds.dtypes[bands[0] - 1])
        if scale is not None:
            s = np.asarray(scale, np.float64)
            self.scale = np.broadcast_to(s.reshape(-1, 2), (3, 2)).copy()
        elif dtype == np.uint8:
            self.scale = None
        else:
            self.scale = self._percentiles()

    def _percentiles(self) -> np.ndarray:
        """2nd / 98th percentile per band of a read decimated to at most 1024 px a side."""
        f = max(1, int(np.ceil(max(self.height, self.width) / 1024)))
        shape = (3, max(1, self.height // f), max(1, self.width // f))
        data = self._ds.read(self.bands, out_shape=shape).astype(np.float64)
        ok = np.ones(shape[1:], bool)
        if self._has_mask:
            ok = self._ds.read_masks(self.bands, out_shape=shape).min(0) > 0
            if self.nodata is not None:
                ok &= (data != self.nodata).all(0)
        if not ok.any():
            return np.array([[0.0, 1.0]] * 3)
        lo = np.percentile(data[:, ok], 2, axis=1)
        hi = np.percentile(data[:, ok], 98, axis=1)
        return np.stack([lo, np.maximum(hi, lo + 1e-9)], axis=1)

    def _window(self, x0, y0, x1, y1):
        from rasterio.windows import Window

        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ImageError(
                f"window x {x0}:{x1}, y {y0}:{y1} is outside the {self.width} x {self.height} "
                f"raster {self.path}"
            )
        return Window(x0, y0, x1 - x0, y1 - y0)

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The window as ``(y1 - y0) x (x1 - x0) x 3`` uint8 RGB (scaled, nodata black)."""
        data = self._ds.read(self.bands, window=self._window(x0, y0, x1, y1))
        if self.scale is not None:
            lo, hi = self.scale[:, :1, None], self.scale[:, 1:, None]
            data = np.clip((data.astype(np.float32) - lo) / (hi - lo) * 255.0 + 0.5, 0, 255)
        out = np.ascontiguousarray(np.moveaxis(data.astype(np.uint8), 0, -1))
        v = self.valid(x0, y0, x1, y1)
        if v is not None:
            out[~v] = 0
        return out

    def valid(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray | None:
        """``(y1 - y0) x (x1 - x0)`` bool, False on nodata; None when every pixel is valid."""
        if not self._has_mask:
            return None
        win = self._window(x0, y0, x1, y1)
        ok = self._ds.read_masks(self.bands, window=win).min(0) > 0
        if self.nodata is not None:
            raw = self._ds.read(self.bands, window=win)
            ok &= ~(np.isnan(raw) if np.isnan(self.nodata) else raw == self.nodata).any(0)
        return ok

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> GeoRaster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_geotiff(
    path: str | os.PathLike,
    bands: Sequence[int] | None = None,
    scale: Sequence[float] | None = None,
    nodata: float | None = None,
) -> GeoRaster:
    """Open a GeoTIFF for tiled segmentation (nothing is read until a window is asked for).

    ``bands``: 1-based band numbers for R, G, B (one number = grey); default 1, 2, 3 (or 1 for
    single-band files). ``scale``: ``(low, high)`` (or one pair per band) mapped to 0..255 for
    data that is not uint8; default per-band 2nd..98th percentiles. ``nodata`` overrides the
    file's nodata value.
    """
    return GeoRaster(path, bands, scale, nodata)


def _transform_of(like: Any):
    t = getattr(like, "transform", None)
    if t is None:
        raise ImageError("pass the GeoRaster the masks came from (or transform= and crs=)")
    return t


def pixel_to_map(raster: Any, xy: Any) -> np.ndarray:
    """``N x 2`` pixel (x, y) -> map coordinates (pixel corners: (0, 0) is the top-left)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    t = _transform_of(raster)
    x = t.a * xy[:, 0] + t.b * xy[:, 1] + t.c
    y = t.d * xy[:, 0] + t.e * xy[:, 1] + t.f
    return np.stack([x, y], axis=1)


def map_to_pixel(raster: Any, xy: Any) -> np.ndarray:
    """``N x 2`` map coordinates -> pixel (x, y) (floats; the inverse of :func:`pixel_to_map`)."""
    inv = ~_transform_of(raster)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    return np.stack(
        [inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c, inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f],
        axis=1,
    )


def predict_map(
    model: Any, raster: GeoRaster, bboxes: Any = None, points: Any = None, labels: Any = None, **kw
) -> CroppedMasks:
    """:func:`samkit.tiling.predict_tiled` with prompts in the raster's map coordinates:
    ``bboxes`` ``(N, 4)`` as ``(xmin, ymin, xmax, ymax)``, ``points`` ``(N, 2)`` / ``(N, K, 2)``
    as ``(x, y)``."""
    from .engine import predict_tiled

    pb = pp = None
    if bboxes is not None:
        b = np.asarray(bboxes, np.float64).reshape(-1, 4)
        c1 = map_to_pixel(raster, b[:, :2])
        c2 = map_to_pixel(raster, b[:, 2:])
        pb = np.concatenate([np.minimum(c1, c2), np.maximum(c1, c2)], axis=1)
    if points is not None:
        p = np.asarray(points, np.float64)
        if p.shape[-1] != 2:
            raise PromptError(f"points must be (N, 2) or (N, K, 2) map coordinates, got {p.shape}")
        pp = map_to_pixel(raster, p.reshape(-1, 2)).reshape(p.shape)
    return predict_tiled(model, raster, pb, pp, labels, **kw)


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    return Path(tmp)


def write_mask_raster(
    masks: CroppedMasks,
    path: str | os.PathLike,
    like: Any = None,
    *,
    crs: Any = None,
    transform: Any = None,
    rows: int = 512,
) -> Path:
    """Write an instance label GeoTIFF (0 = no mask, ``i + 1`` = mask i; smaller masks on top)
    on the raster's grid and CRS, ``rows`` rows at a time; the file appears complete or not at
    all. Returns the path."""
    rasterio = _rasterio()
    path = Path(path)
    crs = crs if crs is not None else getattr(like, "crs", None)
    transform = transform if transform is not None else getattr(like, "transform", None)
    h, w = masks.image_size
    dtype = "uint16" if len(masks) < 2**16 else "uint32"
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": 1,
        "dtype": dtype,
        "crs": crs,
        "transform": transform if transform is not None else rasterio.Affine.identity(),
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "nodata": 0,
    }
    tmp = _temp_beside(path)
    try:
        from rasterio.windows import Window

        with rasterio.open(tmp, "w", **profile) as dst:
            for y0 in range(0, h, rows):
                y1 = min(h, y0 + rows)
                dst.write(
                    masks.label_band(y0, y1, np.dtype(dtype)), 1, window=Window(0, y0, w, y1 - y0)
                )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _wkb_multipolygon(polygons: list[list[np.ndarray]]) -> bytes:
    """Little-endian WKB MultiPolygon of polygons given as lists of ``K x 2`` rings."""
    out = [struct.pack("<BII", 1, 6, len(polygons))]
    for rings in polygons:
        out.append(struct.pack("<BII", 1, 3, len(rings)))
        for ring in rings:
            out.append(struct.pack("<I", len(ring)))
            out.append(np.ascontiguousarray(ring, "<f8").tobytes())
    return b"".join(out)


def mask_polygons(masks: CroppedMasks, i: int, transform) -> list[list[np.ndarray]]:
    """Polygons (outer ring, then holes; ``K x 2`` map coordinates) of mask ``i``, traced on
    pixel edges by GDAL (``rasterio.features.shapes``)."""
    from rasterio import Affine
    from rasterio.features import shapes

    x0, y0 = int(masks.boxes[i, 0]), int(masks.boxes[i, 1])
    crop = masks.crops[i]
    t = transform * Affine.translation(x0, y0)
    return [
        [np.asarray(r, np.float64) for r in geom["coordinates"]]
        for geom, v in shapes(crop.astype(np.uint8), mask=crop, transform=t, connectivity=8)
        if v == 1
    ]


def write_vectors(
    masks: CroppedMasks,
    path: str | os.PathLike,
    like: Any = None,
    *,
    crs: Any = None,
    transform: Any = None,
    driver: str | None = None,
) -> Path:
    """Write one MultiPolygon feature per mask (fields ``mask_id``, ``score``, ``area_px``,
    ``stability``) to a GeoPackage (``.gpkg``) or GeoJSON (``.geojson``/``.json``) file in the
    raster's CRS; the file appears complete or not at all. Returns the path."""
    try:
        import pyogrio.raw
    except ImportError as exc:
        raise DependencyError("vector output needs pyogrio: pip install 'samkit[geo]'") from exc
    _rasterio()
    from rasterio import Affine

    path = Path(path)
    crs = crs if crs is not None else getattr(like, "crs", None)
    transform = transform if transform is not None else getattr(like, "transform", None)
    transform = transform if transform is not None else Affine.identity()
    if driver is None:
        drivers = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
        driver = drivers.get(path.suffix.lower())
        if driver is None:
            raise ImageError(f"{path}: use a .gpkg, .geojson or .json file name (or driver=)")
    geoms, ids, scores, areas, stab = [], [], [], [], []
    area_px = masks.areas
    for i in range(len(masks)):
        polys = mask_polygons(masks, i, transform)
        if not polys:
            continue
        geoms.append(_wkb_multipolygon(polys))
        ids.append(i)
        scores.append(float(masks.scores[i]))
        areas.append(int(area_px[i]))
        stab.append(float(masks.stability[i]) if masks.stability is not None else np.nan)
    tmp = _temp_beside(path)
    try:
        pyogrio.raw.write(
            str(tmp),
            np.array(geoms, dtype=object),
            [np.array(ids, np.int64), np.array(scores), np.array(areas, np.int64), np.array(stab)],
            ["mask_id", "score", "area_px", "stability"],
            driver=driver,
            crs=crs.to_wkt() if crs is not None else None,
            geometry_type="MultiPolygon",
            layer=path.stem if driver == "GPKG" else None,
        )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
