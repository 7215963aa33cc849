"""Segment everything: automatic mask generation over a grid of point prompts.

:func:`segment_everything` takes Ultralytics' argument names and returns an
:class:`EverythingOutput`; :class:`~samkit.everything.automatic.SamAutomaticMaskGenerator` is the Meta-style
interface. Both run :func:`~samkit.everything.engine.generate_mask_set`, which computes what Meta's
reference computes (fp32: equal up to float rounding) without its wasted work.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..predict.precision import everything_dtypes
from ..predict.sam_predictor import SamPredictor
from .engine import AmgParams, generate_mask_set
from .report import empty_reason, summary

log = logging.getLogger("samkit")

__all__ = ["EverythingOutput", "everything_dtypes", "resolve_dtype", "segment_everything"]


@dataclass
class EverythingOutput:
    """Masks found by :func:`segment_everything`, sorted by descending area (ties: reference
    order, i.e. higher predicted IoU first within a crop).

    Attributes:
        masks: ``N x H x W`` bool. scores: ``N`` float32 predicted IoU.
        stability: ``N`` float32 stability scores. boxes: ``N x 4`` float32 XYXY pixel boxes,
        inclusive (``x2`` is the last column of the mask). points: ``N x 2`` float64 (x, y)
        point prompt of each mask. crop_boxes: ``N x 4`` int64 XYXY crop each mask came from
        (exclusive right/bottom; the whole image without crop layers).
        stats: counters and timings (see :func:`~samkit.everything.engine.generate_mask_set`),
        plus ``masks_s`` (building the binary masks) and ``total_s``.
        summary: one line of what each filter kept (plus, with no mask, which filter removed
        them all; see :mod:`samkit.everything_report`).
    """

    masks: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)
    summary: str = ""

    def __len__(self) -> int:
        return len(self.scores)


def resolve_dtype(precision: Any, device: Any, model: Any = None) -> Any:
    """The grid decoder's dtype of ``precision`` (see :func:`everything_dtypes`)."""
    return everything_dtypes(precision, device, model)[1]


def segment_everything(
    predictor: SamPredictor,
    image_rgb: np.ndarray,
    points_stride: int | None = 32,
    points_batch_size: int = 64,
    conf_thres: float = 0.88,
    stability_score_thresh: float = 0.95,
    stability_score_offset: float = 1.0,
    crop_n_layers: int = 0,
    crop_overlap_ratio: float = 512 / 1500,
    crop_downscale_factor: int = 1,
    point_grids: Sequence[np.ndarray] | None = None,
    crop_nms_thresh: float = 0.7,
    iou: float = 0.7,
    min_mask_region_area: int = 0,
    precision: str | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> EverythingOutput:
    """Segment everything in an ``H x W x 3`` uint8 RGB image (Ultralytics' argument names).

    Args:
        predictor: a :class:`~samkit.predict.sam_predictor.SamPredictor`; its image is replaced.
        points_stride: points per side of the grid (``points_per_side``; None with
            ``point_grids``). points_batch_size: prompts decoded per batch.
        conf_thres: keep masks with predicted IoU above this (``pred_iou_thresh``).
        stability_score_thresh: keep masks with stability score >= this; the score is the
            IoU of the masks at logit thresholds ``+-stability_score_offset``.
        crop_n_layers: extra layers of ``2**i x 2**i`` overlapping crops, each re-encoded;
            ``crop_overlap_ratio`` sets their overlap, ``crop_downscale_factor`` shrinks the
            grid per layer, ``crop_nms_thresh`` the NMS between crops (smaller crops win).
        point_grids: explicit normalized ``N x 2`` grids, one per crop layer.
        iou: box NMS threshold within a crop (``box_nms_thresh``).
        min_mask_region_area: fill holes and remove islands smaller than this (pixels).
        precision: "fp32" (exact), "bf16", "auto" (per part: see :func:`everything_dtypes`),
            a mapping part -> precision, or None (follow an active autocast).
        progress: show a progress bar (points decoded, masks past each filter, time left).
        verbose: progress bar and a summary line on stderr. Either way, when no mask is kept,
            a warning (logger ``samkit``) names the filter that removed them all.
    """
    params = AmgParams(
        points_per_side=points_stride,
        points_per_batch=points_batch_size,
        pred_iou_thresh=conf_thres,
        stability_score_thresh=stability_score_thresh,
        stability_score_offset=stability_score_offset,
        box_nms_thresh=iou,
        crop_n_layers=crop_n_layers,
        crop_nms_thresh=crop_nms_thresh,
        crop_overlap_ratio=crop_overlap_ratio,
        crop_n_points_downscale_factor=crop_downscale_factor,
        point_grids=point_grids,
        min_mask_region_area=min_mask_region_area,
    )
    t_start = time.perf_counter()
    enc_dtype, dtype = everything_dtypes(precision, predictor.device, predictor.model)
    data, cleaned, stats = generate_mask_set(
        predictor, image_rgb, params, dtype, progress or verbose, encoder_dtype=enc_dtype
    )
    t0 = time.perf_counter()
    h, w = data.image_size
    n = len(data)
    order = np.argsort(-data.areas, kind="stable")
    masks = np.zeros((n, h, w), dtype=bool)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    if cleaned is not None:
        for i, m in enumerate(cleaned):
            masks[rank[i]] = m
    else:
        for i, m in data.masks():
            masks[rank[i]] = m
    t1 = time.perf_counter()
    stats.update(masks_s=t1 - t0, total_s=t1 - t_start)
    text = summary(stats, params)
    if verbose:
        print(text, file=sys.stderr, flush=True)
    elif n == 0:
        log.warning("segment everything: %s", empty_reason(stats, params))
    return EverythingOutput(
        masks=masks,
        scores=data.iou[order].astype(np.float32),
        stability=data.stability[order].astype(np.float32),
        boxes=data.boxes[order].astype(np.float32),
        points=data.points[order].astype(np.float64),
        crop_boxes=data.crop_boxes[order].astype(np.int64),
        stats=stats,
        summary=text,
    )
