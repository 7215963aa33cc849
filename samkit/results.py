"""The per-image result of a SAM call: masks, scores, boxes, prompts, and converters.

:class:`Results` holds NumPy arrays only and is torch-free, so the onnxruntime predictor and
the writers (CLI, annotation) share it. Box format: XYXY pixels, inclusive (``x2`` is the last
mask column, like Meta's ``batched_mask_to_box``). Polygons: ``(K, 2)`` float32 ``(x, y)``.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .data.safeio import safe_name, write_atomic
from .errors import ImageError
from .ops.polygons import mask_to_polygons, merge_polygons, normalize_polygon
from .ops.rle import encode_coco_rle


def masks_to_boxes_np(masks: np.ndarray) -> np.ndarray:
    """Tight inclusive XYXY boxes ``N x 4`` (float32) of ``N x H x W`` masks; empty -> zeros."""
    n = masks.shape[0]
    out = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return out
    cols = masks.any(axis=1)  # N x W
    rows = masks.any(axis=2)  # N x H
    nonempty = cols.any(axis=1)
    w, h = cols.shape[1], rows.shape[1]
    out[:, 0] = cols.argmax(axis=1)
    out[:, 1] = rows.argmax(axis=1)
    out[:, 2] = w - 1 - cols[:, ::-1].argmax(axis=1)
    out[:, 3] = h - 1 - rows[:, ::-1].argmax(axis=1)
    out[~nonempty] = 0
    return out


def _encode_image(image_bgr: np.ndarray, suffix: str) -> bytes:
    try:
        ok, buf = cv2.imencode(suffix, image_bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"OpenCV cannot write images with suffix {suffix!r}; use .png or .jpg")
    return buf.tobytes()


def _get_low_res(self: Results) -> np.ndarray | None:
    value = self.__dict__["_low_res"]
    if isinstance(value, DeferredRows):
        computed = np.asarray(value.compute(), dtype=np.float32)
        if len(computed) != len(value):
            raise RuntimeError(
                f"deferred low_res_logits gave {len(computed)} rows, not {len(value)}"
            )
        value = self.__dict__["_low_res"] = computed
    return value


def _set_low_res(self: Results, value: Any) -> None:
    if value is not None and not isinstance(value, DeferredRows):
        value = np.asarray(value, dtype=np.float32)
    self.__dict__["_low_res"] = value


def _safe_stem(name: str) -> str:
    """An output file stem from any image name (unsafe characters replaced; a long name is
    shortened with a hash, leaving room for ``_<frame>_<index>.png``)."""
    return safe_name(Path(str(name)).stem or "image", max_bytes=150)


class DeferredRows(abc.ABC):
    """Per-mask rows that are computed when first read (``Results.low_res_logits`` of the fast
    prompted path: most callers never read them, and computing them costs ~40 % of a box)."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def take(self, rows: np.ndarray) -> DeferredRows:
        """The selected rows (indices into this object), still deferred."""

    @abc.abstractmethod
    def compute(self) -> np.ndarray:
        """The rows as a float32 array ``len(self) x ...``."""


