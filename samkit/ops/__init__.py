"""Plain tensor/array operations: boxes, NMS, RLE, polygons and mask region clean-up.

No models, no files: every function takes and returns torch tensors, numpy arrays or plain
Python data. Boxes are in pixels; the box format (XYXY or XYWH) is part of each name or
docstring.
"""

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

__all__ = [
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "mask_to_box_xyxy",
    "masks_to_boxes_xyxy",
    "nms",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]
