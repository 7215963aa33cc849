"""Segment everything with SAM 2: ``SAM2AutomaticMaskGenerator``'s semantics and arguments.

>>> gen = Sam2AutomaticMaskGenerator(model, points_per_side=32, use_m2m=False)
>>> records = gen.generate(image_rgb)   # list of dicts, Meta's record layout

Per crop: a point grid, one decoder call per ``points_per_batch`` points (3 masks each with
``multimask_output``), optionally a mask-to-mask refinement (``use_m2m``: each low-res mask fed
back with its point, single-mask output), then filters on the predicted IoU (strictly above
``pred_iou_thresh``) and the stability score (on the full-size logits, ``mask_threshold`` +-
``stability_score_offset``), masks at ``logits > mask_threshold``, boxes near an inner crop edge
dropped, box NMS per crop (by IoU) and across crops (by 1 / crop area).

Less work than the reference, same records: full-size logits are computed only for masks that
pass the IoU filter, a few at a time (the reference upsamples every mask of a batch first and
keeps all of them in memory); in m2m mode the first-pass full-size masks, which the reference
computes and discards, are not computed.

``min_mask_region_area``: SAM 2 hands it to its predictor as ``max_hole_area`` and
``max_sprinkle_area`` (holes / specks of at most that many pixels of the 256 x 256 logits,
8-connected), which its CUDA-only kernel computes and which it silently skips on CPU; here it
is done with OpenCV on every device (:func:`samkit.ops.regions.fill_holes_and_sprinkles`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from ..models.sam2 import Sam2
from ..ops.amg import (
    build_all_layer_point_grids,
    generate_crop_boxes,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
    uncrop_masks,
)
from ..ops.nms import nms
from ..ops.rle import area_from_rle, masks_to_rle_torch, rle_to_coco, rle_to_mask
from ..ops.upsample import UpsamplePlan, mask_stats, upsample_masks
from ..predict.sam2_fast_decode import Sam2PointDecoder
from ..predict.sam2_predictor import LOW_RES_CLAMP, Sam2Predictor
from ..predict.threads import cpu_policy

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass(frozen=True)
class Sam2AmgParams:
    """The generator's keyword arguments, with SAM 2's names and defaults."""

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    output_mode: str = "binary_mask"
    use_m2m: bool = False
    multimask_output: bool = True

    def __post_init__(self) -> None:
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {self.output_mode!r}")
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        if self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}")
        if self.points_per_side is not None and self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")


PARAM_NAMES = tuple(f.name for f in fields(Sam2AmgParams))


class Sam2AutomaticMaskGenerator:
    """Meta's ``SAM2AutomaticMaskGenerator`` on a :class:`~samkit.models.Sam2`.

    Takes the same keyword arguments (see :class:`Sam2AmgParams`) plus ``point_grids`` (a list
    of ``N x 2`` normalized grids, one per crop layer, instead of ``points_per_side``) and
    ``precision`` of the image encoder ("fp32" default, "bf16", "auto").
    """

    def __init__(
        self,
        model: Any,
        point_grids: list[np.ndarray] | None = None,
        precision: str = "fp32",
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - set(PARAM_NAMES))
        if unknown:
            raise TypeError(
                f"unknown argument(s) {', '.join(unknown)}; SAM 2's generator takes "
                f"{', '.join(PARAM_NAMES)}, point_grids"
            )
        sam = model if isinstance(model, Sam2) else getattr(model, "model", None)
        if not isinstance(sam, Sam2):
            raise TypeError("Sam2AutomaticMaskGenerator needs a SAM 2 model")
        self.params = p = Sam2AmgParams(**kwargs)
        if (p.points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if point_grids is None:
            point_grids = build_all_layer_point_grids(
                p.points_per_side, p.crop_n_layers, p.crop_n_points_downscale_factor
            )
        if len(point_grids) != p.crop_n_layers + 1:
            raise ValueError(f"point_grids needs {p.crop_n_layers + 1} grids (one per layer)")
        self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        self.predictor = Sam2Predictor(
            sam,
            precision=precision,
            max_hole_area=p.min_mask_region_area,
            max_sprinkle_area=p.min_mask_region_area,
        )

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Records for an ``H x W x 3`` uint8 RGB image (Meta's keys: ``segmentation``,
        ``area``, ``bbox`` XYWH, ``predicted_iou``, ``point_coords``, ``stability_score``,
        ``crop_box`` XYWH), in the reference's order."""
        p = self.params
        h, w = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes((h, w), p.crop_n_layers, p.crop_overlap_ratio)
        rows: list[dict[str, Any]] = []
        # (samkit's CPU policy for the whole call, as for SAM's engine: the decoder splits its
        # points across the threads the policy leaves it)
        with cpu_policy("everything", self.predictor.device):
            for crop, layer in zip(crop_boxes, layers):
                rows += self._process_crop(image, crop, layer, (h, w))
        if len(crop_boxes) > 1 and rows:
            boxes = torch.stack([r["box"] for r in rows]).float()
            cb = torch.tensor([r["crop"] for r in rows], dtype=torch.float32)
            scores = 1 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
            rows = [rows[i] for i in nms(boxes, scores, p.crop_nms_thresh).tolist()]
        return [self._record(r) for r in rows]

    def _record(self, r: dict[str, Any]) -> dict[str, Any]:
        mode = self.params.output_mode
        rle = r["rle"]
        if mode == "binary_mask":
            seg: Any = rle_to_mask(rle)
        elif mode == "coco_rle":
            seg = rle_to_coco(rle)
        else:
            seg = rle
        x0, y0, x1, y1 = (float(v) for v in r["box"])
        c0, c1, c2, c3 = (float(v) for v in r["crop"])
        return {
            "segmentation": seg,
            "area": area_from_rle(rle),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "predicted_iou": float(r["iou"]),
            "point_coords": [[float(r["point"][0]), float(r["point"][1])]],
            "stability_score": float(r["stability"]),
            "crop_box": [c0, c1, c2 - c0, c3 - c1],
        }

    def _process_crop(
        self, image: np.ndarray, crop: list[int], layer: int, orig_size: tuple[int, int]
    ) -> list[dict[str, Any]]:
        p = self.params
        x0, y0, x1, y1 = crop
        cropped = np.ascontiguousarray(image[y0:y1, x0:x1])
        self.predictor.set_image(cropped)
        fast = self._point_decoder()
        ch, cw = cropped.shape[:2]
        points = torch.as_tensor(
            self.point_grids[layer] * np.array([[cw, ch]]), dtype=torch.float32
        )
        size = self.predictor.model.image_size
        low_size = self.predictor.model.prompt_encoder.mask_input_size
        # SAM 2's one bilinear resize of the low-res logits to the crop, as taps
        plan = UpsamplePlan(low_size, low_size[0], low_size, (ch, cw))
        masks, ious, stabs, boxes, pts = [], [], [], [], []
        for start in range(0, len(points), p.points_per_batch):
            batch = points[start : start + p.points_per_batch]
            out = self._process_batch(batch, plan, crop, orig_size, size, fast)
            for acc, part in zip((masks, ious, stabs, boxes, pts), out):
                acc.append(part)
        self.predictor.reset_image()
        if not masks:
            return []
        masks_t, ious_t, boxes_t = torch.cat(masks), torch.cat(ious), torch.cat(boxes)
        stabs_t, pts_t = torch.cat(stabs), torch.cat(pts)
        keep = nms(boxes_t.float(), ious_t, p.box_nms_thresh)
        h, w = orig_size
        kept = upsample_masks(plan, masks_t[keep], p.mask_threshold)
        kept_masks = uncrop_masks(kept, crop, h, w)
        rles = masks_to_rle_torch(kept_masks)
        off = torch.tensor([x0, y0], dtype=torch.float32)
        return [
            {
                "rle": rle,
                "box": uncrop_boxes_xyxy(boxes_t[i], crop),
                "iou": ious_t[i],
                "stability": stabs_t[i],
                "point": pts_t[i] + off,
                "crop": list(crop),
            }
            for rle, i in zip(rles, keep.tolist())
        ]

    def _process_batch(
        self,
        points: torch.Tensor,
        plan: UpsamplePlan,
        crop: list[int],
        orig_size: tuple[int, int],
        size: int,
        fast: Sam2PointDecoder | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """One batch of grid points -> (low-res logits, iou, stability, boxes XYXY in the crop,
        points) of the masks that pass the filters.

        The stability scores and boxes are those of the masks upsampled to the crop, computed
        from the low-res logits by :func:`~samkit.ops.upsample.mask_stats` (the full-size
        logits are never formed); the caller builds full-size masks for the masks it keeps."""
        p = self.params
        pred = self.predictor
        ch, cw = plan.output_size
        in_points = points / torch.tensor([cw, ch], dtype=torch.float32) * size
        if fast is not None:
            # IoU first; low-res logits only for the masks that pass it
            thresh = p.pred_iou_thresh if p.pred_iou_thresh > 0 else None
            iou, keep, low = fast.decode(in_points, iou_threshold=thresh)  # fp32 (exact)
            pts = points.repeat_interleave(iou.shape[1], dim=0)[keep.flatten()]
            iou = iou[keep]
        else:
            labels = torch.ones((len(points), 1), dtype=torch.int)
            low, iou = pred.decode(in_points[:, None], labels, multimask_output=p.multimask_output)
            c = low.shape[1]
            low, iou = low.flatten(0, 1), iou.flatten(0, 1)
            pts = points.repeat_interleave(c, dim=0)
            if p.use_m2m:
                low, iou = self._refine_m2m(in_points.repeat_interleave(c, dim=0), low)
            if p.pred_iou_thresh > 0:
                keep = iou > p.pred_iou_thresh
                low, iou, pts = low[keep], iou[keep], pts[keep]
        h, w = orig_size
        if len(low):
            low = pred.clean_low_res(low[:, None])[:, 0]
        low = low.float()
        thr, off = p.mask_threshold, p.stability_score_offset
        counts, boxes = mask_stats(plan, low, (thr + off, thr - off, thr), box_threshold_index=2)
        # IoU of the two thresholded masks (0/0 gives NaN, which fails the filter, as in SAM 2)
        stab = counts[:, 0].to(torch.int32) / counts[:, 1].to(torch.int32)
        ok = torch.ones(len(low), dtype=torch.bool)
        if p.stability_score_thresh > 0:
            ok &= stab >= p.stability_score_thresh
        ok &= ~is_box_near_crop_edge(boxes, crop, [0, 0, w, h])
        return low[ok], iou[ok], stab[ok], boxes[ok], pts[ok]

    def _point_decoder(self) -> Sam2PointDecoder | None:
        """The shared-work point decoder set to the current image, where it computes what the
        module decoder would (three masks per point, no mask-to-mask refinement), else None."""
        p = self.params
        pred = self.predictor
        if p.use_m2m or not p.multimask_output:
            return None
        if getattr(self, "_fast", None) is None or self._fast_model is not pred.model:
            self._fast = Sam2PointDecoder(pred.model, chunk=2)
            self._fast_model = pred.model
        self._fast.set_features(pred.features, pred.high_res)
        return self._fast

    def _refine_m2m(
        self, in_points: torch.Tensor, low: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed each (clamped) low-res mask back with its point; single-mask output."""
        p = self.params
        lows, ious = [], []
        clamped = low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        for start in range(0, len(in_points), p.points_per_batch):
            sl = slice(start, start + p.points_per_batch)
            labels = torch.ones((len(in_points[sl]), 1), dtype=torch.int)
            l2, i2 = self.predictor.decode(
                in_points[sl, None], labels, mask_input=clamped[sl, None], multimask_output=False
            )
            lows.append(l2[:, 0])
            ious.append(i2[:, 0])
        return torch.cat(lows), torch.cat(ious)


#: Ultralytics / samkit v1 everything-mode names accepted for SAM 2 too
ALIASES = {
    "points_stride": "points_per_side",
    "points_batch_size": "points_per_batch",
    "conf_thres": "pred_iou_thresh",
    "iou": "box_nms_thresh",
    "crop_downscale_factor": "crop_n_points_downscale_factor",
}
ACCEPTED = (*PARAM_NAMES, *ALIASES, "point_grids")


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """SAM 2 generator arguments from SAM 2 names or their Ultralytics aliases."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in ACCEPTED or key == "output_mode":
            raise ValueError(
                f"unknown argument {key!r} for SAM 2 segment-everything; accepted: "
                f"{', '.join(n for n in ACCEPTED if n != 'output_mode')}"
            )
        name = ALIASES.get(key, key)
        if name in out:
            raise ValueError(f"{key!r} and {name!r} are the same argument; give one")
        out[name] = value
    return out


def segment_everything_sam2(predictor: Sam2Predictor, image_rgb: np.ndarray, **params: Any) -> Any:
    """Segment everything with SAM 2's generator (its defaults, e.g. ``pred_iou_thresh=0.8``);
    returns an :class:`~samkit.everything.EverythingOutput` sorted by descending area.

    ``params``: SAM 2 generator arguments or their Ultralytics aliases (``points_stride``,
    ``conf_thres``, ``iou``, ...). ``predictor``'s current image is replaced.
    """
    import time

    from .segment import EverythingOutput

    t0 = time.perf_counter()
    kw = check_params(params)
    gen = Sam2AutomaticMaskGenerator(predictor.model, output_mode="binary_mask", **kw)
    gen.predictor = Sam2Predictor(
        predictor.model,
        precision=predictor.precision,
        max_hole_area=gen.params.min_mask_region_area,
        max_sprinkle_area=gen.params.min_mask_region_area,
    )
    recs = gen.generate(image_rgb)
    h, w = image_rgb.shape[:2]
    order = sorted(range(len(recs)), key=lambda i: -recs[i]["area"])
    recs = [recs[i] for i in order]
    n = len(recs)

    def xyxy(b: list[float]) -> list[float]:
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    return EverythingOutput(
        masks=np.stack([r["segmentation"] for r in recs]) if n else np.zeros((0, h, w), bool),
        scores=np.array([r["predicted_iou"] for r in recs], np.float32),
        stability=np.array([r["stability_score"] for r in recs], np.float32),
        boxes=np.array([xyxy(r["bbox"]) for r in recs], np.float32).reshape(n, 4),
        points=np.array([r["point_coords"][0] for r in recs], np.float64).reshape(n, 2),
        crop_boxes=np.array([xyxy(r["crop_box"]) for r in recs], np.int64).reshape(n, 4),
        stats={"total_s": time.perf_counter() - t0},
    )


#: Meta's class name, for code written against ``sam2``
SAM2AutomaticMaskGenerator = Sam2AutomaticMaskGenerator