@dataclass(eq=False)
class Results:
    """Masks for one image.

    Attributes:
        orig_img: ``H x W x 3`` uint8 original image, **BGR** (OpenCV order, like Ultralytics).
        path: file, URL or ``imageN`` the image came from; ``frame``: video frame index.
        masks: ``N x H x W`` bool. scores: ``N`` float32 predicted IoU.
        boxes: ``N x 4`` float32 XYXY of the masks (computed when not given).
        prompt_index: ``N`` int64, the prompt each mask answers (``arange(N)`` by default).
        low_res_logits: ``N x 256 x 256`` float32 logits (feed back as ``masks=`` prompts); the
            fast prompted path computes them when first read (may be given as
            :class:`DeferredRows`).
        stability_scores: ``N`` float32 (segment-everything mode) or None.
        prompt_points ``P x K x 2``, prompt_labels ``P x K``, prompt_boxes ``P x 4`` XYXY: the
        prompts in image pixels (drawn by :meth:`plot`). speed: milliseconds per stage.
    """

    orig_img: np.ndarray
    path: str
    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None = None
    prompt_index: np.ndarray | None = None
    low_res_logits: np.ndarray | None = None
    stability_scores: np.ndarray | None = None
    prompt_points: np.ndarray | None = None
    prompt_labels: np.ndarray | None = None
    prompt_boxes: np.ndarray | None = None
    frame: int | None = None
    speed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        img = np.asarray(self.orig_img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"orig_img must be H x W x 3 uint8, got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        masks = np.asarray(self.masks).astype(bool, copy=False)
        if masks.ndim == 2 and masks.size == 0:
            masks = masks.reshape(0, h, w)
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise ValueError(f"masks must be N x {h} x {w}, got shape {masks.shape}")
        n = masks.shape[0]
        self.orig_img, self.masks = img, masks
        self.path = str(self.path)
        self.scores = self._vec(self.scores, n, np.float32, "scores")
        self.boxes = (
            masks_to_boxes_np(masks)
            if self.boxes is None
            else np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        )
        if self.prompt_index is None:
            self.prompt_index = np.arange(n, dtype=np.int64)
        self.prompt_index = self._vec(self.prompt_index, n, np.int64, "prompt_index")
        if self.stability_scores is not None:
            self.stability_scores = self._vec(self.stability_scores, n, np.float32, "stability")
        low_res = self.__dict__["_low_res"]
        if low_res is not None and len(low_res) != n:
            raise ValueError(f"low_res_logits must have {n} rows, got {len(low_res)}")

    @staticmethod
    def _vec(value, n: int, dtype, name: str) -> np.ndarray:
        arr = np.asarray(value, dtype=dtype).reshape(-1)
        if arr.shape != (n,):
            raise ValueError(f"{name} must have one value per mask ({n}), got shape {arr.shape}")
        return arr

    # -- basics -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return tuple(self.orig_img.shape[:2])

    @property
    def areas(self) -> np.ndarray:
        """``N`` int64 mask areas in pixels."""
        return self.masks.reshape(len(self), -1).sum(1).astype(np.int64)

    def __getitem__(self, index: Any) -> Results:
        """A Results with the selected masks (int, slice, index array or bool array)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        per_mask = ("masks", "scores", "boxes", "prompt_index", "stability_scores")
        kw = {f: (None if getattr(self, f) is None else getattr(self, f)[idx]) for f in per_mask}
        low_res = self.__dict__["_low_res"]  # sliced as is: deferred rows stay deferred
        if low_res is not None:
            low_res = low_res.take(idx) if isinstance(low_res, DeferredRows) else low_res[idx]
        return replace(self, **kw, low_res_logits=low_res, speed=dict(self.speed))

    def best(self) -> Results:
        """One mask per prompt: the highest-scoring one (for ``multimask_output=True`` calls)."""
        if len(self) == 0:
            return self[:0]
        keep = []
        for p in np.unique(self.prompt_index):
            rows = np.flatnonzero(self.prompt_index == p)
            keep.append(rows[np.argmax(self.scores[rows])])
        return self[np.asarray(keep)]

    def __repr__(self) -> str:
        h, w = self.shape
        return f"Results({self.path!r}, {len(self)} masks, {w}x{h})"

    # -- converters ---------------------------------------------------------------------------
    def to_coco_rle(self) -> list[dict[str, Any]]:
        """Compressed COCO RLE per mask: ``{"size": [h, w], "counts": str}`` (pycocotools' format
        with ``counts`` decoded to ``str``; pass ``counts.encode()`` to pycocotools)."""
        return [encode_coco_rle(m) for m in self.masks]

    @cached_property
    def xy(self) -> list[list[np.ndarray]]:
        """Per mask, the outer polygons of all its parts: ``(K, 2)`` float32 xy pixels each."""
        return [mask_to_polygons(m) for m in self.masks]

    @property
    def xyn(self) -> list[list[np.ndarray]]:
        """:attr:`xy` normalized to [0, 1] (x / width, y / height)."""
        h, w = self.shape
        return [[normalize_polygon(p, h, w) for p in parts] for parts in self.xy]

    def to_yolo(self, class_ids: int | Sequence[int] = 0, decimals: int = 6) -> str:
        """YOLO segmentation label text: ``class x1 y1 x2 y2 ...`` (normalized), one line per mask.

        The parts of a mask are merged into one polygon (:func:`samkit.ops.merge_polygons`);
        masks without a polygon (empty, or only specks) get no line.
        """
        n = len(self)
        ids = np.broadcast_to(np.asarray(class_ids, dtype=np.int64), (n,)) if n else []
        h, w = self.shape
        lines = []
        for cls, parts in zip(ids, self.xy):
            if not parts:
                continue
            poly = normalize_polygon(merge_polygons(parts), h, w)
            coords = " ".join(f"{v:.{decimals}f}" for v in poly.ravel())
            lines.append(f"{int(cls)} {coords}")
        return "\n".join(lines) + ("\n" if lines else "")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python description: image info plus one entry per mask (RLE segmentation)."""
        h, w = self.shape
        rles = self.to_coco_rle()
        areas = self.areas
        masks = []
        for i in range(len(self)):
            entry = {
                "id": i,
                "prompt_index": int(self.prompt_index[i]),
                "score": float(self.scores[i]),
                "bbox_xyxy": [float(v) for v in self.boxes[i]],
                "area": int(areas[i]),
                "segmentation": rles[i],
            }
            if self.stability_scores is not None:
                entry["stability_score"] = float(self.stability_scores[i])
            masks.append(entry)
        return {"path": self.path, "frame": self.frame, "height": h, "width": w, "masks": masks}

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    # -- drawing and files ----------------------------------------------------------------------
    def plot(self, **kwargs: Any) -> np.ndarray:
        """Overlay image (masks, boxes, prompts); BGR uint8 unless ``image_format="RGB"``.

        Options: ``masks``, ``boxes``, ``prompts``, ``scores``, ``contours`` (bool),
        ``alpha``, ``line_width``, ``image_format`` (see :func:`samkit.plotting.plot_results`).
        """
        from .ops.plotting import plot_results

        return plot_results(self, **kwargs)

    def save(self, path: str | os.PathLike | None = None, **plot_kwargs: Any) -> Path:
        """Write :meth:`plot` to ``path`` (default ``results_<name>.png``) atomically."""
        dest = Path(path) if path is not None else Path(f"results_{_safe_stem(self.path)}.png")
        suffix = dest.suffix.lower() or ".png"
        image = self.plot(**plot_kwargs, image_format="BGR")
        write_atomic(dest, _encode_image(image, suffix))
        return dest

    def save_masks(self, directory: str | os.PathLike, prefix: str | None = None) -> list[Path]:
        """Write each mask as a 0/255 PNG ``<prefix>_<i>.png`` inside ``directory`` (atomically).

        ``prefix`` defaults to the image's file stem (plus ``_<frame>`` for video frames); it is
        reduced to safe file-name characters, so nothing is written outside ``directory``.
        """
        out_dir = Path(directory)
        name = _safe_stem(prefix if prefix is not None else self.path)
        if prefix is None and self.frame is not None:
            name = f"{name}_{self.frame}"
        paths = []
        for i, m in enumerate(self.masks):
            dest = out_dir / f"{name}_{i}.png"
            write_atomic(dest, _encode_image(m.astype(np.uint8) * 255, ".png"))
            paths.append(dest)
        return paths


# A property over the dataclass field: the generated __init__ assigns through the setter, and
# the getter computes deferred rows on first read.
Results.low_res_logits = property(_get_low_res, _set_low_res, doc="N x 256 x 256 float32 logits.")
