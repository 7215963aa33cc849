"""Plain tensor/array operations: boxes, NMS, RLE, polygons and mask region clean-up.

No models, no files: every function takes and returns torch tensors, numpy arrays or plain
Python data. Boxes are in pixels; the box format (XYXY or XYWH) is part of each name or
docstring.
"""

from samkit.ops.amg import (
    batch_iterator,
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
    is_box_near_crop_edge,
    stability_score,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from samkit.ops.boxes import (
    box_area,
    box_iou,
    clip_boxes,
    mask_to_box_xyxy,
    masks_to_boxes_xyxy,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from samkit.ops.nms import batched_nms, nms
from samkit.ops.polygons import (
    mask_to_polygons,
    merge_polygons,
    normalize_polygon,
    polygons_to_mask,
)
from samkit.ops.regions import remove_small_regions
from samkit.ops.rle import (
    area_from_rle,
    coco_to_rle,
    encode_coco_rle,
    mask_to_rle,
    masks_to_rle_torch,
    rle_to_coco,
    rle_to_mask,
)

__all__ = [
    "area_from_rle",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "coco_to_rle",
    "encode_coco_rle",
    "mask_to_box_xyxy",
    "mask_to_polygons",
    "mask_to_rle",
    "masks_to_boxes_xyxy",
    "masks_to_rle_torch",
    "merge_polygons",
    "nms",
    "normalize_polygon",
    "polygons_to_mask",
    "remove_small_regions",
    "rle_to_coco",
    "rle_to_mask",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    # segment-everything helpers
    "batch_iterator",
    "build_all_layer_point_grids",
    "build_point_grid",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "stability_score",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]
