"""The annotation store of ``samkit serve``: accepted objects, saved at once as COCO and YOLO.

Layout of the output folder (the formats :func:`samkit.auto_annotate` writes):

- ``annotations.json``: one COCO instances file, masks as compressed RLE, assembled from the
  per-image records after every change;
- ``<image rel path>.txt``: YOLO segmentation labels (``class x1 y1 x2 y2 ...``, normalized),
  plus ``classes.txt`` and ``data.yaml``;
- ``.samkit_serve/objects/<image rel path>.json``: the per-image record (image size, revision,
  objects with their id, label and RLE) from which both are made; reopening the folder reads it.

Every file is written to a temporary file and renamed into place, so a crash or a failed request
never leaves a half-written file. All changes go through one lock, so two browser tabs adding
objects to the same image both keep theirs; each image has a revision number that grows with
every change. Paths come only from the image listing (never from request data) and every target
is checked to resolve inside the output folder and not to be a link.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..annotate.writers import (
    CocoWriter,
    SegmentedObject,
    YoloWriter,
    atomic_write,
    coco_annotation,
)
from ..errors import SamkitError
from ..ops import rle_to_mask

SERVE_DIR = ".samkit_serve"
MAX_LABEL_CHARS = 100
_OBJ_ID = re.compile(r"[0-9a-f]{12}")


class StoreError(SamkitError):
    """A request the store refuses (unknown object, bad label); ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_output_dir(output: Path) -> Path:
    """Resolve the output folder (created if missing); refuse a link."""
    output = Path(output).expanduser()
    if output.is_symlink():
        raise SamkitError(f"output folder {output} is a symbolic link: give a real folder")
    output.mkdir(parents=True, exist_ok=True)
    return output.resolve()


def check_label(label: Any) -> str:
    """A class label: non-empty text of at most ``MAX_LABEL_CHARS`` printable characters."""
    if not isinstance(label, str) or not label.strip():
        raise StoreError("label must be a non-empty string (the object's class name)", 422)
    label = label.strip()
    if len(label) > MAX_LABEL_CHARS or not label.isprintable():
        raise StoreError(
            f"label must be at most {MAX_LABEL_CHARS} printable characters, got {label[:40]!r}",
            422,
        )
    return label


