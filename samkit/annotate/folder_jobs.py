"""Folder jobs: segment everything in every image, or precompute every image's embedding.

``segment_folder(data, ...)`` writes ``<output>/<image path>.json`` per image in the layout of
SA-1B's per-image files: ``{"image": {file_name, height, width}, "annotations": [{id,
segmentation (COCO RLE), area, bbox (XYWH), predicted_iou, point_coords, stability_score,
crop_box (XYWH)}]}``, the records of Meta's automatic mask generator (SAM or SAM 2).
``embed_folder(data, ...)`` writes ``<output>/<image path>.npz`` per image: ``features``
(``1 x C x h x w`` float32, what ``SamPredictor.set_embedding`` and the ONNX decoders take),
``original_size`` and ``input_size`` (``[H, W]``), and SAM 2's ``high_res_feats_0/1``;
:func:`load_embedding` reads one back.

Both are resumable (an image whose result exists is skipped), write each result atomically,
isolate a bad image (reported with its path and reason; the others are written), show
progress, and run here (``engine="local"``) or as a Ray Data pipeline (``engine="ray"``) with
the same per-image step and the same bytes (:mod:`samkit.annotate.jobs`). ``data`` and
``output_dir`` are local paths or object storage URIs (:mod:`samkit.data.storage`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar

import numpy as np
import torch

from ..data.storage import LocalFolder, ObjectFolder, is_uri, open_folder
from ..errors import SamkitError
from ..models.sam2 import Sam2
from ..predict.embedding import Embedding
from .jobs import FolderSummary, plan, record_failure, run_job
from .run import _choice, _load_sam, _predictor
from .writers import _Writer

__all__ = [
    "EVERYTHING_PARAMS",
    "embed_folder",
    "embedding_bytes",
    "load_embedding",
    "segment_folder",
]

#: The generator settings ``segment_folder`` takes (Meta's names; defaults: the model family's).
EVERYTHING_PARAMS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "crop_overlap_ratio",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same arrays give the same bytes


def result_name(rel: PurePosixPath, suffix: str) -> str:
    """The result file of image ``rel``: ``a/b.jpg`` -> ``a/b.json`` (``suffix``)."""
    return rel.with_suffix(suffix).as_posix()


@dataclass
class EverythingJob:
    """segment_folder's per-image job: read, generate the records, write the JSON."""

    inputs: LocalFolder | ObjectFolder
    outputs: LocalFolder | ObjectFolder
    sam_model: Any
    precision: str
    device: str
    params: dict[str, Any] = field(default_factory=dict)
    counts: ClassVar[tuple[str, ...]] = ("masks",)

    def load(self):
        sam = _load_sam(self.sam_model, self.device)
        if isinstance(sam, Sam2):
            from ..everything.sam2 import Sam2AutomaticMaskGenerator

            gen: Any = Sam2AutomaticMaskGenerator(
                sam, precision=self.precision, output_mode="coco_rle", **self.params
            )
        else:
            from ..everything.automatic import SamAutomaticMaskGenerator

            gen = SamAutomaticMaskGenerator(
                sam, output_mode="coco_rle", precision=self.precision, **self.params
            )

        def step(rel: PurePosixPath) -> tuple[int]:
            image = self.inputs.read_image(rel)
            records = gen.generate(image)
            data = everything_json(rel, image.shape[:2], records)
            self.outputs.write(result_name(rel, ".json"), data)
            return (len(records),)

        return step


def everything_json(rel: PurePosixPath, size: tuple[int, int], records: list[dict]) -> bytes:
    """One image's SA-1B-style JSON (UTF-8): the image entry and its numbered annotations."""
    image = {"file_name": rel.as_posix(), "height": int(size[0]), "width": int(size[1])}
    anns = [{"id": i, **r} for i, r in enumerate(records, 1)]
    return json.dumps({"image": image, "annotations": anns}).encode("utf-8")


