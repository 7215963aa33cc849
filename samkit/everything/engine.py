"""The segment-everything engine: Meta's automatic mask generation, minus the waste.

The algorithm is that of Meta's ``SamAutomaticMaskGenerator`` (same results up to float
rounding): a point grid per crop layer, overlapping crop boxes, the image encoder run per
crop, then per batch of points the IoU filter, the stability score, binarization, boxes,
removal of masks near inner crop edges; box NMS within each crop, uncropping, NMS across crops
preferring smaller crops, and optional small-region clean-up (holes, then islands) followed by
another NMS.

What the reference computes and then throws away is skipped: the mask decoder shares the
prompt-independent work of a crop (:class:`~samkit.predict.fast_decode.PointDecoder`), predicts IoUs
before upscaling and upscales only masks that pass the IoU filter; stability scores, areas and
boxes are computed from the low-res logits without materializing full-resolution logits
(:mod:`samkit.ops.upsample`); full-resolution binary masks are built only for the masks that
survive NMS.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import SamkitError
from ..ops.amg import (
    batch_iterator,
    build_all_layer_point_grids,
    generate_crop_boxes,
    is_box_near_crop_edge,
)
from ..ops.boxes import mask_to_box_xyxy
from ..ops.nms import nms
from ..ops.regions import remove_small_regions
from ..ops.upsample import UpsamplePlan, mask_stats, upsample_masks
from ..predict.fast_decode import PointDecoder
from ..predict.prompt_checks import check_image
from ..predict.sam_predictor import SamPredictor
from ..predict.threads import cpu_policy

__all__ = ["AmgParams", "MaskSet", "generate_mask_set"]


@dataclass(frozen=True)
class AmgParams:
    """Generator settings, with Meta's names and defaults (see :func:`segment_everything`)."""

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: Sequence[np.ndarray] | None = None
    min_mask_region_area: int = 0

    def __post_init__(self) -> None:
        if (self.points_per_side is None) == (self.point_grids is None):
            raise SamkitError("give exactly one of points_per_side (points_stride) and point_grids")
        if self.points_per_side is not None and int(self.points_per_side) < 1:
            raise SamkitError(f"points per side must be >= 1, got {self.points_per_side}")
        if int(self.points_per_batch) < 1:
            raise SamkitError(f"points per batch must be >= 1, got {self.points_per_batch}")
        if int(self.crop_n_layers) < 0:
            raise SamkitError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}")
        if int(self.crop_n_points_downscale_factor) < 1:
            raise SamkitError(
                "crop_n_points_downscale_factor (crop_downscale_factor) must be >= 1, got "
                f"{self.crop_n_points_downscale_factor}"
            )
        if not 0.0 <= float(self.crop_overlap_ratio) < 1.0:
            raise SamkitError(
                f"crop_overlap_ratio must be in [0, 1), got {self.crop_overlap_ratio}"
            )
        if float(self.stability_score_offset) < 0:
            raise SamkitError(
                f"stability_score_offset must be >= 0, got {self.stability_score_offset}"
            )
        if float(self.min_mask_region_area) < 0:
            raise SamkitError(f"min_mask_region_area must be >= 0, got {self.min_mask_region_area}")
        if self.point_grids is not None:
            if len(self.point_grids) != int(self.crop_n_layers) + 1:
                raise SamkitError(
                    f"point_grids needs one grid per crop layer ({int(self.crop_n_layers) + 1}), "
                    f"got {len(self.point_grids)}"
                )
            for g in self.point_grids:
                g = np.asarray(g)
                if g.ndim != 2 or g.shape[1] != 2 or g.size and (g.min() < 0 or g.max() > 1):
                    raise SamkitError(
                        f"each point grid must be an N x 2 array of (x, y) in [0, 1], got shape "
                        f"{g.shape}"
                    )

    def grids(self) -> list[np.ndarray]:
        """One ``N x 2`` grid of normalized (x, y) points per crop layer."""
        if self.point_grids is not None:
            return [np.asarray(g, dtype=np.float64) for g in self.point_grids]
        return build_all_layer_point_grids(
            int(self.points_per_side),
            int(self.crop_n_layers),
            int(self.crop_n_points_downscale_factor),
        )


