"""Plain tensor/array operations: boxes, NMS, RLE, polygons and mask region clean-up.

No models, no files: every function takes and returns torch tensors, numpy arrays or plain
Python data. Boxes are in pixels; the box format (XYXY or XYWH) is part of each name or
docstring.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> submodule. Loaded on first use (PEP 562) so that the torch-free submodules
# (rle, polygons) can be imported where torch is not installed.
_EXPORTS = {
    "batch_iterator": "amg",
    "build_all_layer_point_grids": "amg",
    "build_point_grid": "amg",
    "generate_crop_boxes": "amg",
    "is_box_near_crop_edge": "amg",
    "stability_score": "amg",
    "uncrop_boxes_xyxy": "amg",
    "uncrop_masks": "amg",
    "uncrop_points": "amg",
    "box_area": "boxes",
    "box_iou": "boxes",
    "clip_boxes": "boxes",
    "mask_to_box_xyxy": "boxes",
    "masks_to_boxes_xyxy": "boxes",
    "xywh_to_xyxy": "boxes",
    "xyxy_to_xywh": "boxes",
    "batched_nms": "nms",
    "nms": "nms",
    "mask_to_polygons": "polygons",
    "merge_polygons": "polygons",
    "normalize_polygon": "polygons",
    "polygons_to_mask": "polygons",
    "remove_small_regions": "regions",
    "area_from_rle": "rle",
    "coco_to_rle": "rle",
    "encode_coco_rle": "rle",
    "mask_to_rle": "rle",
    "masks_to_rle_torch": "rle",
    "rle_to_coco": "rle",
    "rle_to_mask": "rle",
}

__all__ = sorted(_EXPORTS)


class _OpsModule(types.ModuleType):
    """Keeps ``samkit.ops.nms`` the function: when a submodule is first imported, the import
    system binds it as an attribute of this package, which would shadow the same-named export."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _OpsModule


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'samkit.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"samkit.ops.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
