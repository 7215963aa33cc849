"""Auto-annotation: boxes (a detector or existing labels) -> SAM masks -> a segmentation dataset.

Each image is read once, its boxes come from the box source, SAM encodes the image once and
decodes all its boxes as one batch, and the masks are written as YOLO segmentation labels or
into one COCO JSON. The job is resumable (an image whose result file exists is skipped), writes
every file atomically, and isolates failures: a bad image is logged and counted, the run goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.files import list_images, read_image
from ..errors import SamkitError
from ..models.sam2 import Sam2
from ..ops import clip_boxes
from ..predict.decode import decode_groups
from ..predict.device import resolve_device
from ..predict.prompts import Prompts
from ..predict.sam_predictor import SamPredictor
from ..safeio import is_inside, same_file
from .detectors import (
    BoxSource,
    CallableDetector,
    Detections,
    UltralyticsDetector,
    is_ultralytics_model,
    normalize_names,
)
from .jobs import failure_reason, run_job
from .labels import COCO80_NAMES, CocoBoxes, YoloLabelBoxes, read_names_file
from .writers import COCO_FILE, CocoWriter, SegmentedObject, YoloWriter, names_text

logger = logging.getLogger("samkit.annotate")

DECODE_BATCH = 64  # boxes per mask-decoder call (all boxes of an image, unless more)


@dataclass
class AnnotateFailure:
    """An image that got no result, and why."""

    path: Path
    reason: str


@dataclass
class AnnotateSummary:
    """Counts of one :func:`auto_annotate` run (``annotated``, ``objects``... are this run's)."""

    output_dir: Path
    format: str
    images: int = 0  # image files found
    annotated: int = 0  # images given a result in this run, including empty ones
    skipped: int = 0  # images already done by an earlier run
    empty: int = 0  # annotated images with no object written
    objects: int = 0  # objects written
    dropped: int = 0  # boxes whose mask was empty or had no polygon of >= 3 points
    failures: list[AnnotateFailure] = field(default_factory=list)
    names: dict[int, str] | None = None
    notes: list[str] = field(default_factory=list)  # things the user should know (no names, ...)
    annotations_file: Path | None = None  # the COCO JSON (format="coco")
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def __str__(self) -> str:
        return (
            f"{self.images} images: {self.annotated} annotated ({self.empty} empty), "
            f"{self.skipped} skipped (already done), {self.failed} failed; {self.objects} "
            f"objects written, {self.dropped} dropped (no mask); {self.seconds:.1f} s; "
            f"results in {self.annotations_file or self.output_dir}"
        )


def auto_annotate(
    data: str | os.PathLike,
    det_model: Any = "yolov8x.pt",
    sam_model: Any = "sam_b.pt",
    device: str = "",
    conf: float = 0.25,
    iou: float = 0.45,
    imgsz: int = 640,
    max_det: int = 300,
    classes: int | Sequence[int] | None = None,
    output_dir: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    format: str = "yolo",
    overwrite: bool = False,
    names: Sequence[str] | dict[int, str] | str | os.PathLike | None = None,
    segmentation: str = "rle",
    parts: str = "merge",
    recursive: bool = False,
    precision: str = "fp32",
    progress: bool = True,
    tile: int | bool | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    ray_gpus: float = 0.0,
    ray_threads: int = 1,
) -> AnnotateSummary:
    """Segment every box of every image in ``data`` with SAM and write a segmentation dataset.

    Args:
        data: a folder of images (``recursive`` to include subfolders) or one image file.
        det_model: where boxes come from when ``labels`` is None: an Ultralytics YOLO weights
            name/path or loaded model (needs ``pip install "samkit[yolo]"``), or any callable
            ``image (H x W x 3 RGB uint8) -> (boxes_xyxy N x 4 pixels, class_ids N[, scores N])``.
        sam_model: a SAM checkpoint path / official name / variant name, or a ``SAM`` or ``Sam``.
        device: "" picks CUDA when available, else CPU; or "cpu", "cuda:1", "0", ...
        conf, iou, imgsz, max_det: detector settings (YOLO: passed to ``predict``; callable:
            boxes scoring below ``conf`` are dropped and at most ``max_det`` best kept).
        classes: keep only boxes of these class ids (COCO input: category ids).
        output_dir: where results go; default ``<data>_auto_annotate_labels`` next to ``data``.
        labels: existing boxes instead of a detector: a YOLO label folder or a COCO JSON.
        format: "yolo" (a ``.txt`` per image, ``classes.txt``, ``data.yaml``) or "coco"
            (``annotations.json``).
        overwrite: redo images that already have a result (default: skip them, i.e. resume).
        names: class names (list, ``{id: name}``, a classes.txt / data.yaml path, or "coco"
            for the 80 COCO classes in YOLO's 0-based order); default from the detector, the
            COCO categories, or a classes.txt / data.yaml by the labels. Without names, the
            summary's ``notes`` say so (no data.yaml; COCO categories named by id).
        segmentation: COCO masks as "rle" (exact) or "polygon". parts: YOLO multi-part masks
            "merge"d into one polygon (like Ultralytics), "split" one line per part, or "largest".
        recursive: include images in subfolders (results mirror the folder structure).
        precision: SAM image encoder precision, "fp32" (reference), "bf16" or "auto" (bf16
            where the hardware has it); see :mod:`samkit.predict.precision`.
        progress: show a progress bar.
        tile: decode each box in a native-resolution window of this many pixels (True: the
            model's input size) instead of on the whole image downscaled; for large images.
        engine: "local" (this process) or "ray": a Ray Data pipeline whose actors each load the
            model once (:mod:`samkit.annotate.ray_engine`, extra ``ray``); same files, byte for
            byte. ``ray_address``: a running cluster ("auto", "ray://head:10001", ...), default a
            local one; ``ray_actors``: actors (default: one per ``ray_threads`` CPUs, or per
            GPU); ``ray_gpus``: GPUs per actor; ``ray_threads``: torch threads (CPUs) per actor.

    Returns:
        An :class:`AnnotateSummary`; per-image failures are also logged to ``samkit.annotate``.
    """
    start = time.perf_counter()
    fmt = _choice("format", format, ("yolo", "coco"))
    _choice("engine", engine, ("local", "ray"))
    _choice("segmentation", segmentation, ("rle", "polygon"))
    _choice("parts", parts, ("merge", "split", "largest"))
    data = Path(data).expanduser()
    out = _output_dir(data, output_dir)
    root, images = list_images(data, recursive=recursive, exclude=out)
    if not images:
        raise SamkitError(
            f"no images found in {data} (looked for .jpg, .png, .bmp, .tif, .webp...)"
        )
    if recursive and data.is_dir() and not same_file(out, data) and is_inside(out, data):
        logger.warning(
            "auto_annotate: the output folder %s is inside the image folder %s; images in it "
            "are not annotated (choose an output_dir outside %s to avoid this)",
            out,
            data,
            data,
        )
    writer = YoloWriter(out, parts) if fmt == "yolo" else CocoWriter(out, segmentation)
    _check_inputs_not_outputs(writer, labels, names)
    keep = _class_filter(classes)
    source = _box_source(det_model, labels, images, conf, iou, imgsz, max_det, keep, device)
    class_names = _names(names) if names is not None else source.names
    mapped = class_names
    if fmt == "yolo" and class_names and source.to_output_ids is not None:
        ids = source.to_output_ids
        mapped = {ids[c]: n for c, n in class_names.items() if c in ids}
    # user files in the output folder are replaced only with overwrite=True (checked up front)
    if fmt == "yolo" and mapped:
        writer.check_user_file("classes.txt", names_text(mapped), overwrite)
        writer.check_user_file("data.yaml", None, overwrite)
    elif fmt == "coco":
        writer.check_user_file(COCO_FILE, None, overwrite)

    writer.open()
    summary = AnnotateSummary(output_dir=out, format=fmt, images=len(images))
    try:
        todo = _plan(writer, images, overwrite, summary, root)
        opts = None
        if engine == "ray":
            from .ray_engine import RayOptions

            opts = RayOptions(ray_address, ray_actors, ray_gpus, ray_threads)
            device = opts.device(device)
        to_output = source.to_output_ids if fmt == "yolo" else None
        job = AnnotateJob(root, source, keep, sam_model, precision, device, writer, to_output, tile)
        for row in run_job(todo, job, engine, opts, "auto_annotate", progress):
            if row.error:
                record_failure(summary, root / row.rel, row.error)
            else:
                record_success(summary, *row.counts)
        summary.names = mapped
        if not mapped:
            summary.notes.append(_no_names_note(fmt))
            logger.warning("auto_annotate: %s", summary.notes[-1])
        if fmt == "yolo":
            writer.finish(root, mapped)
        else:
            writer.finish(images, mapped, source.image_ids)
            summary.annotations_file = writer.file
    finally:
        writer.close(keep_work_dir=fmt == "coco")
    summary.seconds = time.perf_counter() - start
    logger.info("auto_annotate: %s", summary)
    return summary


@dataclass
class AnnotateJob:
    """auto_annotate's per-image job (:mod:`samkit.annotate.jobs`): the settings an engine
    ships to where the model runs; ``load()`` loads SAM once and returns the step."""

    root: Path
    source: Any
    keep: set[int] | None
    sam_model: Any
    precision: str
    device: str
    writer: Any
    to_output: dict[int, int] | None
    tile: int | bool | None
    counts: ClassVar[tuple[str, ...]] = ("written", "dropped")

    def load(self):
        predictor = _predictor(_load_sam(self.sam_model, self.device), self.precision)

        def step(rel: PurePosixPath) -> tuple[int, int]:
            return annotate_image(
                rel, self.root, self.source, self.keep, predictor, self.writer,
                self.to_output, self.tile,
            )  # fmt: skip

        return step


def annotate_image(rel, root, source, keep, predictor, writer, to_output, tile) -> tuple[int, int]:
    """Read one image, get its boxes, segment them and write its result file (atomically);
    returns ``(objects written, objects dropped)``. The one per-image step of every engine."""
    image = read_image(root / rel)
    dets = source(rel, image)
    if keep is not None:
        dets = dets.select(np.isin(dets.class_ids, list(keep)))
    objects = segment_detections(predictor, image, dets, tile)
    if to_output is not None:
        objects = _remap(objects, to_output)
    return writer.write(rel, image.shape[:2], objects)


def record_failure(summary: AnnotateSummary, path: Path, exc: BaseException | str) -> None:
    reason = exc if isinstance(exc, str) else failure_reason(exc)
    logger.warning("auto_annotate: %s failed: %s", path, reason)
    summary.failures.append(AnnotateFailure(path, reason))


def record_success(summary: AnnotateSummary, written: int, dropped: int) -> None:
    summary.annotated += 1
    summary.objects += written
    summary.dropped += dropped
    summary.empty += written == 0


def segment_detections(
    predictor: SamPredictor, image: np.ndarray, dets: Detections, tile: int | bool | None = None
) -> Iterator[SegmentedObject]:
    """One :class:`SegmentedObject` per detection, in order (class ids as given).

    Boxes are clipped to the image; a box empty after clipping gets ``mask=None``. The image is
    encoded once and its boxes decoded together (in chunks of ``DECODE_BATCH``); masks are
    produced lazily, a few at a time (``decode.UPSAMPLE_GROUP``), so memory stays bounded for many boxes.
    With ``tile`` each box is decoded in a native-resolution window around it
    (:func:`samkit.everything.tiling.predict_tiled`) instead of on the downscaled whole image.
    """
    h, w = image.shape[:2]
    boxes = clip_boxes(dets.boxes_xyxy, h, w)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not valid.any():
        masks = iter(())
    elif tile is not None and tile is not False:
        masks = _tiled_box_masks(predictor, image, boxes[valid], tile)
    else:
        masks = _box_masks(predictor, image, boxes[valid])
    for i in range(len(dets)):
        mask, pred_iou = next(masks) if valid[i] else (None, 0.0)
        yield SegmentedObject(int(dets.class_ids[i]), float(dets.scores[i]), pred_iou, mask)


def _tiled_box_masks(
    predictor: SamPredictor, image: np.ndarray, boxes_xyxy: np.ndarray, tile: int | bool
) -> Iterator[tuple[np.ndarray, float]]:
    from ..everything.tiling import predict_tiled

    precision = predictor.precision
    out = predict_tiled(predictor.model, image, boxes_xyxy, tile=tile, precision=precision)
    for i in range(len(out)):
        yield out.mask(i), float(out.scores[i])


def _box_masks(
    predictor: SamPredictor, image: np.ndarray, boxes_xyxy: np.ndarray
) -> Iterator[tuple[np.ndarray, float]]:
    """``(H x W bool mask, predicted IoU)`` of SAM's single-mask output for each XYXY box."""
    predictor.set_image(image)
    prompts = Prompts(n=len(boxes_xyxy), boxes=np.asarray(boxes_xyxy, dtype=np.float64))
    for group in decode_groups(predictor, prompts, False, DECODE_BATCH):
        yield from zip(group.masks.cpu().numpy(), group.scores.tolist())


def _remap(objects: Iterator[SegmentedObject], ids: dict[int, int]) -> Iterator[SegmentedObject]:
    for obj in objects:
        obj.class_id = ids[obj.class_id]
        yield obj


# -- setup helpers -----------------------------------------------------------------------------
def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SamkitError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _output_dir(data: Path, output_dir: str | os.PathLike | None) -> Path:
    if output_dir is not None:
        out = Path(output_dir).expanduser()
    else:
        name = data.stem if data.is_file() else data.resolve().name
        out = data.resolve().parent / f"{name}_auto_annotate_labels"
    if out.exists() and not out.is_dir():
        raise SamkitError(f"output_dir {out} exists and is not a folder")
    return out


def _check_inputs_not_outputs(writer, labels, names) -> None:
    """Refuse a run whose outputs would replace one of its inputs (compared by resolved path:
    the same file or folder under another name, or through a link, counts)."""
    out = writer.out_dir
    outputs = [out / COCO_FILE, out / "classes.txt", out / "data.yaml"]
    inputs = [
        ("labels=", labels),
        ("names=", names if isinstance(names, (str, os.PathLike)) else None),
    ]
    for arg, value in inputs:
        if value is None:
            continue
        path = Path(value).expanduser()
        if same_file(path, out):
            raise SamkitError(
                f"output_dir {out} is the {arg} input {path}: choose another output_dir"
            )
        for target in outputs:
            if same_file(path, target) and not (arg == "names=" and target.name == "classes.txt"):
                raise SamkitError(
                    f"{arg} {path} is {target.name} of the output folder {out}, which this run "
                    "writes: the input would be replaced. Choose another output_dir"
                )


def _class_filter(classes: int | Sequence[int] | None) -> set[int] | None:
    if classes is None:
        return None
    values = [classes] if isinstance(classes, int) else list(classes)
    try:
        return {int(c) for c in values}
    except (TypeError, ValueError) as exc:
        raise SamkitError(f"classes must be class ids (integers), got {classes!r}") from exc


def _no_names_note(fmt: str) -> str:
    """What happens without class names, and how to give them."""
    what = (
        "no data.yaml or classes.txt written"
        if fmt == "yolo"
        else 'COCO categories are named by their ids ("0", "5", ...)'
    )
    return (
        f"class names unknown (none given, none from the detector, no classes.txt or data.yaml "
        f"next to the labels): {what}; pass names=[...], names=classes.txt, names=data.yaml, "
        f"or names=coco for the 80 COCO classes of COCO-trained YOLO models"
    )


def _names(names: Any) -> dict[int, str] | None:
    if isinstance(names, str) and names.lower() == "coco" and not Path(names).exists():
        return dict(COCO80_NAMES)
    if isinstance(names, (str, os.PathLike)):
        return read_names_file(names)
    return normalize_names(names)


def _box_source(det_model, labels, images, conf, iou, imgsz, max_det, keep, device):
    """The box source: label input if given, else a callable or an Ultralytics detector."""
    if labels is not None:
        path = Path(labels).expanduser()
        if path.is_dir():
            return YoloLabelBoxes(path, images)
        if path.suffix.lower() == ".json":
            return CocoBoxes(path, images)
        raise SamkitError(
            f"labels= must be a YOLO label folder or a COCO .json file, got {path} "
            f"({'not found' if not path.exists() else 'not a folder or .json'})"
        )
    if det_model is None:
        raise SamkitError("give det_model (a YOLO model or a callable) or labels= (existing boxes)")
    if isinstance(det_model, (str, os.PathLike)) or is_ultralytics_model(det_model):
        classes = sorted(keep) if keep is not None else None
        return UltralyticsDetector(
            det_model,
            conf=conf,
            iou=iou,
            imgsz=imgsz,
            max_det=max_det,
            classes=classes,
            device=device,
        )
    if callable(det_model):
        return _ThresholdedDetector(CallableDetector(det_model), conf, max_det)
    raise SamkitError(
        f"det_model must be a YOLO weights path/name or a callable, got {type(det_model).__name__}"
    )


class _ThresholdedDetector(BoxSource):
    """A callable detector with ``conf`` and ``max_det`` applied (order otherwise kept)."""

    def __init__(self, detector: CallableDetector, conf: float, max_det: int) -> None:
        self.detector = detector
        self.conf = conf
        self.max_det = max_det
        self.names = detector.names

    def __call__(self, rel: PurePosixPath, image: np.ndarray) -> Detections:
        dets = self.detector(rel, image)
        dets = dets.select(dets.scores >= self.conf)
        if len(dets) > self.max_det:
            best = np.argsort(-dets.scores, kind="stable")[: self.max_det]
            dets = dets.select(np.sort(best))
        return dets


def _plan(writer, images, overwrite, summary, root) -> list[PurePosixPath]:
    """Images to do now: not yet done (unless ``overwrite``), and no YOLO label-name clash."""
    todo = []
    owners: dict[Path, PurePosixPath] = {}
    for rel in images:
        target = writer.result_path(rel)
        if target in owners:  # a.jpg and a.png would both write a.txt
            reason = f"its result {target.name} is also the result of {owners[target]}; rename one"
            logger.warning("auto_annotate: %s skipped: %s", root / rel, reason)
            summary.failures.append(AnnotateFailure(root / rel, reason))
            continue
        owners[target] = rel
        if not overwrite and writer.is_done(rel):
            summary.skipped += 1
        else:
            todo.append(rel)
    if summary.skipped:
        logger.info(
            "auto_annotate: %d of %d images already done in %s (overwrite=True redoes them)",
            summary.skipped,
            len(images),
            writer.out_dir,
        )
    return todo


def _predictor(sam, precision):
    """The low-level predictor of a SAM (v1) or SAM 2 module."""
    if isinstance(sam, Sam2):
        from ..predict.sam2_predictor import Sam2Predictor

        return Sam2Predictor(sam, precision=precision)
    return SamPredictor(sam, precision=precision)


def _load_sam(sam_model: Any, device: str | torch.device | None):
    from ..models import Sam
    from ..zoo.checkpoints import build_sam

    if isinstance(getattr(sam_model, "model", None), (Sam, Sam2)):  # a samkit.SAM
        sam = sam_model.model
    elif isinstance(sam_model, (Sam, Sam2)):
        sam = sam_model
    elif isinstance(sam_model, (str, os.PathLike)):
        sam = build_sam(sam_model)[0]
        return sam.to(resolve_device(device or "auto")).eval()
    else:
        raise SamkitError(
            f"sam_model must be a checkpoint path or name, a SAM or a Sam, got {type(sam_model).__name__}"
        )
    if device:  # move a given model only when asked to
        sam.to(resolve_device(device or "auto"))
    return sam.eval()