@dataclass
class MaskSet:
    """Masks kept by the generator, in the reference's order, before binarization.

    ``logits[i]`` are the trimmed low-res logits of mask i (see ``UpsamplePlan.trim``),
    ``plans[crop[i]]`` turns them into the mask inside ``crop_boxes[i]``. Boxes are inclusive
    XYXY pixels in the image frame; points (x, y) in image pixels.
    """

    image_size: tuple[int, int]
    logits: list[torch.Tensor] = field(default_factory=list)
    crop: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    iou: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    stability: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    crop_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    plans: list[UpsamplePlan] = field(default_factory=list)
    mask_threshold: float = 0.0

    def __len__(self) -> int:
        return len(self.logits)

    def take(self, idx: np.ndarray) -> MaskSet:
        idx = np.asarray(idx, dtype=np.int64)
        return MaskSet(
            self.image_size,
            [self.logits[i] for i in idx],
            self.crop[idx],
            self.iou[idx],
            self.stability[idx],
            self.boxes[idx],
            self.points[idx],
            self.areas[idx],
            self.crop_boxes[idx],
            self.plans,
            self.mask_threshold,
        )

    @staticmethod
    def concat(parts: list[MaskSet], image_size: tuple[int, int], plans) -> MaskSet:
        out = MaskSet(image_size, plans=plans)
        if parts:
            out.logits = [t for p in parts for t in p.logits]
            for name in ("crop", "iou", "stability", "boxes", "points", "areas", "crop_boxes"):
                setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
            out.mask_threshold = parts[0].mask_threshold
        return out

    def masks(self, chunk: int = 16) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(i, H x W bool mask)`` for i = 0, 1, ..., building a chunk at a time."""
        h, w = self.image_size
        for s in range(0, len(self), chunk):
            idx = np.arange(s, min(s + chunk, len(self)))
            out: dict[int, np.ndarray] = {}
            for c in np.unique(self.crop[idx]):
                sel = idx[self.crop[idx] == c]
                x0, y0, x1, y1 = (int(v) for v in self.crop_boxes[sel[0]])
                low = torch.stack([self.logits[i] for i in sel])
                crop_masks = upsample_masks(self.plans[c], low, self.mask_threshold).numpy()
                for i, m in zip(sel, crop_masks):
                    if (x0, y0, x1, y1) != (0, 0, w, h):
                        full = np.zeros((h, w), dtype=bool)
                        full[y0:y1, x0:x1] = m
                        m = full
                    out[int(i)] = m
            for i in idx:
                yield int(i), out.pop(int(i))


def generate_mask_set(
    predictor: SamPredictor,
    image_rgb: np.ndarray,
    params: AmgParams,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    encoder_dtype: torch.dtype | None = None,
) -> tuple[MaskSet, list[np.ndarray] | None, dict[str, float]]:
    """Run the generator up to (and including) cross-crop NMS and small-region clean-up.

    ``dtype`` is the grid decoder's compute dtype, ``encoder_dtype`` the image encoder's
    (default: ``dtype``).

    Returns the kept masks; when ``min_mask_region_area > 0`` their cleaned binary masks
    (``H x W`` bool each, in the same order), otherwise None (build them with ``.masks()``);
    and counters and timings: ``points``, ``masks_decoded``, ``iou_pass`` (masks above the
    IoU threshold), ``prompts_upscaled``, ``stability_pass`` (also above the stability
    threshold), ``edge_pass`` (also away from inner crop edges), ``crop_nms_kept`` (after the
    box NMS within each crop), ``crops`` and ``kept``; ``best_iou`` (highest predicted IoU
    seen), ``best_stability`` (highest stability score of a mask past the IoU filter);
    ``encode_s``, ``decode_s``, ``stats_s``, ``nms_s``, ``cleanup_s`` (seconds).
    """
    with cpu_policy("everything", predictor.device):
        return _generate(predictor, image_rgb, params, dtype, progress, encoder_dtype)


def _generate(predictor, image_rgb, params, dtype, progress, encoder_dtype):
    stats: Counter = Counter()
    image = check_image(image_rgb)
    h, w = image.shape[:2]
    crop_boxes, layer_idxs = generate_crop_boxes(
        (h, w), int(params.crop_n_layers), float(params.crop_overlap_ratio)
    )
    grids = params.grids()
    enc_dtype = dtype if encoder_dtype is None else encoder_dtype
    decoder = PointDecoder(predictor.model, dtype)
    bar = _progress(progress, sum(len(grids[li]) for li in layer_idxs), len(crop_boxes))
    parts, plans = [], []
    try:
        for ci, (box, li) in enumerate(zip(crop_boxes, layer_idxs)):
            part, plan = _process_crop(
                predictor, decoder, image, box, ci, grids[li], params, enc_dtype, bar, stats
            )
            parts.append(part)
            plans.append(plan)
    finally:
        if bar is not None:
            bar.close()
    data = MaskSet.concat(parts, (h, w), plans)
    stats["crops"] = len(crop_boxes)
    stats["crop_nms_kept"] = len(data)
    t0 = time.perf_counter()
    if len(crop_boxes) > 1 and len(data):
        cb = torch.from_numpy(data.crop_boxes)
        scores = 1 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
        keep = nms(torch.from_numpy(data.boxes).float(), scores.float(), params.crop_nms_thresh)
        data = data.take(keep.numpy())
    stats["nms_s"] += time.perf_counter() - t0
    cleaned = None
    t0 = time.perf_counter()
    if params.min_mask_region_area > 0 and len(data):
        nms_thresh = max(params.box_nms_thresh, params.crop_nms_thresh)
        data, cleaned = _remove_small_regions(data, params.min_mask_region_area, nms_thresh)
    stats["cleanup_s"] += time.perf_counter() - t0
    stats["kept"] = len(data)
    return data, cleaned, dict(stats)


def _process_crop(
    predictor: SamPredictor,
    decoder: PointDecoder,
    image: np.ndarray,
    crop_box: list[int],
    crop_index: int,
    grid: np.ndarray,
    params: AmgParams,
    encoder_dtype: torch.dtype,
    bar,
    stats: Counter,
) -> tuple[MaskSet, UpsamplePlan | None]:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = crop_box
    crop = image[y0:y1, x0:x1]
    ch, cw = crop.shape[:2]
    if len(grid) == 0:  # nothing to prompt: skip the encoder too
        return MaskSet((h, w)), None
    device = predictor.device
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=encoder_dtype, enabled=encoder_dtype != torch.float32):
        predictor.set_image(crop)
    stats["encode_s"] += time.perf_counter() - t0
    model = predictor.model
    in_h, in_w = predictor.input_size
    gh, gw = predictor.features.shape[-2:]
    plan = UpsamplePlan((4 * gh, 4 * gw), model.image_size, (in_h, in_w), (ch, cw))
    decoder.set_features(predictor.features)  # (the decoder runs in its own dtype)
    points = np.asarray(grid, dtype=np.float64) * np.array([cw, ch], dtype=np.float64)
    thr = float(model.mask_threshold)
    off = float(params.stability_score_offset)
    thresholds = (thr + off, thr - off, thr)
    iou_thr = float(params.pred_iou_thresh)
    batches = []
    for (pts,) in batch_iterator(int(params.points_per_batch), points):
        coords = pts * np.array([in_w / cw, in_h / ch])  # the reference's apply_coords
        t0 = time.perf_counter()
        iou, keep, low = decoder.decode(
            coords, iou_thr if iou_thr > 0 else None, region=plan.used_size
        )
        t1 = time.perf_counter()
        prompt, token = keep.nonzero(as_tuple=True)
        low = low.cpu()
        counts, boxes = mask_stats(plan, low, thresholds, box_threshold_index=2)
        stats["decode_s"] += t1 - t0
        stats["stats_s"] += time.perf_counter() - t1
        stats["points"] += len(pts)
        stats["masks_decoded"] += keep.numel()
        stats["iou_pass"] += len(low)
        stats["prompts_upscaled"] += int(keep.any(1).sum())
        stab = counts[:, 0].to(torch.int32) / counts[:, 1].to(torch.int32)
        if iou.numel():
            stats["best_iou"] = max(stats.get("best_iou", -1.0), float(iou.max()))
        if len(stab):
            best = float(torch.nan_to_num(stab, nan=0.0).max())
            stats["best_stability"] = max(stats.get("best_stability", -1.0), best)
        ok = torch.ones(len(low), dtype=torch.bool)
        if params.stability_score_thresh > 0:
            ok &= stab >= params.stability_score_thresh
        stats["stability_pass"] += int(ok.sum())
        ok &= ~is_box_near_crop_edge(boxes, crop_box, [0, 0, w, h])
        sel = ok.nonzero()[:, 0]
        stats["edge_pass"] += len(sel)
        prompt = prompt.cpu()[sel].numpy()
        batches.append(
            MaskSet(
                (h, w),
                list(low[sel].unbind(0)),
                np.full(len(sel), crop_index, np.int64),
                iou.cpu()[prompt, token.cpu()[sel]].float().numpy(),
                stab[sel].float().numpy(),
                boxes[sel].numpy(),
                pts[prompt],
                counts[sel, 2].numpy(),
                np.tile(np.asarray(crop_box, np.int64), (len(sel), 1)),
                mask_threshold=thr,
            )
        )
        if bar is not None:
            bar.update(len(pts))
            bar.set_postfix_str(
                f"iou>{iou_thr:g}: {stats['iou_pass']}, stable: {stats['stability_pass']}, "
                f"kept: {stats['edge_pass']}",
                refresh=False,
            )
    predictor.reset_image()
    data = MaskSet.concat(batches, (h, w), [])
    t0 = time.perf_counter()
    if len(data):
        keep = nms(
            torch.from_numpy(data.boxes).float(),
            torch.from_numpy(data.iou),
            params.box_nms_thresh,
        )
        data = data.take(keep.numpy())
    stats["nms_s"] += time.perf_counter() - t0
    data.boxes = data.boxes + np.array([x0, y0, x0, y0], dtype=np.int64)
    data.points = data.points + np.array([x0, y0], dtype=np.float64)
    return data, plan


def _remove_small_regions(
    data: MaskSet, min_area: float, nms_thresh: float
) -> tuple[MaskSet, list[np.ndarray]]:
    """Fill small holes, then remove small islands; re-NMS preferring unchanged masks."""
    masks, scores, boxes = [], [], []
    for _, mask in data.masks():  # in order
        mask, changed_holes = remove_small_regions(mask, min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        masks.append(mask)
        boxes.append(mask_to_box_xyxy(mask))
        scores.append(float(not (changed_holes or changed_islands)))
    keep = nms(torch.from_numpy(np.stack(boxes)).float(), torch.tensor(scores), nms_thresh).numpy()
    data.boxes = data.boxes.copy()
    data.areas = data.areas.copy()
    for i in keep:
        if scores[i] == 0.0:
            data.boxes[i] = boxes[i]
            data.areas[i] = int(masks[i].sum())
    return data.take(keep), [masks[i] for i in keep]


def _progress(enabled: bool, total: int, crops: int):
    """A tqdm bar over the point prompts on stderr (its rate and time left include the crop
    encodes done so far)."""
    if not enabled:
        return None
    import sys

    from tqdm import tqdm

    desc = "segment everything" + (f" ({crops} crops)" if crops > 1 else "")
    return tqdm(
        total=total, desc=desc, unit="pt", file=sys.stderr, mininterval=0.5, dynamic_ncols=True
    )
