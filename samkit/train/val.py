"""Prompted-segmentation validation: per-instance mIoU with the standard simulated prompts.

For every ground-truth instance of every image the protocol builds a prompt from the
ground-truth mask alone, asks the model for masks and scores the IoU at the original resolution:

``"box"``
    The tight XYXY box of the mask (inclusive right/bottom pixel), one mask out
    (``multimask=False`` by default, as SAM is used with boxes).
``"point"``
    One positive click at the interior point farthest from the mask boundary (image borders count
    as boundary); three masks out. The mask with the highest *predicted* IoU is scored, and the
    best of the three (the *oracle*) is reported too.
``"points<k>"`` (e.g. ``"points3"``)
    The first click as for ``"point"`` (selected by predicted IoU), then ``k - 1`` further clicks,
    each at the interior point of the largest error region of the current mask: positive if the
    region is missed foreground, negative if it is false background. Clicks 2.. predict one mask
    from all clicks so far. mIoU is reported after every click.

Instances are grouped by ground-truth area (original pixels) as COCO does: small < 32²,
medium < 96², large otherwise. Any object with ``set_image(rgb)`` and ``predict_batch(...)``
(see :class:`MaskDecoderLike`) can be evaluated; :class:`SamBackend` adapts a :class:`Sam`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from ..data.datasets import SegDataset
from ..errors import PromptError, SamkitError
from ..ops.boxes import mask_to_box_xyxy

__all__ = [
    "SIZE_BINS",
    "MaskDecoderLike",
    "SamBackend",
    "ValResults",
    "error_click",
    "interior_point",
    "validate",
]

SIZE_BINS = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, float("inf"))}


class MaskDecoderLike(Protocol):
    """What validation needs from a model."""

    def set_image(self, image: np.ndarray) -> None:
        """Encode an ``H x W x 3`` uint8 RGB image."""

    def predict_batch(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``B`` prompts -> ``(masks B x C x H x W bool, predicted_iou B x C)``.

        ``points`` ``B x N x 2`` (x, y) and ``labels`` ``B x N`` (1 fg / 0 bg), ``boxes`` ``B x 4``
        XYXY, all in original-image pixels; C = 3 with ``multimask`` else 1.
        """


class SamBackend:
    """:class:`MaskDecoderLike` over a :class:`~samkit.models.Sam` (through :class:`SamPredictor`)."""

    def __init__(self, sam) -> None:
        from ..predict.sam_predictor import SamPredictor

        self.predictor = SamPredictor(sam)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def predict_batch(self, points, labels, boxes, multimask):
        from ..predict.decode import decode_prompts
        from ..predict.prompts import Prompts

        n = len(points) if points is not None else len(boxes)
        prompts = Prompts(
            n=n,
            points=None if points is None else np.asarray(points, np.float64),
            labels=None if labels is None else np.asarray(labels, np.int32),
            boxes=None if boxes is None else np.asarray(boxes, np.float64),
        )
        out = decode_prompts(self.predictor, prompts, multimask)
        c = 3 if multimask else 1
        return out.masks.reshape(n, c, *out.masks.shape[1:]), out.scores.reshape(n, c)


def interior_point(mask: np.ndarray) -> np.ndarray:
    """The pixel ``(x, y)`` of ``mask`` farthest from its boundary (L2 distance transform, image
    borders count as boundary; the first in row-major order on ties). ``mask`` must be non-empty."""
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x, y], np.float64)


def error_click(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, int]:
    """The next simulated click: ``((x, y), label)`` at the interior point of the largest
    8-connected error region; label 1 where the region is missed foreground, 0 where it is false
    foreground. With no error, a positive click at the interior point of ``gt``."""
    err = pred != gt
    if not err.any():
        return interior_point(gt), 1
    n, comp, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = comp == largest
    xy = interior_point(region)
    return xy, int(gt[int(xy[1]), int(xy[0])])


