"""``samkit everything`` and ``samkit embed``: segment-everything and embedding precomputation
over a folder (local path or object storage URI), here or on Ray (``engine=ray``)."""

from __future__ import annotations

import sys
from typing import Any

from .args import Arg, UsageError
from .commands import EVERYTHING_ARGS, EXIT_PARTIAL

#: ``samkit predict``'s everything names -> the generator's (Meta's) names.
META_NAMES = {
    "points_stride": "points_per_side",
    "points_batch_size": "points_per_batch",
    "conf_thres": "pred_iou_thresh",
    "stability_score_thresh": "stability_score_thresh",
    "stability_score_offset": "stability_score_offset",
    "crop_n_layers": "crop_n_layers",
    "crop_overlap_ratio": "crop_overlap_ratio",
    "crop_downscale_factor": "crop_n_points_downscale_factor",
    "crop_nms_thresh": "crop_nms_thresh",
    "iou": "box_nms_thresh",
    "min_mask_region_area": "min_mask_region_area",
}


def _common(what: str, default_out: str) -> list[Arg]:
    return [
        Arg(
            "data", None, "image folder, image file, or URI (s3://bucket/images) (required)", "path"
        ),
        Arg("sam_model", "sam_b.pt", "SAM checkpoint path, official file name or variant", "str"),
        Arg(
            "output_dir", None, f"where the {what} go (path or URI; default {default_out})", "path"
        ),
        Arg("recursive", False, "include images in subfolders", "bool"),
        Arg("overwrite", False, "redo images that already have a result (default: resume)", "bool"),
        Arg("precision", "fp32", "fp32, bf16 or auto", "choice", ("fp32", "bf16", "auto")),
        Arg("device", "", "cpu, cuda, cuda:N ('' = CUDA when available, else CPU)", "str"),
        Arg(
            "engine",
            "local",
            "local (this process) or ray (a Ray Data pipeline; needs samkit[ray])",
            "choice",
            ("local", "ray"),
        ),
        Arg("ray_address", None, "engine=ray: cluster to join (default: start a local one)", "str"),
        Arg(
            "ray_actors",
            None,
            "engine=ray: model actors (default: one per ray_threads CPUs)",
            "int",
        ),
        Arg("ray_gpus", 0.0, "engine=ray: GPUs per actor", "float"),
        Arg("ray_threads", 1, "engine=ray: torch threads (and Ray CPUs) per actor", "int"),
    ]


EVERYTHING_FOLDER_ARGS = [
    *_common("JSON files (one per image)", "<data>_everything"),
    *EVERYTHING_ARGS,
]
EMBED_ARGS = _common(".npz embeddings (one per image)", "<data>_embeddings")


def _report(command: str, summary: Any) -> int:
    for failure in summary.failures:
        print(f"samkit {command}: failed {failure.path}: {failure.reason}", file=sys.stderr)
    print(summary)
    if summary.failures:
        return 1 if summary.done == 0 and summary.skipped == 0 else EXIT_PARTIAL
    return 0


def _require_data(args: dict[str, Any], command: str) -> None:
    if args["data"] is None:
        raise UsageError(f"argument 'data' is required: samkit {command} data=path/to/images")


def run_everything_folder(args: dict[str, Any]) -> int:
    from ..annotate.folder_jobs import segment_folder

    _require_data(args, "everything")
    params = {}  # only the settings given: the others keep the model family's defaults
    for arg in EVERYTHING_ARGS:
        value = args.pop(arg.name)
        if value != arg.default:
            params[META_NAMES[arg.name]] = value
    return _report("everything", segment_folder(**args, **params, progress=True))


def run_embed(args: dict[str, Any]) -> int:
    from ..annotate.folder_jobs import embed_folder

    _require_data(args, "embed")
    return _report("embed", embed_folder(**args, progress=True))
