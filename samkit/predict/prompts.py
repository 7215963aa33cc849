"""Validation and normalization of user prompts, in pixels of the original image.

Ultralytics-style prompt forms, checked in two steps: :func:`parse_prompts` checks what does not
depend on the image (shapes, NaN/inf, labels, counts) once per call; :func:`fit_prompts` checks
each prompt against one image (points inside, boxes clipped, coordinates that look normalized,
mask sizes). Errors are :class:`~samkit.errors.PromptError` naming the prompt and the reason.

Torch-free (NumPy and OpenCV), so the onnxruntime predictor can share it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from ..errors import PromptError

#: Magnitude of the logits a binary mask prompt is turned into (inside +10, outside -10).
MASK_PROMPT_LOGIT = 10.0
#: Side of SAM's low-resolution mask logits (mask prompts and ``low_res_logits``).
LOW_RES_SIZE = 256


@dataclass(frozen=True)
class Prompts:
    """Prompts for ``n`` objects, in original-image pixels.

    ``points`` ``n x K x 2`` float64 ``(x, y)`` with ``labels`` ``n x K`` int32 (1 foreground,
    0 background, -1 padding); ``boxes`` ``n x 4`` float64 XYXY; ``masks`` ``n x H x W`` bool
    masks at image size (``mask_kind="binary"``) or ``n x 256 x 256`` float32 low-res logits
    (``mask_kind="logits"``); ``mask_kind`` is None until :func:`fit_prompts` decided it.
    ``point_form`` remembers how points were given ("single", "per_object" or "grouped") so
    messages can name them as the user wrote them.
    """

    n: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    masks: np.ndarray | None = None
    mask_kind: str | None = None
    point_form: str = "grouped"

    @property
    def empty(self) -> bool:
        """True when no prompt of any kind was given (segment-everything mode)."""
        return self.points is None and self.boxes is None and self.masks is None

    def take(self, start: int, stop: int) -> Prompts:
        """The prompts of objects ``start..stop-1`` (views, no copy)."""

        def cut(a):
            return None if a is None else a[start:stop]

        stop = min(stop, self.n)
        return replace(
            self,
            n=max(0, stop - start),
            points=cut(self.points),
            labels=cut(self.labels),
            boxes=cut(self.boxes),
            masks=cut(self.masks),
        )

    def point_name(self, i: int, k: int) -> str:
        if self.point_form == "single":
            return "points"
        if self.point_form == "per_object":
            return f"points[{i}]"
        return f"points[{i}][{k}]"


def _as_array(value: Any, name: str, dtype=np.float64) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on an accelerator
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise PromptError(
            f"{name} must be a rectangular array of numbers ({exc}); for objects with different "
            "numbers of points, pad the shorter ones with label -1"
        ) from exc
    return arr


def _check_finite(arr: np.ndarray, name: str, per: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.argwhere(bad)[0]
        where = f"{name}[{idx[0]}]" if arr.ndim > 1 else name
        raise PromptError(f"{where} contains NaN or inf; every {per} must be a finite number")


def _parse_points(points: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, str]:
    pts = _as_array(points, "points")
    if pts.shape == (2,):
        form, pts = "single", pts.reshape(1, 1, 2)
    elif pts.ndim == 2 and pts.shape[1] == 2:
        form, pts = "per_object", pts[:, None, :]
    elif pts.ndim == 3 and pts.shape[2] == 2:
        form = "grouped"
    else:
        raise PromptError(
            f"points must have shape (2,), (N, 2) for N objects of one point each, or (N, K, 2) "
            f"for N objects of K points each; got shape {pts.shape}"
        )
    _check_finite(pts, "points", "point coordinate")
    n, k = pts.shape[:2]
    if n and k == 0:
        raise PromptError(f"points has shape {pts.shape}: each object needs at least one point")
    if labels is None:
        return pts, np.ones((n, k), dtype=np.int32), form
    lab = _as_array(labels, "labels")
    expected = {"single": [(), (1,)], "per_object": [(n,)], "grouped": [(n, k)]}[form]
    if lab.shape not in expected:
        hint = ""
        if form == "per_object" and lab.shape == (1, n):
            hint = (
                f"; points of shape ({n}, 2) are {n} objects of one point each - for one object "
                f"with {n} points pass points of shape (1, {n}, 2) and labels (1, {n})"
            )
        raise PromptError(
            f"labels must have one label per point: shape {expected[0]} for points of shape "
            f"{tuple(np.asarray(points).shape)}, got labels of shape {lab.shape}{hint}"
        )
    _check_finite(lab, "labels", "label")
    if not np.isin(lab, (-1.0, 0.0, 1.0)).all():
        bad = lab[~np.isin(lab, (-1.0, 0.0, 1.0))].ravel()[0]
        raise PromptError(
            f"labels must be 1 (foreground), 0 (background) or -1 (padding, ignored), got {bad:g}"
        )
    lab = lab.reshape(n, k).astype(np.int32)
    if n and k and (lab == -1).all(axis=1).any():
        i = int(np.flatnonzero((lab == -1).all(axis=1))[0])
        raise PromptError(f"all points of object {i} have label -1 (padding): give it a real point")
    return pts, lab, form


def _parse_boxes(bboxes: Any) -> np.ndarray:
    boxes = _as_array(bboxes, "bboxes")
    if boxes.shape == (4,):
        boxes = boxes.reshape(1, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise PromptError(
            f"bboxes must have shape (4,) or (N, 4) in XYXY pixels (x1, y1, x2, y2); got shape "
            f"{boxes.shape}"
        )
    _check_finite(boxes, "bboxes", "box coordinate")
    flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if flipped.any():
        i = int(np.flatnonzero(flipped)[0])
        raise PromptError(
            f"bboxes[{i}] = {_fmt(boxes[i])} has x2 < x1 or y2 < y1: boxes are XYXY "
            "(x1, y1, x2, y2); convert XYWH boxes with samkit.ops.xywh_to_xyxy"
        )
    return boxes


def _parse_masks(masks: Any) -> np.ndarray:
    if hasattr(masks, "detach"):
        masks = masks.detach().cpu().numpy()
    arr = np.asarray(masks)
    if arr.dtype == object or not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)):
        raise PromptError(f"masks must be a numeric or bool array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise PromptError(
            f"masks must have shape (N, H, W) (binary, at image size) or (N, 256, 256) (low-res "
            f"logits of an earlier call); got shape {np.asarray(masks).shape}"
        )
    if arr.dtype != np.bool_:
        arr = arr.astype(np.float32)
        _check_finite(arr, "masks", "mask value")
    return arr


def parse_prompts(bboxes: Any = None, points: Any = None, labels: Any = None, masks: Any = None):
    """Check the shapes and values of user prompts; returns :class:`Prompts` (no image needed).

    Forms: ``points`` ``(N, 2)`` + ``labels`` ``(N,)``: N objects of one point; ``points``
    ``(N, K, 2)`` + ``labels`` ``(N, K)``: N objects of K points (labels default to 1);
    ``bboxes`` ``(N, 4)`` XYXY, optionally with ``points`` ``(N, K, 2)`` (box + points per
    object); ``masks`` ``(N, H, W)`` binary or ``(N, 256, 256)`` logits, one per object.
    """
    if labels is not None and points is None:
        raise PromptError("labels were given without points: pass points= with labels=")
    pts = lab = boxes = mask_arr = None
    form = "grouped"
    counts: dict[str, int] = {}
    if points is not None:
        pts, lab, form = _parse_points(points, labels)
        counts["points"] = pts.shape[0]
    if bboxes is not None:
        boxes = _parse_boxes(bboxes)
        counts["bboxes"] = boxes.shape[0]
    if masks is not None:
        mask_arr = _parse_masks(masks)
        counts["masks"] = mask_arr.shape[0]
    if len(set(counts.values())) > 1:
        desc = ", ".join(f"{v} from {k}" for k, v in counts.items())
        hint = ""
        if "points" in counts and "bboxes" in counts and form == "per_object":
            k = counts["points"]
            hint = (
                f"; points of shape ({k}, 2) are {k} objects of one point each - for a box with "
                f"{k} points pass points of shape (1, {k}, 2)"
            )
        raise PromptError(f"the prompts disagree on the number of objects ({desc}){hint}")
    n = next(iter(counts.values()), 0)
    return Prompts(n, pts, lab, boxes, mask_arr, None, form)


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in np.ravel(values)) + ")"


def _check_not_normalized(p: Prompts, height: int, width: int) -> None:
    coords = []
    if p.points is not None:
        coords.append(p.points[p.labels != -1].ravel())
    if p.boxes is not None:
        coords.append(p.boxes.ravel())
    if not coords or min(height, width) < 32:
        return
    flat = np.concatenate(coords)
    if flat.size and flat.min() >= 0 and flat.max() <= 1 and (flat != np.round(flat)).any():
        example = f"bboxes[0] = {_fmt(p.boxes[0])}" if p.boxes is not None else ""
        if not example:
            i, k = (int(v) for v in np.argwhere(p.labels != -1)[0])
            example = f"{p.point_name(i, k)} = {_fmt(p.points[i, k])}"
        raise PromptError(
            f"all prompt coordinates are within [0, 1] (e.g. {example}) on a {width} x {height} "
            "image: they look normalized, but prompts are in pixels of the original image - "
            "multiply x by the image width and y by its height"
        )


def fit_prompts(
    prompts: Prompts, height: int, width: int, mask_size: int = LOW_RES_SIZE
) -> Prompts:
    """Check :class:`Prompts` against an ``height x width`` image; boxes clipped to the image.

    Raises :class:`PromptError` for a point outside the image, a box entirely outside it,
    coordinates that look normalized (all within [0, 1] on an image of 32 pixels or more) and
    masks that are neither binary at image size nor ``mask_size x mask_size`` logits (256 for
    SAM's models).
    """
    p = prompts
    _check_not_normalized(p, height, width)
    boxes, masks, kind = p.boxes, p.masks, None
    if p.points is not None:
        x, y = p.points[..., 0], p.points[..., 1]
        outside = ((x < 0) | (x > width) | (y < 0) | (y > height)) & (p.labels != -1)
        if outside.any():
            i, k = (int(v) for v in np.argwhere(outside)[0])
            raise PromptError(
                f"{p.point_name(i, k)} = {_fmt(p.points[i, k])} lies outside the {width} x "
                f"{height} image (x must be in [0, {width}], y in [0, {height}])"
            )
    if boxes is not None:
        x1, y1, x2, y2 = boxes.T
        outside = (x2 < 0) | (y2 < 0) | (x1 > width) | (y1 > height)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise PromptError(
                f"bboxes[{i}] = {_fmt(boxes[i])} lies entirely outside the {width} x {height} image"
            )
        boxes = boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    if masks is not None:
        masks, kind = _fit_masks(masks, height, width, mask_size)
    return replace(p, boxes=boxes, masks=masks, mask_kind=kind)


def _fit_masks(masks: np.ndarray, height: int, width: int, size: int) -> tuple[np.ndarray, str]:
    binary = masks.dtype == np.bool_ or bool(np.isin(masks, (0.0, 1.0)).all())
    if masks.shape[1:] == (height, width) and binary:
        return masks.astype(bool), "binary"
    if masks.shape[1:] == (size, size) and masks.dtype != np.bool_:
        return masks.astype(np.float32), "logits"
    if masks.shape[1:] == (height, width):
        raise PromptError(
            f"masks at the image size ({height} x {width}) must be binary (bool or 0/1), got "
            f"values in [{masks.min():g}, {masks.max():g}]"
        )
    raise PromptError(
        f"masks must be (N, {height}, {width}) binary masks at the image size or (N, {size}, "
        f"{size}) low-res logits of an earlier call; got shape {masks.shape}"
    )


def binary_masks_to_logits(
    masks: np.ndarray,
    input_size: tuple[int, int],
    model_size: int,
    mask_size: int = LOW_RES_SIZE,
    logit: float = MASK_PROMPT_LOGIT,
) -> np.ndarray:
    """Binary ``N x H x W`` masks -> ``N x 1 x 256 x 256`` float32 mask-prompt logits.

    The mask is area-resampled into the part of the ``mask_size`` grid (256 for SAM, a quarter
    of the model input ``model_size``) that the resized image occupies (``input_size`` is the
    image size after the long-side resize), the padding is background, and coverage ``f`` in
    [0, 1] becomes ``(2 f - 1) * logit``.
    """
    scale = mask_size / model_size
    h = max(1, round(input_size[0] * scale))
    w = max(1, round(input_size[1] * scale))
    out = np.zeros((masks.shape[0], 1, mask_size, mask_size), dtype=np.float32)
    for i, m in enumerate(masks):
        out[i, 0, :h, :w] = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return (out * 2 - 1) * np.float32(logit)