@dataclass
class EmbedJob:
    """embed_folder's per-image job: read, encode, write the ``.npz``."""

    inputs: LocalFolder | ObjectFolder
    outputs: LocalFolder | ObjectFolder
    sam_model: Any
    precision: str
    device: str
    counts: ClassVar[tuple[str, ...]] = ("written",)

    def load(self):
        predictor = _predictor(_load_sam(self.sam_model, self.device), self.precision)

        def step(rel: PurePosixPath) -> tuple[int]:
            image = self.inputs.read_image(rel)
            emb = predictor.encode_images([image], batch_size=1)[0]
            self.outputs.write(result_name(rel, ".npz"), embedding_bytes(emb))
            return (1,)

        return step


def embedding_bytes(emb: Embedding) -> bytes:
    """An :class:`Embedding` as ``.npz`` bytes (stored, fixed member times: deterministic).

    Members: ``features`` ``1 x C x h x w`` float32, ``original_size`` ``[H, W]`` and
    ``input_size`` ``[h, w]`` int64, and ``high_res_feats_<i>`` (SAM 2) float32."""
    arrays = {
        "features": emb.features,
        "original_size": np.asarray(emb.original_size, dtype=np.int64),
        "input_size": np.asarray(emb.input_size, dtype=np.int64),
    }
    for i, t in enumerate(emb.high_res_feats or ()):
        arrays[f"high_res_feats_{i}"] = t
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, value in arrays.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().to("cpu", torch.float32).numpy()
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(value), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), member.getvalue())
    return buf.getvalue()


