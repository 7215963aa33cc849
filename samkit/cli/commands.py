"""Runners of the heavier ``samkit`` subcommands: predict, annotate, export, benchmark."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from ..data.safeio import safe_name, safe_subdir, write_atomic
from .args import Arg, UsageError

#: Exit code of a batch command that finished but could not process some of its inputs.
EXIT_PARTIAL = 3

EVERYTHING_ARGS = [
    Arg("points_stride", 32, "everything: points per image side of the prompt grid", "int"),
    Arg("points_batch_size", 64, "everything: points decoded per batch", "int"),
    Arg("conf_thres", 0.88, "everything: predicted-IoU threshold", "float"),
    Arg("stability_score_thresh", 0.95, "everything: stability-score threshold", "float"),
    Arg("stability_score_offset", 1.0, "everything: logit offset of the stability score", "float"),
    Arg("crop_n_layers", 0, "everything: crop layers (0 = whole image only)", "int"),
    Arg("crop_overlap_ratio", 512 / 1500, "everything: overlap of neighbouring crops", "float"),
    Arg("crop_downscale_factor", 1, "everything: grid downscale per crop layer", "int"),
    Arg("crop_nms_thresh", 0.7, "everything: IoU threshold of the NMS across crops", "float"),
    Arg("iou", 0.7, "everything: IoU threshold of the box NMS", "float"),
    Arg(
        "min_mask_region_area", 0, "everything: remove holes/islands smaller than this (px)", "int"
    ),
]

PREDICT_ARGS = [
    Arg("model", "sam_b.pt", "checkpoint path, official file name or variant name", "str"),
    Arg("source", None, "image, folder, glob, video or http(s) URL (required)", "str"),
    Arg("bboxes", None, "boxes XYXY in pixels: [x1,y1,x2,y2] or [[...],[...]]", "list"),
    Arg("points", None, "points in pixels: [x,y], [[x,y],...] or [[[x,y],...],...]", "list"),
    Arg("labels", None, "point labels (1 foreground, 0 background), shaped like points", "list"),
    Arg("multimask_output", False, "return 3 masks per prompt instead of 1", "bool"),
    *EVERYTHING_ARGS,
    Arg("precision", "auto", "fp32, bf16 or auto", "choice", ("fp32", "bf16", "auto")),
    Arg("device", None, "cpu, cuda, cuda:N or mps (default: cpu)", "str"),
    Arg("batch", 1, "images encoded per encoder pass", "int"),
    Arg("vid_stride", 1, "use every N-th video frame", "int"),
    Arg("project", "runs", "parent directory of the run directory", "path"),
    Arg("name", "predict", "run directory name (numbered if it exists: predict2, ...)", "str"),
    Arg("exist_ok", False, "write into an existing run directory instead of numbering", "bool"),
    Arg("save", True, "save an overlay image per input", "bool"),
    Arg("save_masks", True, "save each mask as a PNG under masks/", "bool"),
    Arg("save_txt", False, "save YOLO polygon labels under labels/", "bool"),
    Arg("cache_dir", None, "directory for downloaded checkpoints", "path"),
]


def increment_dir(parent: Path, name: str, exist_ok: bool) -> Path:
    """``parent/name``, or ``name2``, ``name3``, ... when it already exists (unless exist_ok)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
        raise UsageError(f"argument 'name': {name!r} must be a plain directory name")
    path = parent / name
    if exist_ok or not path.exists():
        return path
    n = 2
    while (parent / f"{name}{n}").exists():
        n += 1
    return parent / f"{name}{n}"


def _unique_stem(result, used: set[str]) -> str:
    stem = safe_name(Path(str(result.path)).stem or "image", max_bytes=150)
    if result.frame is not None:
        stem = f"{stem}_{result.frame}"
    candidate, n = stem, 2
    while candidate in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate)
    return candidate


def _atomic_text(path: Path, text: str) -> None:
    write_atomic(path, text)