class AnnotationStore:
    """Accepted objects of the images of one folder, kept in memory and on disk.

    Args:
        images_root: the image folder. images: the image files relative to it (the listing).
        output: the output folder (must not be a link; created if missing).
        names: the initial class names (class id = index); new labels are appended.
    """

    def __init__(
        self,
        images_root: Path,
        images: list[PurePosixPath],
        output: Path,
        names: list[str] | None = None,
    ) -> None:
        self.images_root = Path(images_root)
        self.images = list(images)
        self.out = check_output_dir(output)
        self.work = self.out / SERVE_DIR
        self.tmp = self.work / "tmp"
        self._lock = threading.RLock()
        self._coco = CocoWriter(self.out, "rle")
        self._coco.work_dir, self._coco.tmp_dir = self.work, self.tmp
        self._coco.parts_dir = self.work / "objects"
        self._yolo = YoloWriter(self.out, "merge")
        self._yolo.work_dir, self._yolo.tmp_dir = self.work, self.tmp
        for d in (self.work, self.tmp, self._coco.parts_dir):
            self._check_target(d)
            d.mkdir(parents=True, exist_ok=True)
        self._take_folder_lock()
        for stale in self.tmp.iterdir():
            stale.unlink(missing_ok=True)
        self.names: list[str] = []
        self.records: dict[int, dict[str, Any]] = {}
        self.problems: list[str] = []
        self._load(names or [])

    # -- reading ----------------------------------------------------------------------------
    def _load(self, names: list[str]) -> None:
        saved = self.work / "classes.json"
        stored: list[str] = []
        if saved.is_file():
            try:
                stored = [str(n) for n in json.loads(saved.read_text(encoding="utf-8"))]
            except (OSError, ValueError) as exc:
                self.problems.append(f"{saved}: unreadable ({exc}); class list rebuilt")
        self.names = list(names) + [n for n in stored if n not in names]
        for index, rel in enumerate(self.images):
            path = self._coco.result_path(rel)
            if not path.is_file():
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                record.setdefault("revision", 0)
                for obj in record["objects"]:
                    obj.setdefault("label", self._name(obj["category_id"]))
                    self._class_id(obj["label"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.problems.append(f"{path}: unreadable record of {rel} ({exc}); left as is")
                continue
            self.records[index] = record

    def _name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else f"class{class_id}"

    def _class_id(self, label: str) -> int:
        if label not in self.names:
            self.names.append(label)
        return self.names.index(label)

    def revision(self, index: int) -> int:
        record = self.records.get(index)
        return int(record["revision"]) if record else 0

    def objects(self, index: int) -> list[dict[str, Any]]:
        """The objects of image ``index`` (copies): id, label, category_id, segmentation, ..."""
        with self._lock:
            record = self.records.get(index)
            return [dict(o) for o in record["objects"]] if record else []

    def counts(self) -> dict[int, int]:
        with self._lock:
            return {i: len(r["objects"]) for i, r in self.records.items()}

    # -- changes ----------------------------------------------------------------------------
    def add(
        self,
        index: int,
        size: tuple[int, int],
        mask: np.ndarray,
        label: str,
        score: float = 1.0,
    ) -> dict[str, Any]:
        """Save an ``H x W`` bool mask as a new object of image ``index``; returns the object."""
        label = check_label(label)
        if mask.shape != tuple(size):
            raise StoreError(
                f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {size[1]}x{size[0]}"
            )
        with self._lock:
            names = list(self.names)
            class_id = self._class_id(label)
            ann = coco_annotation(SegmentedObject(class_id, 1.0, float(score), mask), "rle")
            if ann is None:
                raise StoreError("the mask is empty: nothing to save", 422)
            obj = {"id": uuid.uuid4().hex[:12], "label": label, **ann}
            record = self.records.get(index) or {
                "file_name": self.images[index].as_posix(),
                "height": int(size[0]),
                "width": int(size[1]),
                "revision": 0,
                "objects": [],
            }
            new = {**record, "objects": [*record["objects"], obj]}
            self._commit(index, new, names)
            return dict(obj)

    def delete(self, index: int, obj_id: str) -> None:
        with self._lock:
            record, pos = self._find(index, obj_id)
            objects = [o for k, o in enumerate(record["objects"]) if k != pos]
            self._commit(index, {**record, "objects": objects})

    def relabel(self, index: int, obj_id: str, label: str) -> dict[str, Any]:
        label = check_label(label)
        with self._lock:
            record, pos = self._find(index, obj_id)
            names = list(self.names)
            obj = {**record["objects"][pos], "label": label, "category_id": self._class_id(label)}
            objects = list(record["objects"])
            objects[pos] = obj
            self._commit(index, {**record, "objects": objects}, names)
            return dict(obj)

    def _find(self, index: int, obj_id: str) -> tuple[dict[str, Any], int]:
        record = self.records.get(index)
        if isinstance(obj_id, str) and _OBJ_ID.fullmatch(obj_id) and record:
            for k, o in enumerate(record["objects"]):
                if o["id"] == obj_id:
                    return record, k
        raise StoreError(f"unknown object id {str(obj_id)[:40]!r} on image {index}", 404)

    def _commit(self, index: int, record: dict[str, Any], names: list[str] | None = None) -> None:
        """Write the record and the label files, then make it the current one.

        When a write fails (disk full, a refused link), the previous state is written back and
        the error raised: memory and disk stay as they were before the request."""
        record["revision"] = int(record["revision"]) + 1
        old = self.records.get(index)
        try:
            self._write_image(index, record)
            self.records[index] = record
            self._write_dataset()
        except BaseException:
            # put the previous state back on disk (each file is replaced atomically)
            if names is not None:
                self.names = names
            if old is not None:
                self.records[index] = old
                self._write_image(index, old)
            else:
                self.records.pop(index, None)
                for path in (
                    self._coco.result_path(self.images[index]),
                    self._yolo.result_path(self.images[index]),
                ):
                    if not path.is_symlink():  # a planted link is left alone
                        path.unlink(missing_ok=True)
            self._write_dataset()
            raise

    def _write_image(self, index: int, record: dict[str, Any]) -> None:
        rel = self.images[index]
        self._write_record(rel, record)
        size = (record["height"], record["width"])
        objects = [
            SegmentedObject(o["category_id"], 1.0, 1.0, rle_to_mask(o["segmentation"]))
            for o in record["objects"]
        ]
        self._check_target(self._yolo.result_path(rel))
        self._yolo.write(rel, size, objects)

    def _write_record(self, rel: PurePosixPath, record: dict[str, Any]) -> None:
        path = self._coco.result_path(rel)
        self._check_target(path)
        atomic_write(path, json.dumps(record), self.tmp)

    def _write_dataset(self) -> None:
        names = dict(enumerate(self.names))
        for name in ("classes.json", "../classes.txt", "../data.yaml", "../annotations.json"):
            self._check_target(self.work / name)
        atomic_write(self.work / "classes.json", json.dumps(self.names), self.tmp)
        self._yolo.finish(self.images_root, names)
        self._coco.finish(self.images, names, None)

    # -- safety -----------------------------------------------------------------------------
    def _check_target(self, path: Path) -> None:
        """Refuse to write ``path`` unless it and its folders stay inside the output folder."""
        path = Path(os.path.normpath(path))
        try:
            rel = path.relative_to(self.out)
        except ValueError:
            raise StoreError(f"refusing to write {path}: outside the output folder", 500) from None
        here = self.out
        for part in rel.parts:
            here = here / part
            if here.is_symlink():
                raise StoreError(f"refusing to write through the link {here}", 500)
        if not path.resolve().is_relative_to(self.out):
            raise StoreError(f"refusing to write {path}: resolves outside {self.out}", 500)

    def _take_folder_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        fd = os.open(self.work / "lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SamkitError(
                f"another samkit serve is writing to {self.out}: stop it or choose another output"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)
            self._lock_fd = None