def _iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of ``B x C x H x W`` predictions against ``B x H x W`` ground truth: ``B x C``."""
    g = gt[:, None]
    inter = np.logical_and(pred, g).sum((-2, -1))
    union = np.logical_or(pred, g).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


@dataclass
class ValResults:
    """Per-instance IoUs of one validation run (arrays in dataset order)."""

    prompt: str
    multimask: bool
    ious: np.ndarray  # IoU of the mask chosen by predicted IoU, after the last click
    oracle_ious: np.ndarray  # best IoU among the candidate masks of the last step
    areas: np.ndarray  # ground-truth areas in pixels
    per_click: list[float] = field(default_factory=list)  # mIoU after each click ("points<k>")
    images: int = 0
    skipped: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"ValResults(prompt={self.prompt!r}, instances={self.ious.size}, "
            f"images={self.images}, miou={self.miou:.4f}, oracle_miou={self.oracle_miou:.4f})"
        )

    @property
    def miou(self) -> float:
        """Mean IoU over all instances (mask selected by predicted IoU)."""
        return float(self.ious.mean()) if self.ious.size else float("nan")

    @property
    def oracle_miou(self) -> float:
        return float(self.oracle_ious.mean()) if self.oracle_ious.size else float("nan")

    def by_size(self, oracle: bool = False) -> dict[str, float]:
        """mIoU for ``all``, ``small``, ``medium``, ``large`` (NaN for an empty group)."""
        ious = self.oracle_ious if oracle else self.ious
        out = {"all": float(ious.mean()) if ious.size else float("nan")}
        for name, (lo, hi) in SIZE_BINS.items():
            sel = (self.areas >= lo) & (self.areas < hi)
            out[name] = float(ious[sel].mean()) if sel.any() else float("nan")
        return out

    def counts(self) -> dict[str, int]:
        out = {"all": int(self.areas.size)}
        for name, (lo, hi) in SIZE_BINS.items():
            out[name] = int(((self.areas >= lo) & (self.areas < hi)).sum())
        return out

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "multimask": self.multimask,
            "images": self.images,
            "instances": self.counts(),
            "miou": self.by_size(),
            "oracle_miou": self.by_size(oracle=True),
            "per_click": list(self.per_click),
            "skipped": list(self.skipped),
        }

    def table(self) -> str:
        cols = ["all", *SIZE_BINS]
        counts, sel, orc = self.counts(), self.by_size(), self.by_size(oracle=True)
        mode = "3 masks, best by predicted IoU" if self.multimask else "1 mask"
        lines = [
            f"prompt {self.prompt!r} ({mode}): {counts['all']} instances in {self.images} images",
            f"{'':<14}" + "".join(f"{c:>9}" for c in cols),
            f"{'instances':<14}" + "".join(f"{counts[c]:>9}" for c in cols),
            f"{'mIoU':<14}" + "".join(f"{sel[c]:>9.3f}" for c in cols),
        ]
        if self.multimask:
            lines.append(f"{'oracle mIoU':<14}" + "".join(f"{orc[c]:>9.3f}" for c in cols))
        if len(self.per_click) > 1:
            lines.append("mIoU per click: " + ", ".join(f"{v:.3f}" for v in self.per_click))
        if self.skipped:
            lines.append(f"{len(self.skipped)} images skipped (first: {self.skipped[0]})")
        return "\n".join(lines)


def _parse_prompt(prompt: str) -> tuple[str, int]:
    if prompt == "box":
        return "box", 0
    if prompt == "point":
        return "points", 1
    m = re.fullmatch(r"points(\d+)", prompt)
    if m and int(m.group(1)) >= 1:
        return "points", int(m.group(1))
    raise PromptError(
        f"prompt must be 'box', 'point' or 'points<k>' (e.g. 'points3'), got {prompt!r}"
    )


def _eval_image(model, image, gts, kind, clicks, multimask, chunk):
    """IoUs of one image's instances: (selected B, oracle B, per-click list of B arrays)."""
    model.set_image(image)
    sel_all, orc_all, click_all = [], [], []
    for start in range(0, len(gts), chunk):
        gt = gts[start : start + chunk]
        if kind == "box":
            boxes = np.stack([mask_to_box_xyxy(m) for m in gt]).astype(np.float64)
            masks, pred_iou = model.predict_batch(None, None, boxes, multimask)
            ious = _iou(masks, gt)
            best = np.argmax(pred_iou, axis=1)
            sel_all.append(ious[np.arange(len(gt)), best])
            orc_all.append(ious.max(axis=1))
            continue
        pts = np.stack([interior_point(m) for m in gt])[:, None]
        lbl = np.ones((len(gt), 1), np.int64)
        masks, pred_iou = model.predict_batch(pts, lbl, None, True)
        ious = _iou(masks, gt)
        best = np.argmax(pred_iou, axis=1)
        chosen = masks[np.arange(len(gt)), best]
        sel, orc = ious[np.arange(len(gt)), best], ious.max(axis=1)
        per_click = [sel]
        for _ in range(clicks - 1):
            nxt = [error_click(c, g) for c, g in zip(chosen, gt)]
            pts = np.concatenate([pts, np.stack([p for p, _ in nxt])[:, None]], axis=1)
            lbl = np.concatenate([lbl, np.array([[lab] for _, lab in nxt])], axis=1)
            masks, _ = model.predict_batch(pts, lbl, None, False)
            chosen = masks[:, 0]
            sel = orc = _iou(masks, gt)[:, 0]
            per_click.append(sel)
        sel_all.append(sel)
        orc_all.append(orc)
        click_all.append(np.stack(per_click))
    clicks_arr = np.concatenate(click_all, axis=1) if click_all else None
    return np.concatenate(sel_all), np.concatenate(orc_all), clicks_arr


