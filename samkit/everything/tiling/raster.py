"""Sources of large images read a window at a time: in-memory arrays and raw pixel files.

A raster has ``height``, ``width`` and ``read(x0, y0, x1, y1)`` returning the window as
``(y1 - y0) x (x1 - x0) x 3`` uint8 RGB, plus ``valid(x0, y0, x1, y1)`` (bool, False on nodata)
or None when every pixel is valid. GeoTIFFs come from :func:`samkit.everything.tiling.geo.open_geotiff`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...errors import ImageError

__all__ = ["ArrayRaster", "Raster", "RawRaster", "as_raster"]


class Raster(Protocol):
    height: int
    width: int

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray: ...

    def valid(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray | None: ...


def _check_window(r: Any, x0: int, y0: int, x1: int, y1: int) -> None:
    if not (0 <= x0 < x1 <= r.width and 0 <= y0 < y1 <= r.height):
        raise ImageError(
            f"window x {x0}:{x1}, y {y0}:{y1} is outside the {r.width} x {r.height} image"
        )


class ArrayRaster:
    """An ``H x W x 3`` uint8 RGB array already in memory."""

    def __init__(self, image_rgb: np.ndarray) -> None:
        image = np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
        self.image = image
        self.height, self.width = image.shape[:2]

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        _check_window(self, x0, y0, x1, y1)
        return np.ascontiguousarray(self.image[y0:y1, x0:x1])

    def valid(self, x0: int, y0: int, x1: int, y1: int) -> None:
        return None


class RawRaster:
    """A raw row-major ``H x W x 3`` uint8 RGB file (no header), read with ``pread`` so that
    nothing but the requested rows enters memory (a memory map would leave every page it
    touched counted as resident)."""

    def __init__(self, path: str | os.PathLike, height: int, width: int) -> None:
        self._fd = -1
        self.path = Path(path)
        self.height, self.width = int(height), int(width)
        size = self.path.stat().st_size
        if size != self.height * self.width * 3:
            raise ImageError(
                f"{self.path}: {size} bytes is not {self.width} x {self.height} x 3 uint8 pixels"
            )
        self._fd = os.open(self.path, os.O_RDONLY)

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        _check_window(self, x0, y0, x1, y1)
        row = self.width * 3
        if x0 == 0 and x1 == self.width:
            buf = os.pread(self._fd, (y1 - y0) * row, y0 * row)
            return np.frombuffer(buf, np.uint8).reshape(y1 - y0, self.width, 3).copy()
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for k, y in enumerate(range(y0, y1)):
            buf = os.pread(self._fd, (x1 - x0) * 3, y * row + x0 * 3)
            out[k] = np.frombuffer(buf, np.uint8).reshape(x1 - x0, 3)
        return out

    def valid(self, x0: int, y0: int, x1: int, y1: int) -> None:
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def as_raster(source: Any, image_format: str = "RGB") -> Any:
    """A raster for ``source``: a raster object as is; an ``H x W x 3`` uint8 array
    (``image_format`` "RGB" or "BGR"); a ``.tif``/``.tiff`` path (GeoTIFF, needs the ``geo``
    extra); another image path (read whole with OpenCV)."""
    if hasattr(source, "read") and hasattr(source, "height") and hasattr(source, "width"):
        return source
    if isinstance(source, np.ndarray):
        if image_format not in ("RGB", "BGR"):
            raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        arr = source[..., ::-1] if image_format == "BGR" and source.ndim == 3 else source
        return ArrayRaster(np.ascontiguousarray(arr))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() in (".tif", ".tiff"):
            from .geo import open_geotiff

            return open_geotiff(path)
        from ...data.sources import load_sources

        items = list(load_sources(str(path), image_format="RGB", strict=True))
        if len(items) != 1:
            raise ImageError(f"{path}: expected one image, found {len(items)}")
        return ArrayRaster(items[0].image)
    raise ImageError(
        f"cannot tile a {type(source).__name__}; pass an H x W x 3 uint8 array, an image or "
        "GeoTIFF path, or a raster (samkit.everything.tiling.raster.RawRaster, samkit.everything.tiling.geo.open_geotiff)"
    )