def run_predict(args: dict[str, Any]) -> int:
    from tqdm import tqdm

    from ..model import SAM

    if args["source"] is None:
        raise UsageError("argument 'source' is required: samkit predict source=image.jpg")
    prompts = {k: args[k] for k in ("bboxes", "points", "labels") if args[k] is not None}
    everything = {a.name: args[a.name] for a in EVERYTHING_ARGS if args[a.name] != a.default}
    if prompts and everything:
        raise UsageError(
            f"segment-everything arguments ({', '.join(sorted(everything))}) are only used without prompts"
        )
    model = SAM(args["model"], cache_dir=args["cache_dir"], device=args["device"])
    save_dir = increment_dir(Path(args["project"]), args["name"], args["exist_ok"])

    call_kwargs = {} if prompts else everything
    stream = model(
        args["source"],
        **prompts,
        multimask_output=args["multimask_output"],
        stream=True,
        precision=args["precision"],
        batch=args["batch"],
        vid_stride=args["vid_stride"],
        **call_kwargs,
    )
    safe_subdir(save_dir, "")  # OutputError naming the folder if it cannot be made
    records, used = [], set()
    n_images = n_masks = 0
    t0 = time.perf_counter()
    for result in tqdm(stream, desc="samkit predict", unit="img", file=sys.stderr, disable=None):
        stem = _unique_stem(result, used)
        if args["save"]:
            result.save(save_dir / f"{stem}.png")
        if args["save_masks"] and len(result):
            result.save_masks(safe_subdir(save_dir, "masks"), prefix=stem)
        if args["save_txt"]:
            _atomic_text(safe_subdir(save_dir, "labels") / f"{stem}.txt", result.to_yolo(0))
        record = result.to_dict()
        record["output_stem"] = stem
        records.append(record)
        n_images += 1
        n_masks += len(result)
    elapsed = time.perf_counter() - t0
    skipped = [{"path": e.path, "frame": e.frame, "reason": e.reason} for e in stream.errors]
    summary = {
        "model": model.name,
        "source": str(args["source"]),
        "prompts": prompts or None,
        "mode": "prompts" if prompts else "everything",
        "images": records,
        "skipped": skipped,
    }
    _atomic_text(save_dir / "results.json", json.dumps(summary))
    for e in skipped:
        print(f"samkit predict: skipped {e['path']}: {e['reason']}", file=sys.stderr)
    per_image = f"{elapsed / n_images:.2f} s/image" if n_images else "-"
    print(
        f"{n_images} image(s), {n_masks} mask(s), {len(skipped)} skipped, {per_image}; "
        f"results saved to {save_dir}"
    )
    if n_images == 0:
        return 1
    return EXIT_PARTIAL if skipped else 0


ANNOTATE_ARGS = [
    Arg("data", None, "image folder (or one image) to annotate (required)", "path"),
    Arg(
        "det_model",
        "yolov8x.pt",
        "Ultralytics YOLO detector (needs samkit[yolo]); unused with labels=",
        "str",
    ),
    Arg("sam_model", "sam_b.pt", "SAM checkpoint path, official file name or variant name", "str"),
    Arg(
        "labels",
        None,
        "existing boxes instead of a detector: YOLO label folder or COCO JSON",
        "path",
    ),
    Arg(
        "format",
        "yolo",
        "output format: yolo (.txt per image) or coco (one JSON)",
        "choice",
        ("yolo", "coco"),
    ),
    Arg(
        "output_dir",
        None,
        "output directory (default: <data>_auto_annotate_labels next to data)",
        "path",
    ),
    Arg("names", None, "class names: a list, or a classes.txt / data.yaml path", "any"),
    Arg("device", "", "cpu, cuda, cuda:N ('' = CUDA when available, else CPU)", "str"),
    Arg("conf", 0.25, "detector confidence threshold", "float"),
    Arg("iou", 0.45, "detector NMS IoU threshold", "float"),
    Arg("imgsz", 640, "detector input size", "int"),
    Arg("max_det", 300, "maximum boxes per image", "int"),
    Arg("classes", None, "keep only these class ids, e.g. [0,2]", "any"),
    Arg(
        "segmentation", "rle", "COCO masks as rle (exact) or polygon", "choice", ("rle", "polygon")
    ),
    Arg(
        "parts",
        "merge",
        "YOLO multi-part masks: merge, split or largest",
        "choice",
        ("merge", "split", "largest"),
    ),
    Arg("overwrite", False, "redo images that already have labels (default: resume)", "bool"),
    Arg("recursive", False, "include images in subfolders", "bool"),
]