def validate(
    model: MaskDecoderLike,
    data: SegDataset,
    prompt: str = "box",
    *,
    multimask: bool | None = None,
    max_images: int | None = None,
    chunk: int = 16,
    verbose: bool = True,
    progress: bool = False,
) -> ValResults:
    """Evaluate ``model`` on every instance of ``data`` with simulated ``prompt``s.

    ``multimask`` (box prompts only; default False) asks for three masks per box and scores the
    one with the highest predicted IoU. ``max_images`` limits the images used (the first ones);
    ``chunk`` is how many prompts are decoded at once. An image that cannot be read is skipped and
    reported in :attr:`ValResults.skipped`. Prints the table when ``verbose``.
    """
    kind, clicks = _parse_prompt(prompt)
    if kind == "points" and multimask is not None and not multimask:
        raise PromptError("point prompts always score three masks for the first click")
    multimask = bool(multimask) if kind == "box" else True
    n_images = len(data) if max_images is None else min(len(data), max_images)
    sel, orc, areas, click_rows, skipped = [], [], [], [], []
    used = 0
    indices = range(n_images)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"val {prompt}", leave=False)
    for i in indices:
        try:
            sample = data.load(i)
        except SamkitError as e:
            skipped.append(str(e))
            continue
        gts = sample.masks[sample.masks.any(axis=(1, 2))] if len(sample.masks) else sample.masks
        used += 1
        if not len(gts):
            continue
        s, o, c = _eval_image(model, sample.image, gts, kind, clicks, multimask, chunk)
        sel.append(s)
        orc.append(o)
        areas.append(gts.sum(axis=(1, 2)))
        if c is not None:
            click_rows.append(c)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    per_click = []
    if click_rows and clicks > 1:
        per_click = [float(v) for v in np.concatenate(click_rows, axis=1).mean(axis=1)]
    results = ValResults(
        prompt=prompt,
        multimask=multimask if kind == "box" else clicks == 1,
        ious=cat(sel).astype(np.float64),
        oracle_ious=cat(orc).astype(np.float64),
        areas=cat(areas).astype(np.int64),
        per_click=per_click,
        images=used,
        skipped=skipped,
    )
    if verbose:
        print(results.table())
    return results
