"""Meta-style ``SamAutomaticMaskGenerator``: SA-1B-style records from segment-everything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import SamkitError
from ..models import Sam
from ..ops.rle import mask_to_rle, rle_to_coco
from ..predict.sam_predictor import SamPredictor
from .engine import AmgParams, generate_mask_set
from .segment import resolve_dtype

__all__ = ["SamAutomaticMaskGenerator"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class SamAutomaticMaskGenerator:
    """Generate masks for a whole image, like ``segment_anything.SamAutomaticMaskGenerator``.

    Same arguments and defaults as Meta's class, plus ``precision`` ("fp32" exact, "bf16",
    "auto"; None follows an active autocast) and ``progress``. ``model`` is a
    :class:`~samkit.models.Sam` or a high-level :class:`samkit.SAM`.
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
        self.last_stats: dict[str, float] = {}  # counters and timings of the last generate()

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of an ``H x W x 3`` uint8 RGB image as a list of records.

        Each record: ``segmentation`` (H x W bool, or an RLE dict for the RLE output modes),
        ``area`` (pixels), ``bbox`` (XYWH, ``w = x2 - x1`` of the inclusive box),
        ``predicted_iou``, ``point_coords`` ``[[x, y]]``, ``stability_score``, ``crop_box``
        (XYWH). Records come in the reference's order.
        """
        dtype = resolve_dtype(self.precision, self.predictor.device)
        data, cleaned, self.last_stats = generate_mask_set(
            self.predictor, image, self.params, dtype, self.progress
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
