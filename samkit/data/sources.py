"""Image sources -> RGB uint8 frames: files, folders, globs, lists, arrays, PIL, videos, URLs.

:func:`load_sources` is a lazy iterator of :class:`SourceItem` (path, frame index, image or
error). Files are decoded with Pillow (EXIF orientation applied; grayscale, RGBA, palette,
CMYK and 16-bit images converted to 8-bit RGB; a decompression-bomb limit), videos with
OpenCV. NumPy arrays are BGR (OpenCV's order, like Ultralytics) unless ``image_format="RGB"``;
PIL images are RGB. Torch-free.
"""

from __future__ import annotations

import glob
import http.client
import io
import os
import urllib.error
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from .safeio import Deadline, open_url, read_body

IMAGE_SUFFIXES = frozenset(
    [
        ".bmp",
        ".dib",
        ".gif",
        ".jpeg",
        ".jpg",
        ".jpe",
        ".jp2",
        ".mpo",
        ".pbm",
        ".pgm",
        ".png",
        ".ppm",
        ".tif",
        ".tiff",
        ".webp",
    ]
)
VIDEO_SUFFIXES = frozenset(
    [".asf", ".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".webm", ".wmv"]
)
#: Largest image (in pixels) decoded by default: Pillow's own decompression-bomb threshold.
DEFAULT_MAX_PIXELS = 89_478_485
#: Largest download accepted from a URL (bytes).
MAX_URL_BYTES = 200 * 1024 * 1024
#: Overall time limit of one URL download (seconds); ``timeout`` bounds each read.
URL_DEADLINE = 120.0


@dataclass
class SourceItem:
    """One image of a source: ``image`` (``H x W x 3`` uint8 RGB) or the ``error`` that stopped it.

    ``path`` is the file, URL or ``imageN`` for in-memory images; ``frame`` the video frame
    index (None for still images); ``index`` the position in the source.
    """

    path: str
    index: int
    image: np.ndarray | None = None
    error: str | None = None
    frame: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _expand(source: Any) -> list[Any]:
    """Expand one entry of a source into leaf entries (files, URLs, arrays, PIL images)."""
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if _is_url(s):
            return [s]
        p = Path(s).expanduser()
        if p.is_dir():
            files = sorted(
                str(f)
                for f in p.iterdir()
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
            if not files:
                raise ImageError(f"no image or video files found in directory {s}")
            return files
        if p.exists():
            return [str(p)]
        if _is_glob(s):
            files = sorted(f for f in glob.glob(os.path.expanduser(s), recursive=True))
            files = [f for f in files if os.path.isfile(f)]
            if not files:
                raise ImageError(f"the pattern {s!r} matches no files")
            return files
        raise ImageError(f"no such file or directory: {s}")
    if isinstance(source, np.ndarray) and source.ndim == 4:
        return list(source)
    return [source]


def is_single_source(source: Any) -> bool:
    """True for one image (path, URL, array, PIL image) or one video file; False for folders,
    globs, lists and ``B x H x W x 3`` arrays."""
    if isinstance(source, (list, tuple)):
        return False
    if isinstance(source, np.ndarray):
        return source.ndim != 4
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if _is_url(s):
            return True
        p = Path(s).expanduser()
        return p.is_file() or not (_is_glob(s) or p.is_dir())
    return True


def load_sources(
    source: Any,
    *,
    vid_stride: int = 1,
    image_format: str = "BGR",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict: bool | None = None,
    timeout: float = 30.0,
) -> Iterator[SourceItem]:
    """Iterate over the images of ``source`` as :class:`SourceItem` (images are RGB uint8).

    ``source``: a file path (str or ``pathlib.Path``), a directory (its image and video files,
    sorted by name), a glob pattern, an http(s) URL, a NumPy array (``H x W``, ``H x W x 3|4``;
    ``B x H x W x 3`` is B images), a PIL image, a video file (every ``vid_stride``-th frame),
    or a list/tuple of these. ``image_format`` ("BGR" or "RGB") is the channel order of NumPy
    arrays. An unreadable item is yielded with ``error`` set when ``strict`` is False, and
    raises :class:`ImageError` when True; ``strict=None`` means strict for a single image and
    lenient for several (folders, globs, lists, videos).
    """
    if image_format not in ("BGR", "RGB"):
        raise ImageError(f"image_format must be 'BGR' or 'RGB', got {image_format!r}")
    if int(vid_stride) < 1:
        raise ImageError(f"vid_stride must be a positive integer, got {vid_stride!r}")
    if strict is None:
        strict = is_single_source(source)
    is_list = isinstance(source, (list, tuple))
    entries = list(source) if is_list else [source]
    if not entries:
        raise ImageError("the source is an empty list")
    index = 0
    for entry in entries:
        try:
            leaves = _expand(entry)
        except ImageError as exc:
            if strict or not is_list:  # a folder or pattern that yields nothing at all
                raise
            yield SourceItem(_name(entry, index), index, error=str(exc))
            index += 1
            continue
        for leaf in leaves:
            if isinstance(leaf, str) and Path(leaf).suffix.lower() in VIDEO_SUFFIXES:
                for item in _video_frames(leaf, int(vid_stride)):
                    if item.error and strict:
                        raise ImageError(item.error)
                    item.index = index
                    yield item
                    index += 1
                continue
            try:
                image = load_image(leaf, image_format, max_pixels=max_pixels, timeout=timeout)
            except ImageError as exc:
                if strict:
                    raise
                yield SourceItem(_name(leaf, index), index, error=str(exc))
            else:
                yield SourceItem(_name(leaf, index), index, image=image)
            index += 1


def _name(entry: Any, index: int) -> str:
    if isinstance(entry, (str, os.PathLike)):
        return os.fspath(entry)
    if isinstance(entry, Image.Image) and getattr(entry, "filename", ""):
        return str(entry.filename)
    return f"image{index}"


def load_image(
    source: Any,
    image_format: str = "BGR",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    timeout: float = 30.0,
    deadline: float | None = None,
) -> np.ndarray:
    """One image (path, URL, NumPy array in ``image_format``, PIL image) -> ``H x W x 3`` RGB uint8.

    URLs: ``timeout`` (s) bounds connecting and each read, ``deadline`` (s, default
    ``URL_DEADLINE``) the whole download. Raises :class:`ImageError` saying what could not be
    read and why.
    """
    if isinstance(source, np.ndarray):
        return array_to_rgb(source, image_format)
    if isinstance(source, Image.Image):
        return pil_to_rgb(source, "PIL image", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if _is_url(s):
            data = _fetch(s, timeout, URL_DEADLINE if deadline is None else deadline)
            return pil_to_rgb(_open_pil(io.BytesIO(data), s, max_pixels), s, None)
        if not os.path.isfile(s):
            raise ImageError(f"no such image file: {s}")
        with open(s, "rb") as f:
            return pil_to_rgb(_open_pil(f, s, max_pixels), s, None)
    raise ImageError(
        f"unsupported image source of type {type(source).__name__}: pass a path, URL, NumPy "
        "array or PIL image"
    )


def _bomb_error(name: str, w: int, h: int, max_pixels: int) -> ImageError:
    return ImageError(
        f"{name}: {w} x {h} = {w * h / 1e6:.1f} Mpx exceeds the decompression-bomb limit of "
        f"{max_pixels / 1e6:.1f} Mpx; if you trust this file, pass a larger max_pixels= (and "
        "raise PIL.Image.MAX_IMAGE_PIXELS for files above twice Pillow's own limit)"
    )


def _open_pil(fp, name: str, max_pixels: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise _bomb_error(name, im.width, im.height, max_pixels)
            im.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: {exc}; if you trust this file, raise max_pixels") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image file Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: the image is corrupt or truncated ({exc})") from exc
    return im


def pil_to_rgb(im: Image.Image, name: str = "PIL image", max_pixels: int | None = None):
    """A PIL image -> ``H x W x 3`` RGB uint8, EXIF orientation applied, 16-bit scaled to 8-bit."""
    if max_pixels is not None and im.width * im.height > max_pixels:
        raise _bomb_error(name, im.width, im.height, max_pixels)
    try:
        im = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: unreadable EXIF orientation ({exc})") from exc
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return array_to_rgb(
            np.asarray(im), "RGB", bit_depth=16 if im.mode != "F" else None, name=name
        )
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def array_to_rgb(
    arr: np.ndarray,
    image_format: str = "BGR",
    bit_depth: int | None = None,
    name: str = "the image array",
):
    """A NumPy image -> ``H x W x 3`` RGB uint8.

    Accepts ``H x W``, ``H x W x 1``, ``H x W x 3`` and ``H x W x 4`` (alpha dropped) arrays of
    uint8, uint16 (scaled by 255/65535), bool, or floats in [0, 1]. ``image_format`` is the
    channel order of 3/4-channel arrays ("BGR" or "RGB"). ``name`` (a file name) starts every
    error message.
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(
            f"an image array must be H x W, H x W x 3 or H x W x 4, got shape {a.shape}"
        )
    if min(a.shape[:2]) < 1:
        raise ImageError(f"the image array is empty (shape {a.shape})")
    try:
        a = _to_uint8(a, bit_depth)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    a = a[..., :3]
    if image_format == "BGR":
        a = a[..., ::-1]
    elif image_format != "RGB":
        raise ImageError(f"image_format must be 'BGR' or 'RGB', got {image_format!r}")
    out = np.ascontiguousarray(a)
    # never hand back the caller's buffer: later edits to it must not change our copy
    return out.copy() if np.may_share_memory(out, arr) else out


def _to_uint8(a: np.ndarray, bit_depth: int | None) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError("it contains NaN or inf")
        if a.min() < 0 or a.max() > 1:
            raise ImageError(
                f"float pixel values must lie in [0, 1], got [{a.min():g}, {a.max():g}]; "
                "convert the image to 8-bit (uint8, 0-255) first"
            )
        return np.round(a * 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer) and (a.dtype == np.uint16 or bit_depth == 16):
        if a.min() < 0 or a.max() > 65535:
            raise ImageError(f"16-bit image values out of range [{a.min()}, {a.max()}]")
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise ImageError(
        f"unsupported image dtype {a.dtype}: use uint8, uint16, bool or floats in [0, 1]"
    )


def _fetch(url: str, timeout: float, deadline: float = URL_DEADLINE) -> bytes:
    """The body of an http(s) URL: redirects only to http(s), at most ``MAX_URL_BYTES``, within
    ``deadline`` seconds overall (``timeout`` bounds connecting and each read)."""
    try:
        with open_url(url, timeout) as resp:
            return read_body(resp, MAX_URL_BYTES, Deadline(deadline))
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ImageError(f"{url}: HTTP error {exc.code} {exc.reason}") from exc
    except TimeoutError as exc:
        raise ImageError(f"{url}: could not download ({exc or 'timed out'})") from exc
    except ValueError as exc:  # over the size cap
        raise ImageError(f"{url}: not downloaded, {exc}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageError(f"{url}: could not download ({reason})") from exc


def _video_frames(path: str, stride: int) -> Iterator[SourceItem]:
    """Every ``stride``-th frame of a video as RGB (``index`` is set by the caller)."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            yield SourceItem(path, 0, error=f"{path}: OpenCV cannot open this video file")
            return
        frame = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield SourceItem(path, 0, image=np.ascontiguousarray(bgr[..., ::-1]), frame=frame)
            for _ in range(stride - 1):
                if not cap.grab():
                    return
            frame += stride
        if frame == 0:
            yield SourceItem(path, 0, error=f"{path}: the video has no readable frames")
    finally:
        cap.release()
