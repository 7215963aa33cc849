"""A plain, dense re-statement of the reference generator, for checking the fast one in tests.

It follows the described semantics step by step with the module decoder
(``SamPredictor.predict_torch``), full-resolution float logits for every mask, and
``F.interpolate``: none of the fast paths of ``samkit.everything`` are used.
"""

from __future__ import annotations

import numpy as np
import torch

from samkit.ops.amg import (
    build_all_layer_point_grids,
    generate_crop_boxes,
    is_box_near_crop_edge,
    stability_score,
    uncrop_masks,
)
from samkit.ops.boxes import masks_to_boxes_xyxy
from samkit.ops.nms import nms
from samkit.ops.regions import remove_small_regions
from samkit.predict.sam_predictor import SamPredictor


def reference_generate(sam, image: np.ndarray, **kw) -> list[dict]:
    """Records (``segmentation`` H x W bool, ``bbox`` XYWH, ...) in the reference's order."""
    p = {
        "points_per_side": 32,
        "points_per_batch": 64,
        "pred_iou_thresh": 0.88,
        "stability_score_thresh": 0.95,
        "stability_score_offset": 1.0,
        "box_nms_thresh": 0.7,
        "crop_n_layers": 0,
        "crop_nms_thresh": 0.7,
        "crop_overlap_ratio": 512 / 1500,
        "crop_n_points_downscale_factor": 1,
        "min_mask_region_area": 0,
    }
    p.update(kw)
    h, w = image.shape[:2]
    grids = build_all_layer_point_grids(
        p["points_per_side"], p["crop_n_layers"], p["crop_n_points_downscale_factor"]
    )
    boxes_c, layers = generate_crop_boxes((h, w), p["crop_n_layers"], p["crop_overlap_ratio"])
    predictor = SamPredictor(sam)
    thr = sam.mask_threshold
    rows = []  # (mask, iou, stability, box, point, crop)
    for crop, layer in zip(boxes_c, layers):
        x0, y0, x1, y1 = crop
        im = image[y0:y1, x0:x1]
        predictor.set_image(im)
        pts = grids[layer] * np.array(im.shape[:2])[None, ::-1]
        crop_rows = []
        for s in range(0, len(pts), p["points_per_batch"]):
            batch = pts[s : s + p["points_per_batch"]]
            in_h, in_w = predictor.input_size
            coords = batch * np.array([in_w / im.shape[1], in_h / im.shape[0]])  # float64
            inp = torch.as_tensor(coords)[:, None, :]
            logits, iou, _ = predictor.predict_torch(
                inp, torch.ones(inp.shape[:2], dtype=torch.int), return_logits=True
            )
            logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
            pt = np.repeat(batch, 3, axis=0)
            keep = iou > p["pred_iou_thresh"] if p["pred_iou_thresh"] > 0 else iou == iou
            logits, iou, pt = logits[keep], iou[keep], pt[keep.numpy()]
            stab = stability_score(logits, thr, p["stability_score_offset"])
            if p["stability_score_thresh"] > 0:
                keep = stab >= p["stability_score_thresh"]
                logits, iou, stab, pt = logits[keep], iou[keep], stab[keep], pt[keep.numpy()]
            masks = logits > thr
            boxes = masks_to_boxes_xyxy(masks)
            keep = ~is_box_near_crop_edge(boxes, crop, [0, 0, w, h])
            masks = uncrop_masks(masks[keep], crop, h, w)
            for i, k in enumerate(keep.nonzero()[:, 0].tolist()):
                crop_rows.append((masks[i], float(iou[k]), float(stab[k]), boxes[k], pt[k], crop))
        if crop_rows:
            b = torch.stack([r[3] for r in crop_rows]).float()
            order = nms(b, torch.tensor([r[1] for r in crop_rows]), p["box_nms_thresh"])
            for i in order.tolist():
                m, iou, st, box, pt, c = crop_rows[i]
                off = torch.tensor([x0, y0, x0, y0])
                rows.append([m, iou, st, box + off, pt + np.array([x0, y0]), c])
    if len(boxes_c) > 1 and rows:
        areas = torch.tensor([(c[2] - c[0]) * (c[3] - c[1]) for *_, c in rows])
        b = torch.stack([r[3] for r in rows]).float()
        rows = [rows[i] for i in nms(b, (1 / areas).float(), p["crop_nms_thresh"]).tolist()]
    if p["min_mask_region_area"] > 0 and rows:
        area = p["min_mask_region_area"]
        new, scores = [], []
        for r in rows:
            m, c1 = remove_small_regions(r[0].numpy(), area, "holes")
            m, c2 = remove_small_regions(m, area, "islands")
            new.append(torch.from_numpy(m))
            scores.append(float(not (c1 or c2)))
        b = masks_to_boxes_xyxy(torch.stack(new))
        keep = nms(b.float(), torch.tensor(scores), max(p["box_nms_thresh"], p["crop_nms_thresh"]))
        out = []
        for i in keep.tolist():
            if scores[i] == 0.0:
                rows[i][0], rows[i][3] = new[i], b[i]
            out.append(rows[i])
        rows = out
    records = []
    for m, iou, st, box, pt, c in rows:
        x1, y1, x2, y2 = (int(v) for v in box)
        records.append(
            {
                "segmentation": m.numpy(),
                "area": int(m.sum()),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "predicted_iou": iou,
                "point_coords": [[float(v) for v in pt]],
                "stability_score": st,
                "crop_box": [c[0], c[1], c[2] - c[0], c[3] - c[1]],
            }
        )
    return records


def match_records(ref: list[dict], ours: list[dict], min_iou: float = 0.98):
    """One-to-one matching of records by mask IoU (greedy, best pairs first).

    Returns ``[(i_ref, j_ours, mask_iou), ...]`` for pairs with IoU >= ``min_iou``.
    """
    if not ref or not ours:
        return []
    a = np.stack([np.asarray(r["segmentation"], bool).ravel() for r in ref]).astype(np.float32)
    b = np.stack([np.asarray(r["segmentation"], bool).ravel() for r in ours]).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    pairs = []
    used_a, used_b = set(), set()
    for flat in np.argsort(-iou, axis=None):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, float(iou[i, j])))
    return pairs
