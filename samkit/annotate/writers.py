"""Writers of auto-annotation results: YOLO segmentation labels or one COCO JSON, atomically.

Every file is written to a temporary file in the work folder ``<output>/.samkit_annotate/tmp``
and renamed into place, so a killed run never leaves a partial label file; an image is "done"
when its result file exists. YOLO: the result is the label file itself. COCO: a per-image JSON
in ``<output>/.samkit_annotate/coco-<rle|polygon>/`` (kept, so a rerun over a grown folder only
does the new images); the final JSON is assembled from them at the end of every run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from ..errors import OutputError, SamkitError
from ..ops import encode_coco_rle, mask_to_polygons, merge_polygons, normalize_polygon
from ..safeio import safe_subdir, shorten_component, write_atomic
from .labels import data_yaml_text, names_list

logger = logging.getLogger("samkit.annotate")

WORK_DIR = ".samkit_annotate"
COCO_FILE = "annotations.json"


@dataclass
class SegmentedObject:
    """One box's result: output class id, detector score, SAM's predicted IoU and its
    ``H x W`` bool mask (None when the box was not segmented, e.g. empty after clipping)."""

    class_id: int
    score: float
    predicted_iou: float
    mask: np.ndarray | None


def atomic_write(path: Path, data: str, tmp_dir: Path, root: Path | None = None) -> None:
    """Write ``data`` (UTF-8) to ``path`` via a synced temporary file in ``tmp_dir`` + rename.

    ``root`` (the output folder): folders below it that are symbolic links are refused. An
    ``OSError`` (read-only folder, full disk) raises :class:`OutputError` naming ``path``.
    """
    write_atomic(path, data, root=root, tmp_dir=tmp_dir)


#: Files the writers replace, and how to recognize one written by samkit (else it is the user's).
_OURS = {
    "data.yaml": b"# Written by samkit.auto_annotate",
    COCO_FILE: b'{"info": {"description": "SAM masks for box prompts, made by samkit',
}


class _Writer:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.work_dir = out_dir / WORK_DIR
        self.tmp_dir = self.work_dir / "tmp"
        self._lock_fd: int | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_lock_fd"] = None  # a copy on a Ray worker: the driver holds the folder lock
        return state

    def open(self) -> None:
        """Create the folders (refusing symbolic links in the output folder: a pre-placed link
        must not redirect writes or deletions), take the folder lock and delete temporary files
        of killed runs."""
        safe_subdir(self.out_dir, self.tmp_dir.relative_to(self.out_dir))
        self._lock()
        for stale in self.tmp_dir.iterdir():
            if stale.is_file() and not stale.is_symlink():
                stale.unlink(missing_ok=True)

    def close(self, keep_work_dir: bool) -> None:
        linked = self.work_dir.is_symlink() or self.tmp_dir.is_symlink()
        if linked:  # replaced by a link while running: never delete through it
            pass
        elif keep_work_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def check_user_file(self, name: str, new_text: str | None, overwrite: bool) -> None:
        """Refuse to replace ``<output>/<name>`` when it is not a file samkit wrote (or the same
        text), unless ``overwrite``; a link or folder there is always refused."""
        path = self.out_dir / name
        if not os.path.lexists(path):
            return
        if path.is_symlink() or not path.is_file():
            raise OutputError(
                f"{path} exists and is not a regular file (a link or folder); remove it or "
                "choose another output_dir"
            )
        if overwrite:
            return
        with open(path, "rb") as f:
            head = f.read(200)
        if name in _OURS and head.startswith(_OURS[name]):
            return
        if new_text is not None and path.read_bytes() == new_text.encode("utf-8"):
            return
        raise OutputError(
            f"{path} already exists and was not written by samkit; auto_annotate would replace "
            "it. Pass overwrite=True to replace it, or choose another output_dir"
        )

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        fd = os.open(self.work_dir / "lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SamkitError(
                f"another auto_annotate run is writing to {self.out_dir}; wait for it to end or "
                "choose another output_dir"
            ) from None
        self._lock_fd = fd


class YoloWriter(_Writer):
    """``<output>/<image rel path>.txt``: one line ``class x1 y1 x2 y2 ...`` (normalized) per
    object. ``parts``: "merge" joins a multi-part mask into one polygon (like Ultralytics),
    "split" writes one line per part, "largest" keeps the largest part."""

    def __init__(self, out_dir: Path, parts: str = "merge") -> None:
        super().__init__(out_dir)
        self.parts = parts

    def result_path(self, rel: PurePosixPath) -> Path:
        return self.out_dir / rel.with_suffix(".txt")

    def is_done(self, rel: PurePosixPath) -> bool:
        return self.result_path(rel).is_file()

    def write(
        self, rel: PurePosixPath, size: tuple[int, int], objects: Iterable[SegmentedObject]
    ) -> tuple[int, int]:
        """Write the label file of one image; returns ``(objects written, objects dropped)``."""
        lines: list[str] = []
        written = dropped = 0
        for obj in objects:
            new = yolo_lines(obj, size, self.parts)
            written += bool(new)
            dropped += not new
            lines += new
        text = "".join(line + "\n" for line in lines)
        atomic_write(self.result_path(rel), text, self.tmp_dir, self.out_dir)
        return written, dropped

    def finish(self, images_root: Path, names: dict[int, str] | None) -> None:
        """Write ``classes.txt`` and ``data.yaml`` when the class names are known."""
        if not names:  # auto_annotate reports it (AnnotateSummary.notes)
            return
        text = names_text(names)
        atomic_write(self.out_dir / "classes.txt", text, self.tmp_dir, self.out_dir)
        yaml_text = data_yaml_text(images_root, names)
        atomic_write(self.out_dir / "data.yaml", yaml_text, self.tmp_dir, self.out_dir)


def names_text(names: dict[int, str]) -> str:
    """The text of ``classes.txt``: one name per line, line index = class id."""
    return "".join(n + "\n" for n in names_list(names))


def yolo_lines(obj: SegmentedObject, size: tuple[int, int], parts: str = "merge") -> list[str]:
    """Label lines of one object; empty when its mask has no polygon of 3 or more points."""
    if obj.mask is None:
        return []
    polys = mask_to_polygons(obj.mask)
    if not polys:
        return []
    if parts == "merge":
        polys = [merge_polygons(polys)]
    elif parts == "largest":
        polys = [max(polys, key=lambda p: cv2.contourArea(p))]
    h, w = size
    out = []
    for poly in polys:
        xyn = normalize_polygon(poly, h, w).reshape(-1)
        out.append(f"{obj.class_id} " + " ".join(f"{v:.6f}" for v in xyn))
    return out


class CocoWriter(_Writer):
    """One COCO JSON ``<output>/annotations.json``; ``segmentation`` "rle" (compressed COCO RLE,
    exact) or "polygon" (outer contours, one polygon per part)."""

    def __init__(self, out_dir: Path, segmentation: str = "rle") -> None:
        super().__init__(out_dir)
        self.segmentation = segmentation
        self.parts_dir = self.work_dir / f"coco-{segmentation}"
        self.file = out_dir / COCO_FILE

    def result_path(self, rel: PurePosixPath) -> Path:
        # each component shortened with a hash when long: "<255-byte name>.json" is too long
        parts = [shorten_component(p) for p in rel.parts[:-1]]
        return self.parts_dir.joinpath(*parts, shorten_component(rel.name + ".json"))

    def is_done(self, rel: PurePosixPath) -> bool:
        return self.result_path(rel).is_file()

    def write(
        self, rel: PurePosixPath, size: tuple[int, int], objects: Iterable[SegmentedObject]
    ) -> tuple[int, int]:
        """Write the per-image partial result; returns ``(objects written, objects dropped)``."""
        anns = []
        dropped = 0
        for obj in objects:
            ann = coco_annotation(obj, self.segmentation)
            if ann is None:
                dropped += 1
            else:
                anns.append(ann)
        record = {"file_name": rel.as_posix(), "height": size[0], "width": size[1], "objects": anns}
        atomic_write(self.result_path(rel), json.dumps(record), self.tmp_dir, self.out_dir)
        return len(anns), dropped

    def finish(
        self,
        images: list[PurePosixPath],
        names: dict[int, str] | None,
        image_ids: dict[PurePosixPath, Any] | None,
    ) -> None:
        """Assemble the COCO JSON from the partial results of all images in ``images``."""
        coco_images, annotations = [], []
        seen: set[int] = set()
        image_ids = image_ids or {}
        # Images without an input id are numbered after the largest input id, in file order.
        base = max((v for v in image_ids.values() if isinstance(v, int)), default=0)
        for index, rel in enumerate(images):
            path = self.result_path(rel)
            if not path.is_file():
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                logger.warning("%s: unreadable partial result %s (%s), left out", rel, path, exc)
                continue
            image_id = image_ids.get(rel, base + index + 1)
            coco_images.append(
                {
                    "id": image_id,
                    "file_name": rel.as_posix(),
                    "width": record["width"],
                    "height": record["height"],
                }
            )
            for obj in record["objects"]:
                seen.add(obj["category_id"])
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
        cat_names = names if names else {cid: str(cid) for cid in seen}
        categories = [
            {"id": cid, "name": cat_names.get(cid, str(cid))} for cid in sorted(cat_names)
        ]
        dataset = {
            "info": {"description": "SAM masks for box prompts, made by samkit.auto_annotate"},
            "images": coco_images,
            "annotations": annotations,
            "categories": categories,
        }
        atomic_write(self.file, json.dumps(dataset), self.tmp_dir, self.out_dir)


def coco_annotation(obj: SegmentedObject, segmentation: str = "rle") -> dict | None:
    """COCO annotation fields of one object (no ids); None when the mask is empty (or, for
    polygons, has no polygon of 3 or more points). ``bbox`` is the mask's XYWH box and
    ``area`` its pixel count, as pycocotools' ``toBbox`` and ``area`` compute them."""
    mask = obj.mask
    if mask is None:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    if segmentation == "rle":
        seg: Any = encode_coco_rle(mask)
    else:
        polys = mask_to_polygons(mask)
        if not polys:
            return None
        seg = [[float(v) for v in p.reshape(-1)] for p in polys]
    x1, y1 = int(cols[0]), int(rows[0])
    bbox = [float(x1), float(y1), float(cols[-1] - x1 + 1), float(rows[-1] - y1 + 1)]
    return {
        "category_id": obj.class_id,
        "segmentation": seg,
        "area": int(mask.sum()),
        "bbox": bbox,
        "iscrowd": 0,
        "score": round(float(obj.score), 6),
        "predicted_iou": round(float(obj.predicted_iou), 6),
    }
