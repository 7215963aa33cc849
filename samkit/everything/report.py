"""What segment-everything did, in words: how many masks each filter kept, and, when no mask is
left, which filter removed them all and what to change.

The counters come from :func:`samkit.everything.engine.generate_mask_set`; the argument names in
the messages are the caller's (Ultralytics' ``conf_thres`` or Meta's ``pred_iou_thresh``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .engine import AmgParams

# argument names as segment_everything (Ultralytics) spells them
ULTRALYTICS_NAMES = {
    "pred_iou_thresh": "conf_thres",
    "stability_score_thresh": "stability_score_thresh",
    "box_nms_thresh": "iou",
    "crop_nms_thresh": "crop_nms_thresh",
    "min_mask_region_area": "min_mask_region_area",
    "points_per_side": "points_stride",
}
# and as SamAutomaticMaskGenerator (Meta) spells them
META_NAMES = {k: k for k in ULTRALYTICS_NAMES}


def _stages(
    stats: Mapping[str, Any], params: AmgParams, names: Mapping[str, str]
) -> list[tuple[str, int, str]]:
    """``(filter, masks left after it, hint)`` in the order the generator applies them."""
    conf = f"{names['pred_iou_thresh']}={params.pred_iou_thresh:g}"
    stab = f"{names['stability_score_thresh']}={params.stability_score_thresh:g}"
    best_iou = stats.get("best_iou")
    best_stab = stats.get("best_stability")
    iou_hint = f"highest predicted IoU {best_iou:.3f}; " if best_iou is not None else ""
    stab_hint = f"highest stability score {best_stab:.3f}; " if best_stab is not None else ""
    stages = [
        (
            f"the predicted-IoU filter ({conf})",
            int(stats.get("iou_pass", 0)),
            f"{iou_hint}lower {names['pred_iou_thresh']} to keep more",
        ),
        (
            f"the stability filter ({stab})",
            int(stats.get("stability_pass", 0)),
            f"{stab_hint}lower {names['stability_score_thresh']} to keep more",
        ),
    ]
    if int(stats.get("crops", 1)) > 1:
        stages.append(
            (
                "the crop-edge filter (masks touching an inner crop edge)",
                int(stats.get("edge_pass", 0)),
                "use crop_n_layers=0 to segment the whole image only",
            )
        )
    return stages


def empty_reason(
    stats: Mapping[str, Any], params: AmgParams, names: Mapping[str, str] = ULTRALYTICS_NAMES
) -> str | None:
    """Why no mask was kept (the first filter that left none), or None if some were."""
    if int(stats.get("kept", 0)) > 0:
        return None
    if int(stats.get("points", 0)) == 0:
        return "no mask passed: the point grid is empty (no point was decoded)"
    decoded = int(stats.get("masks_decoded", 0))
    before = decoded
    for name, left, hint in _stages(stats, params, names):
        if left == 0:
            return f"no mask passed: {name} removed all {before:,} candidates ({hint})"
        before = left
    return f"no mask passed the filters ({decoded:,} decoded)"


def summary(
    stats: Mapping[str, Any], params: AmgParams, names: Mapping[str, str] = ULTRALYTICS_NAMES
) -> str:
    """One line: points decoded, masks kept by each filter, time; plus the reason if none."""
    points = int(stats.get("points", 0))
    crops = int(stats.get("crops", 1))
    parts = [
        f"{points:,} points" + (f" over {crops} crops" if crops > 1 else ""),
        f"{int(stats.get('masks_decoded', 0)):,} masks decoded",
    ]
    for name, left, _ in _stages(stats, params, names):
        parts.append(f"{left:,} past {name.removeprefix('the ')}")
    parts.append(f"{int(stats.get('crop_nms_kept', 0)):,} after box NMS")
    parts.append(f"{int(stats.get('kept', 0)):,} kept")
    line = "segment everything: " + " -> ".join(parts)
    if "total_s" in stats:
        line += f" ({stats['total_s']:.1f} s)"
    reason = empty_reason(stats, params, names)
    return line if reason is None else f"{line}\n{reason}"
