"""Box sources for auto-annotation: detector outputs normalized to one validated record.

A box source is called with ``(relative_path, image)`` (``image`` is ``H x W x 3`` RGB uint8)
and returns :class:`Detections`. Sources here wrap a detector: any callable
``image -> (boxes_xyxy, class_ids[, scores])`` or an Ultralytics YOLO model (optional
dependency). Existing label files are read by :mod:`samkit.datasets_io`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from ..errors import CheckpointError, DatasetError, DependencyError

YOLO_HINT = 'pip install "samkit[yolo]"'
#: Largest class id accepted anywhere (int32 range: a larger id is a corrupt label, and 1e20
#: would wrap around in int64).
MAX_CLASS_ID = 2**31 - 1


@dataclass
class Detections:
    """Boxes of one image: ``boxes_xyxy`` N x 4 float64 pixels (XYXY), ``class_ids`` N int64,
    ``scores`` N float64 (1.0 where the source has no confidence)."""

    boxes_xyxy: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0))

    @classmethod
    def from_arrays(cls, boxes_xyxy: Any, class_ids: Any, scores: Any = None) -> Detections:
        """Validate and convert array-likes (numpy, torch, lists); raises :class:`DatasetError`."""
        try:
            return cls._from_arrays(boxes_xyxy, class_ids, scores)
        except (TypeError, ValueError) as exc:
            raise DatasetError(
                f"boxes, class ids and scores must be numeric arrays: {exc}"
            ) from exc

    @classmethod
    def _from_arrays(cls, boxes_xyxy: Any, class_ids: Any, scores: Any) -> Detections:
        boxes = _as_numpy(boxes_xyxy).astype(np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DatasetError(f"boxes must be N x 4 (x1, y1, x2, y2 pixels), got {boxes.shape}")
        n = len(boxes)
        cls_f = _as_numpy(class_ids).astype(np.float64).reshape(-1)
        if cls_f.shape != (n,):
            raise DatasetError(f"got {n} boxes but {cls_f.size} class ids")
        if (
            not np.all(np.isfinite(cls_f))
            or np.any(cls_f < 0)
            or np.any(cls_f > MAX_CLASS_ID)
            or np.any(cls_f != np.round(cls_f))
        ):
            raise DatasetError(
                f"class ids must be non-negative integers up to {MAX_CLASS_ID}, got {cls_f.tolist()[:10]}"
            )
        if scores is None:
            score_arr = np.ones(n)
        else:
            score_arr = _as_numpy(scores).astype(np.float64).reshape(-1)
            if score_arr.shape != (n,):
                raise DatasetError(f"got {n} boxes but {score_arr.size} scores")
        if not np.all(np.isfinite(boxes)) or not np.all(np.isfinite(score_arr)):
            raise DatasetError("boxes and scores must be finite numbers (got NaN or inf)")
        return cls(boxes, cls_f.astype(np.int64), score_arr)

    def __len__(self) -> int:
        return len(self.boxes_xyxy)

    def select(self, keep: np.ndarray) -> Detections:
        """The detections at the bool mask or index array ``keep``, in their original order."""
        return Detections(self.boxes_xyxy[keep], self.class_ids[keep], self.scores[keep])


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class BoxSource:
    """Where an image's boxes come from. Call with ``(relative path, RGB image)``.

    ``names``: ``{class id: name}`` when known. ``to_output_ids``: a map of the source's class
    ids to YOLO's contiguous 0..K-1 (None: already contiguous). ``image_ids``: COCO image ids
    to keep in the output (None: numbered in file order).
    """

    names: dict[int, str] | None = None
    to_output_ids: dict[int, int] | None = None
    image_ids: dict[PurePosixPath, Any] | None = None

    def __call__(self, rel: PurePosixPath, image: np.ndarray) -> Detections:
        raise NotImplementedError


def normalize_names(names: Any) -> dict[int, str] | None:
    """Class names as ``{id: name}`` from a dict, a list/tuple (index = id) or None."""
    if names is None:
        return None
    if isinstance(names, Mapping):
        try:
            return {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"class names must map integer ids to names: {exc}") from exc
    if isinstance(names, Sequence) and not isinstance(names, (str, bytes)):
        return {i: str(v) for i, v in enumerate(names)}
    raise DatasetError(
        f"class names must be a list or a {{id: name}} dict, got {type(names).__name__}"
    )


class CallableDetector(BoxSource):
    """Wraps ``fn(image) -> (boxes_xyxy, class_ids[, scores])``; ``image`` is H x W x 3 RGB uint8.

    ``boxes_xyxy`` is N x 4 in pixels of that image. Class names are taken from ``fn.names``
    (list or dict) when it has one.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any]) -> None:
        self.fn = fn
        self.names = normalize_names(getattr(fn, "names", None))

    def __call__(self, rel: PurePosixPath, image: np.ndarray) -> Detections:
        out = self.fn(image)
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise DatasetError(
                "the detector must return (boxes_xyxy, class_ids) or (boxes_xyxy, class_ids, "
                f"scores), got {type(out).__name__}"
            )
        return Detections.from_arrays(*out)


class UltralyticsDetector(BoxSource):
    """An Ultralytics YOLO detection model (a weights path/name or a loaded ``YOLO`` object).

    Runs ``model.predict`` on the BGR image with the given thresholds; class names come from
    ``model.names``. Needs the optional ``ultralytics`` package (``pip install "samkit[yolo]"``).
    """

    def __init__(
        self,
        model: Any,
        *,
        conf: float = 0.25,
        iou: float = 0.45,
        imgsz: int = 640,
        max_det: int = 300,
        classes: list[int] | None = None,
        device: str = "",
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            model = _load_yolo(model)
        self.model = model
        self.kwargs = {
            "conf": conf,
            "iou": iou,
            "imgsz": imgsz,
            "max_det": max_det,
            "classes": classes,
            "device": device or None,
            "verbose": False,
        }
        self.names = normalize_names(getattr(model, "names", None))

    def __call__(self, rel: PurePosixPath, image: np.ndarray) -> Detections:
        bgr = np.ascontiguousarray(image[..., ::-1])  # Ultralytics reads arrays as OpenCV BGR
        results = self.model.predict(bgr, **self.kwargs)
        if len(results) != 1:
            raise DatasetError(f"the YOLO model returned {len(results)} results for one image")
        boxes = results[0].boxes
        if boxes is None:
            return Detections.empty()
        return Detections.from_arrays(boxes.xyxy, boxes.cls, boxes.conf)


def is_ultralytics_model(obj: Any) -> bool:
    """True for a loaded Ultralytics model object (has ``predict`` and ``names``)."""
    return callable(getattr(obj, "predict", None)) and hasattr(obj, "names")


def _load_yolo(weights: str | os.PathLike) -> Any:
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise DependencyError(
            f"the detector {str(weights)!r} is an Ultralytics YOLO model, which needs the "
            f"optional 'ultralytics' package: {YOLO_HINT}. Without it, pass a callable detector "
            "(image -> boxes_xyxy, class_ids[, scores]) as det_model, or existing boxes with "
            "labels= (a YOLO label folder or a COCO JSON)."
        ) from exc
    try:
        return YOLO(str(weights))
    except Exception as exc:
        raise CheckpointError(f"could not load the YOLO detector {str(weights)!r}: {exc}") from exc