def load_embedding(source: str | os.PathLike | bytes | BinaryIO) -> Embedding:
    """An embedding written by :func:`embed_folder` (a path, the bytes, or a binary file),
    ready for ``SamPredictor.set_embedding`` / ``Sam2Predictor.set_embedding``."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with np.load(source, allow_pickle=False) as z:
            features = torch.from_numpy(np.array(z["features"], dtype=np.float32))
            original = tuple(int(v) for v in z["original_size"])
            inp = tuple(int(v) for v in z["input_size"])
            n = sum(1 for k in z.files if k.startswith("high_res_feats_"))
            high = tuple(torch.from_numpy(np.array(z[f"high_res_feats_{i}"])) for i in range(n))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        name = source if isinstance(source, (str, os.PathLike)) else "embedding"
        raise SamkitError(f"{name}: not an embedding file of samkit.embed_folder ({exc})") from None
    return Embedding(features, original, inp, high or None)  # type: ignore[arg-type]


# -- the drivers -----------------------------------------------------------------------------
def segment_folder(
    data: str | os.PathLike,
    sam_model: Any = "sam_b.pt",
    output_dir: str | os.PathLike | None = None,
    *,
    recursive: bool = False,
    overwrite: bool = False,
    precision: str = "fp32",
    device: str = "",
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    ray_gpus: float = 0.0,
    ray_threads: int = 1,
    **params: Any,
) -> FolderSummary:
    """Segment everything in every image of ``data``; one SA-1B-style JSON per image.

    Args:
        data: a folder of images (``recursive`` for subfolders), one image file, or an object
            storage URI of a folder (``s3://bucket/images``, ``gs://...``: pyarrow, extra ``ray``).
        sam_model: a checkpoint path / official name / variant name, or a ``SAM`` / ``Sam``.
        output_dir: where ``<image path>.json`` go (a path or URI); default
            ``<data>_everything`` next to a local ``data``.
        overwrite: redo images that have a result (default: skip them, i.e. resume).
        precision: "fp32" (exact), "bf16" or "auto"; device: "" = CUDA when available.
        engine: "local" or "ray" (see :func:`samkit.auto_annotate` for the ``ray_*`` options).
        **params: generator settings, Meta's names (:data:`EVERYTHING_PARAMS`), e.g.
            ``points_per_side=16``; unset ones keep the model family's defaults.

    Returns:
        A :class:`~samkit.annotate.jobs.FolderSummary` (``masks``, ``failures``...).
    """
    unknown = sorted(set(params) - set(EVERYTHING_PARAMS))
    if unknown:
        raise SamkitError(
            f"segment_folder: unknown setting(s) {', '.join(unknown)}; it takes "
            f"{', '.join(EVERYTHING_PARAMS)}"
        )

    def job(inputs, outputs, dev):
        return EverythingJob(inputs, outputs, sam_model, precision, dev, dict(params))

    return _run_folder(
        "everything", ".json", job, data, output_dir, recursive, overwrite, device, progress,
        engine, (ray_address, ray_actors, ray_gpus, ray_threads),
    )  # fmt: skip


def embed_folder(
    data: str | os.PathLike,
    sam_model: Any = "sam_b.pt",
    output_dir: str | os.PathLike | None = None,
    *,
    recursive: bool = False,
    overwrite: bool = False,
    precision: str = "fp32",
    device: str = "",
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    ray_gpus: float = 0.0,
    ray_threads: int = 1,
) -> FolderSummary:
    """Precompute the image embedding of every image of ``data``: one ``.npz`` per image
    (:func:`load_embedding`); arguments as :func:`segment_folder` (default output
    ``<data>_embeddings``)."""

    def job(inputs, outputs, dev):
        return EmbedJob(inputs, outputs, sam_model, precision, dev)

    return _run_folder(
        "embeddings", ".npz", job, data, output_dir, recursive, overwrite, device, progress,
        engine, (ray_address, ray_actors, ray_gpus, ray_threads),
    )  # fmt: skip


def _run_folder(
    name, suffix, make_job, data, output_dir, recursive, overwrite, device, progress, engine, ray
) -> FolderSummary:
    start = time.perf_counter()
    _choice("engine", engine, ("local", "ray"))
    inputs, images, outputs = _open(name, data, output_dir, recursive)
    if not images:
        raise SamkitError(
            f"no images found in {inputs.where()} (looked for .jpg, .png, .bmp, .tif, .webp...)"
        )
    opts = None
    if engine == "ray":
        from .ray_engine import RayOptions

        opts = RayOptions(*ray)
        device = opts.device(device)
    summary = FolderSummary(job=name, output_dir=outputs.where(), images=len(images))
    lock = _Writer(outputs.path) if isinstance(outputs, LocalFolder) else None
    if lock is not None:
        lock.open()  # the folder lock; staged files go to its tmp folder
        outputs.tmp_dir = lock.tmp_dir
    try:
        done = outputs.existing(suffix)
        todo = plan(
            images,
            lambda rel: result_name(rel, suffix),
            lambda rel: result_name(rel, suffix) in done,
            overwrite,
            summary,
            inputs.where,
        )
        rows = run_job(todo, make_job(inputs, outputs, device), engine, opts, name, progress)
        for row in rows:
            if row.error:
                record_failure(summary, inputs.where(row.rel), row.error)
                continue
            summary.done += 1
            if name == "everything":
                summary.masks += row.counts[0]
                summary.empty += row.counts[0] == 0
    finally:
        if lock is not None:
            lock.close(keep_work_dir=True)
            with contextlib.suppress(OSError):  # only the lock file left: leave no trace
                if [p.name for p in lock.work_dir.iterdir()] == ["lock"]:
                    (lock.work_dir / "lock").unlink()
                    lock.work_dir.rmdir()
    summary.seconds = time.perf_counter() - start
    return summary


def _open(name: str, data, output_dir, recursive: bool):
    """``(input folder, relative image paths, output folder)``; a local file is a folder of one."""
    if output_dir is None and is_uri(data):
        raise SamkitError(f"give output_dir= (a path or URI) for the {name}: data is a URI")
    if is_uri(data) and not str(data).lower().startswith("file://"):
        inputs: LocalFolder | ObjectFolder = open_folder(data)
        single = None
    else:
        path = Path(str(data)[7:] if str(data).lower().startswith("file://") else data)
        path = path.expanduser()
        single = path.name if path.is_file() else None
        inputs = LocalFolder(path.parent if single else path)
    if output_dir is None:
        base = inputs.path if single is None else inputs.path / Path(single).stem
        output_dir = base.resolve().parent / f"{base.resolve().name}_{name}"
    outputs = open_folder(output_dir)
    if isinstance(outputs, LocalFolder) and outputs.path.exists() and not outputs.path.is_dir():
        raise SamkitError(f"output_dir {outputs.path} exists and is not a folder")
    if single is not None:
        return inputs, [PurePosixPath(single)], outputs
    return inputs, inputs.list_images(recursive, exclude=outputs), outputs
