"""Meta-style ``SamAutomaticMaskGenerator``: SA-1B-style records from segment-everything."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import SamkitError
from ..models import Sam
from ..ops.rle import mask_to_rle, rle_to_coco
from ..predict.sam_predictor import SamPredictor
from .engine import AmgParams, generate_mask_set
from .report import META_NAMES, empty_reason, summary
from .segment import everything_dtypes, resolve_dtype

__all__ = ["SamAutomaticMaskGenerator"]

log = logging.getLogger("samkit")

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class SamAutomaticMaskGenerator:
    """Generate masks for a whole image, like ``segment_anything.SamAutomaticMaskGenerator``.

    Same arguments and defaults as Meta's class, plus ``precision`` ("fp32" exact, "bf16",
    "auto" per part, a mapping part -> precision; None follows an active autocast) and
    ``progress``. ``model`` is a
    :class:`~samkit.models.Sam` or a high-level :class:`samkit.SAM`.

    ``tile`` (pixels, or True for the model's input size) and ``overlap``: segment in
    native-resolution tiles with masks merged across seams (:mod:`samkit.everything.tiling`); the
    generator settings then apply per tile, ``crop_box`` is the whole image, and the RLE output
    modes never build a full-size mask.
    """

    def __init__(
        self,
        model: Any,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        precision: str | None = None,
        progress: bool = False,
        tile: int | bool | None = None,
        overlap: int | None = None,
    ) -> None:
        sam = getattr(model, "model", model)
        if not isinstance(sam, Sam):
            raise SamkitError(
                f"model must be a samkit Sam module or a samkit.SAM, got {type(model).__name__}"
            )
        if output_mode not in OUTPUT_MODES:
            raise SamkitError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        self.params = AmgParams(
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids,
            min_mask_region_area=min_mask_region_area,
        )
        self.predictor = SamPredictor(sam)
        self.output_mode = output_mode
        self.precision = precision
        self.progress = progress
        self.tile, self.overlap = tile, overlap
        if tile is not None and tile is not False and (point_grids is not None or crop_n_layers):
            raise SamkitError("tile= works with points_per_side and crop_n_layers=0 only")
        self.last_stats: dict[str, float] = {}  # counters and timings of the last generate()
        self.last_summary = ""  # what each filter kept in the last generate(), in words

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of an ``H x W x 3`` uint8 RGB image as a list of records.

        Each record: ``segmentation`` (H x W bool, or an RLE dict for the RLE output modes),
        ``area`` (pixels), ``bbox`` (XYWH, ``w = x2 - x1`` of the inclusive box),
        ``predicted_iou``, ``point_coords`` ``[[x, y]]``, ``stability_score``, ``crop_box``
        (XYWH). Records come in the reference's order.
        """
        if self.tile is not None and self.tile is not False:
            return self._generate_tiled(image)
        enc_dtype, dtype = everything_dtypes(
            self.precision, self.predictor.device, self.predictor.model
        )
        data, cleaned, self.last_stats = generate_mask_set(
            self.predictor, image, self.params, dtype, self.progress, encoder_dtype=enc_dtype
        )
        self.last_summary = summary(self.last_stats, self.params, META_NAMES)
        if self.progress:
            print(self.last_summary, file=sys.stderr, flush=True)
        elif not len(data):
            log.warning(
                "segment everything: %s", empty_reason(self.last_stats, self.params, META_NAMES)
            )
        masks = enumerate(cleaned) if cleaned is not None else data.masks()
        records = []
        for i, mask in masks:
            if self.output_mode == "binary_mask":
                seg: Any = mask
            else:
                seg = mask_to_rle(mask)
                if self.output_mode == "coco_rle":
                    seg = rle_to_coco(seg)
            x1, y1, x2, y2 = (int(v) for v in data.boxes[i])
            cx1, cy1, cx2, cy2 = (int(v) for v in data.crop_boxes[i])
            records.append(
                {
                    "segmentation": seg,
                    "area": int(np.count_nonzero(mask)),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "predicted_iou": float(data.iou[i]),
                    "point_coords": [[float(v) for v in data.points[i]]],
                    "stability_score": float(data.stability[i]),
                    "crop_box": [cx1, cy1, cx2 - cx1, cy2 - cy1],
                }
            )
        return records

    def _generate_tiled(self, image: np.ndarray) -> list[dict[str, Any]]:
        from ..ops.rle import coco_to_rle
        from .tiling import segment_everything_tiled

        p = self.params
        dtype = resolve_dtype(self.precision, self.predictor.device, self.predictor.model)
        out = segment_everything_tiled(
            self.predictor.model,
            image,
            self.tile,
            self.overlap,
            precision="bf16" if dtype == torch.bfloat16 else "fp32",
            progress=self.progress,
            points_stride=p.points_per_side,
            points_batch_size=p.points_per_batch,
            conf_thres=p.pred_iou_thresh,
            stability_score_thresh=p.stability_score_thresh,
            stability_score_offset=p.stability_score_offset,
            iou=p.box_nms_thresh,
            min_mask_region_area=p.min_mask_region_area,
        )
        self.last_stats = out.stats
        h, w = out.image_size
        rles = out.to_coco_rle() if self.output_mode != "binary_mask" else None
        boxes = out.boxes_xyxy
        records = []
        for i, area in enumerate(out.areas):
            if rles is None:
                seg: Any = out.mask(i)
            else:
                seg = rles[i] if self.output_mode == "coco_rle" else coco_to_rle(rles[i])
            x1, y1, x2, y2 = (int(v) for v in boxes[i])
            records.append(
                {
                    "segmentation": seg,
                    "area": int(area),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "predicted_iou": float(out.scores[i]),
                    "point_coords": [[float(v) for v in out.points[i]]],
                    "stability_score": float(out.stability[i]),
                    "crop_box": [0, 0, w, h],
                }
            )
        return records
