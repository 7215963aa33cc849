"""The metadata JSON written next to an exported ONNX pair: what it is and how to feed it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import __version__
from ..data.atomic import atomic_write
from .spec import FORMAT_NAME, FORMAT_VERSION, MASK_OUTPUT_COUNTS, GraphMeta

_ELEM_TYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def graph_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Names, shapes (ints, or names for dynamic axes) and dtypes of a graph's inputs/outputs."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
            out.append(
                {"name": v.name, "shape": dims, "dtype": _ELEM_TYPES.get(t.elem_type, "other")}
            )
        return out

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def describe_export(
    written: dict[str, Path],
    base: GraphMeta,
    config: Any,
    opset: int,
    mask_output: str,
    verification: dict[str, Any] | None,
) -> dict[str, Any]:
    """The metadata document of an export (see the README's ONNX section)."""
    s = base.image_size
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "samkit_version": __version__,
        "variant": base.variant,
        "fingerprint": base.fingerprint,
        "model_config": config.to_dict() if config is not None else None,
        "opset": opset,
        "mask_output": mask_output,
        "num_masks": MASK_OUTPUT_COUNTS[mask_output],
        "mask_threshold": 0.0,
        "files": {key: p.name for key, p in written.items()},
        "graphs": {k: graph_io(p) for k, p in written.items() if p.suffix == ".onnx"},
        "preprocessing": {
            "channel_order": "RGB",
            "long_side": s,
            "resize": f"scale by {s} / max(H, W); new size int(H * scale + 0.5) x "
            "int(W * scale + 0.5); Pillow bilinear on the uint8 image",
            "pixel_mean": list(base.pixel_mean),
            "pixel_std": list(base.pixel_std),
            "normalize": "(pixel - mean) / std in float32 on the 0-255 scale",
            "pad": f"zeros at the bottom and right, after normalizing, to {s} x {s}",
            "encoder_input": f"float32 NCHW 1 x 3 x {s} x {s}",
        },
        "prompts": {
            "point_coords": "1 x N x 2 float32 (x, y) in pixels of the resized image: "
            "x * new_w / W, y * new_h / H",
            "point_labels": {
                "1": "foreground point",
                "0": "background point",
                "2": "box top-left corner",
                "3": "box bottom-right corner",
                "-1": "padding (coordinates ignored)",
            },
            "padding": "without a box, append one (0, 0) point labelled -1",
            "mask_input": f"1 x 1 x {s // 4} x {s // 4} float32 low-res logits of an earlier "
            "call (low_res_masks); has_mask_input [1.0] to use it, else [0.0]",
            "orig_im_size": "[H, W] float32, the original image size; masks come back H x W",
            "masks": "logits; mask = logits > mask_threshold",
        },
        "verification": verification,
    }


def write_metadata(
    path: Path,
    written: dict[str, Path],
    base: GraphMeta,
    config: Any,
    opset: int,
    mask_output: str,
    verification: dict[str, Any] | None = None,
) -> Path:
    """Write the metadata JSON atomically (temp file in the same folder, then rename)."""
    doc = describe_export(written, base, config, opset, mask_output, verification)
    atomic_write(path, json.dumps(doc, indent=2) + "\n")
    return path