def run_annotate(args: dict[str, Any]) -> int:
    from ..annotate.run import auto_annotate

    if args["data"] is None:
        raise UsageError(
            "argument 'data' is required: samkit annotate data=path/to/images labels=..."
        )
    summary = auto_annotate(**args, progress=True)
    for failure in summary.failures:
        print(f"samkit annotate: failed {failure.path}: {failure.reason}", file=sys.stderr)
    print(
        f"{summary.images} image(s): {summary.annotated} annotated, {summary.skipped} already done, "
        f"{summary.empty} empty, {len(summary.failures)} failed; {summary.objects} object(s), "
        f"{summary.dropped} dropped; {summary.seconds:.1f} s; labels in {summary.output_dir}"
    )
    if summary.failures:
        return 1 if summary.annotated == 0 and summary.skipped == 0 else EXIT_PARTIAL
    return 0


BENCHMARK_ARGS = [
    Arg(
        "models",
        ["sam_b", "mobile_sam"],
        "variants to measure: [sam_b,sam_l,sam_h,mobile_sam]",
        "list",
    ),
    Arg("precisions", ["fp32", "bf16"], "encoder precisions: [fp32,bf16] (or auto)", "list"),
    Arg("runs", 3, "timed runs per measurement (the median is reported)", "int"),
    Arg("warmup", 1, "untimed warm-up runs", "int"),
    Arg("everything", True, "also time segment-everything per image", "bool"),
    Arg("threads", None, "torch threads (default: all cores)", "int"),
    Arg(
        "model", None, "a real checkpoint to measure instead of seeded weights (its variant)", "str"
    ),
    Arg("json", "runs/benchmark.json", "where to write the full result as JSON", "path"),
]


def run_benchmark(args: dict[str, Any]) -> int:
    from .benchmark import MODELS, print_table, run_benchmarks

    models = [str(m) for m in args["models"]]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise UsageError(f"argument 'models': unknown {unknown}; choose from {list(MODELS)}")
    checkpoints = None
    if args["model"] is not None:
        from ..zoo.checkpoints import read_checkpoint, resolve_checkpoint

        path = resolve_checkpoint(args["model"])
        variant = read_checkpoint(path).variant
        if variant is None:
            raise UsageError(f"{path} is not one of the benchmarked variants {list(MODELS)}")
        models, checkpoints = [variant.name], {variant.name: str(path)}
    result = run_benchmarks(
        models=models,
        precisions=[str(p) for p in args["precisions"]],
        runs=args["runs"],
        warmup=args["warmup"],
        checkpoints=checkpoints,
        everything=args["everything"],
        threads=args["threads"],
        json_path=args["json"],
    )
    print_table(result)
    print(f"full result written to {args['json']}")
    return 0


EXPORT_ARGS = [
    Arg("model", "sam_b.pt", "checkpoint path, official file name or variant name", "str"),
    Arg(
        "format",
        "onnx",
        "export format (onnx: image encoder + prompt decoder pair)",
        "choice",
        ("onnx",),
    ),
    Arg("output_dir", ".", "directory to write the exported files into", "path"),
    Arg("name", None, "file name prefix (default: checkpoint stem or variant name)", "str"),
    Arg("opset", 17, "ONNX opset", "int"),
    Arg(
        "mask_output",
        "all",
        "decoder masks: all, multi, single or best",
        "choice",
        ("all", "multi", "single", "best"),
    ),
    Arg("quantize", False, "also write int8 copies: true/decoder, encoder or all", "any"),
    Arg("encoder", True, "export the image encoder", "bool"),
    Arg("decoder", True, "export the prompt decoder", "bool"),
    Arg("verify", False, "run the exported graphs in onnxruntime and compare with torch", "bool"),
    Arg("cache_dir", None, "directory for downloaded checkpoints", "path"),
]


def run_export(args: dict[str, Any]) -> int:
    from ..model import SAM

    options = {
        k: v for k, v in args.items() if k not in ("model", "format", "output_dir", "cache_dir")
    }
    model = SAM(args["model"], cache_dir=args["cache_dir"])
    paths = model.export(args["format"], args["output_dir"], **options)
    for kind, path in paths.items():
        print(f"{kind:<14} {path}")
    return 0
