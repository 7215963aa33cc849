"""Runners of the heavier ``samkit`` subcommands: predict, annotate, export, benchmark."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ..safeio import safe_name, safe_subdir, write_atomic
from .args import Arg, UsageError

#: Exit code of a batch command that finished but could not process some of its inputs.
EXIT_PARTIAL = 3

EVERYTHING_ARGS = [
    Arg(
        "points_stride",
        32,
        "everything: points per side of the prompt grid, in each crop (points_stride² per crop)",
        "int",
    ),
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
    Arg(
        "verbose",
        True,
        "segment everything: progress bar with the time left, and what each filter kept",
        "bool",
    ),
    Arg("tile", None, "segment in tiles of this many px (true = the model's input size)", "any"),
    Arg("overlap", None, "pixels shared by neighbouring tiles (default tile / 4)", "int"),
    Arg("bands", None, "GeoTIFF bands for R,G,B, e.g. [3,2,1] (with tile=)", "list"),
]


def increment_dir(parent: Path, name: str, exist_ok: bool) -> Path:
    """:func:`samkit.data.run_dirs.increment_dir`, a bad name being a usage error."""
    from ..data.run_dirs import increment_dir as numbered
    from ..errors import SamkitError

    try:
        return numbered(parent, name, exist_ok)
    except SamkitError as e:
        raise UsageError(str(e)) from None


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

    from ..errors import PromptError
    from ..model import SAM
    from ..predict.prompts import parse_prompts

    if args["source"] is None:
        raise UsageError("argument 'source' is required: samkit predict source=image.jpg")
    prompts = {k: args[k] for k in ("bboxes", "points", "labels") if args[k] is not None}
    everything = {a.name: args[a.name] for a in EVERYTHING_ARGS if args[a.name] != a.default}
    if prompts and everything:
        raise UsageError(
            f"segment-everything arguments ({', '.join(sorted(everything))}) are only used without prompts"
        )
    try:  # shapes, labels and counts need no image: check them before the model loads
        parse_prompts(**prompts)
    except PromptError as e:
        raise UsageError(str(e)) from None
    model = SAM(args["model"], cache_dir=args["cache_dir"], device=args["device"])
    save_dir = increment_dir(Path(args["project"]), args["name"], args["exist_ok"])
    tile = args["tile"]
    if tile is not None and not isinstance(tile, bool | int):
        raise UsageError(f"tile must be a number of pixels or true, got {tile!r}")
    if tile not in (None, False) and str(args["source"]).lower().endswith((".tif", ".tiff")):
        from .large import run_predict_large

        return run_predict_large(model, args, prompts, everything, save_dir)

    call_kwargs = {} if prompts else {**everything, "verbose": args["verbose"]}
    if tile not in (None, False):
        call_kwargs.update(tile=tile, overlap=args["overlap"])
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
    records, used = [], set()
    n_images = n_masks = 0
    t0 = time.perf_counter()
    # the run directory is made when there is something to write: a failed run leaves none
    bar = tqdm(stream, desc="samkit predict", unit="img", file=sys.stderr, disable=None)
    for result in bar:
        safe_subdir(save_dir, "")  # OutputError naming the folder if it cannot be made
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
    safe_subdir(save_dir, "")
    _atomic_text(save_dir / "results.json", json.dumps(summary))
    for e in skipped:
        print(f"samkit predict: skipped {e['path']}: {e['reason']}", file=sys.stderr)
    per_image = f"{elapsed / n_images:.2f} s/image" if n_images else "-"
    print(
        f"{n_images} image(s), {n_masks} mask(s), {len(skipped)} skipped, {per_image}; "
        f"results saved to {save_dir}"
    )
    if n_images and not n_masks and not prompts and not args["verbose"]:
        print(
            "no mask passed the segment-everything filters (run with verbose=true to see which "
            "filter removed them)",
            file=sys.stderr,
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
    Arg(
        "names",
        None,
        "class names: a list, a classes.txt / data.yaml path, or coco (the 80 COCO classes)",
        "any",
    ),
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
    Arg(
        "engine",
        "local",
        "local (this process) or ray (a Ray Data pipeline; needs samkit[ray])",
        "choice",
        ("local", "ray"),
    ),
    Arg("ray_address", None, "engine=ray: cluster to join (default: start a local one)", "str"),
    Arg("ray_actors", None, "engine=ray: model actors (default: one per ray_threads CPUs)", "int"),
    Arg("ray_gpus", 0.0, "engine=ray: GPUs per actor", "float"),
    Arg("ray_threads", 1, "engine=ray: torch threads (and Ray CPUs) per actor", "int"),
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
    for note in summary.notes:
        print(f"samkit annotate: note: {note}", file=sys.stderr)
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
    Arg(
        "preset",
        None,
        "write the files a tool loads: xanylabeling, cvat or webdemo (other options: name, opset)",
        "choice",
        ("xanylabeling", "cvat", "webdemo"),
    ),
    Arg("image", None, "webdemo: also write this image's embedding as .npy", "path"),
    Arg("samkit_requirement", None, "cvat: pip requirement the function installs", "str"),
    Arg("cache_dir", None, "directory for downloaded checkpoints", "path"),
]
PRESET_OPTIONS = ("name", "opset", "image", "samkit_requirement")


def run_export(args: dict[str, Any]) -> int:
    from ..model import SAM

    skip = ("model", "format", "output_dir", "cache_dir", "preset")
    options = {k: v for k, v in args.items() if k not in skip}
    if args["preset"] is not None:  # the pair options do not apply to a preset
        defaults = {a.name: a.default for a in EXPORT_ARGS}
        changed = [k for k, v in options.items() if k not in PRESET_OPTIONS and v != defaults[k]]
        if changed:
            from ..errors import ExportError

            raise ExportError(
                f"{', '.join(changed)} do not apply with preset={args['preset']} "
                f"(its options: {', '.join(PRESET_OPTIONS)})"
            )
        options = {k: v for k, v in options.items() if k in PRESET_OPTIONS and v is not None}
        options["preset"] = args["preset"]
    else:
        options = {k: v for k, v in options.items() if k not in ("image", "samkit_requirement")}
    model = SAM(args["model"], cache_dir=args["cache_dir"])
    paths = model.export(args["format"], args["output_dir"], **options)
    for kind, path in paths.items():
        print(f"{kind:<14} {path}")
    return 0


SEED_ARGS = [
    Arg("model", None, "variant: sam_b, sam_l, sam_h or mobile_sam (required)", "str"),
    Arg(
        "out",
        None,
        "file to write (default: <official file name> in the current directory, e.g. sam_b.pt)",
        "path",
    ),
]


def run_seed(args: dict[str, Any]) -> int:
    from ..zoo.registry import VARIANTS, get_variant
    from ..zoo.seeded import write_seeded_checkpoint

    names = [n for n, v in VARIANTS.items() if v.packaged is None]
    variant = get_variant(str(args["model"])) if args["model"] is not None else None
    if variant is None or variant.packaged is not None:
        raise UsageError(
            f"argument 'model': give one of {', '.join(names)} (got {args['model']!r})"
        )
    ultralytics = [f.filename for f in variant.files if f.filename.endswith(".pt")]
    default = ultralytics[0] if ultralytics else variant.default_file.filename
    out = Path(args["out"] if args["out"] is not None else default)
    path = write_seeded_checkpoint(variant.name, out)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB): seeded stand-in weights of {variant.title}")
    print(
        "its masks are meaningless: use it to try code offline (place it in the cache under an "
        "official name, or pass its path); real weights: see the README"
    )
    return 0
