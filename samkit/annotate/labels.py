"""Existing detection labels as box sources, and class-name files (classes.txt, data.yaml).

Two label inputs turn a detection dataset into SAM box prompts without running a detector:

* a YOLO label folder: one ``<image stem>.txt`` per image (same relative path as the image),
  lines ``class cx cy w h`` normalized to 0..1 (an optional 6th value is a confidence; lines with
  3+ normalized ``x y`` pairs are polygons and give their bounding box);
* a COCO JSON: ``images`` (``file_name``, ``width``, ``height``), ``annotations`` (``bbox``
  XYWH pixels, ``category_id``, optional ``score``; ``iscrowd`` regions are skipped) and
  ``categories``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DatasetError, DependencyError
from .detectors import MAX_CLASS_ID, BoxSource, Detections, normalize_names

logger = logging.getLogger("samkit.annotate")

_COORD_TOLERANCE = 0.01  # normalized coordinates may overshoot 0..1 by rounding
MAX_JSON_BYTES = 2 * 2**30  # a COCO file larger than this is refused before parsing


# -- class names -------------------------------------------------------------------------------
def read_names_file(path: str | os.PathLike) -> dict[int, str]:
    """Class names from a ``classes.txt`` (one name per line, line index = id) or a YAML file
    with a ``names`` list or ``{id: name}`` mapping (Ultralytics data.yaml; needs pyyaml)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read class names from {path}: {exc}") from exc
    if path.suffix.lower() not in (".yaml", ".yml"):
        return {i: line.strip() for i, line in enumerate(text.splitlines()) if line.strip()}
    try:
        import yaml
    except ImportError as exc:
        raise DependencyError(f"reading {path} needs pyyaml: pip install pyyaml") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"{path} has no 'names' entry")
    return normalize_names(data["names"]) or {}


def find_names(label_dir: Path) -> dict[int, str] | None:
    """Names from ``classes.txt``, ``data.yaml`` or ``dataset.yaml`` in or above a label folder."""
    for folder in (label_dir, label_dir.parent):
        for name in ("classes.txt", "data.yaml", "dataset.yaml"):
            path = folder / name
            if not path.is_file():
                continue
            try:
                names = read_names_file(path)
            except (DatasetError, DependencyError) as exc:
                logger.warning("ignoring class names in %s: %s", path, exc)
                continue
            if names:
                return names
    return None


def names_list(names: dict[int, str]) -> list[str]:
    """Names for ids 0..max as a list; ids without a name get ``class<id>``."""
    return [names.get(i, f"class{i}") for i in range(max(names) + 1)] if names else []


def data_yaml_text(images_root: Path, names: dict[int, str]) -> str:
    """An Ultralytics dataset YAML: ``path`` (dataset root), ``train``/``val`` images, ``names``.

    Written by hand (JSON-quoted strings are valid YAML) so the bytes do not depend on whether
    pyyaml is installed.
    """
    root = images_root.resolve()
    lines = [
        "# Written by samkit.auto_annotate. Ultralytics finds an image's labels by replacing the",
        "# last /images/ in its path by /labels/: keep the label folder there to train on it.",
        f"path: {json.dumps(root.parent.as_posix(), ensure_ascii=False)}",
        f"train: {json.dumps(root.name, ensure_ascii=False)}",
        f"val: {json.dumps(root.name, ensure_ascii=False)}",
        "names:",
    ]
    lines += [
        f"  {i}: {json.dumps(n, ensure_ascii=False)}" for i, n in enumerate(names_list(names))
    ]
    return "\n".join(lines) + "\n"


# -- YOLO detection labels -----------------------------------------------------------------------
class YoloLabelBoxes(BoxSource):
    """Boxes from a YOLO label folder; a missing label file means an image without objects."""

    def __init__(self, label_dir: str | os.PathLike, images: list[PurePosixPath]) -> None:
        self.label_dir = Path(label_dir)
        if not self.label_dir.is_dir():
            raise DatasetError(f"label folder not found: {self.label_dir}")
        if images and not any(self.label_path(rel).is_file() for rel in images):
            raise DatasetError(
                f"no label file in {self.label_dir} matches an image (expected e.g. "
                f"{self.label_path(images[0])}); give the folder holding the images' .txt files"
            )
        self.names = find_names(self.label_dir)

    def label_path(self, rel: PurePosixPath) -> Path:
        return self.label_dir / rel.with_suffix(".txt")

    def __call__(self, rel: PurePosixPath, image: np.ndarray) -> Detections:
        path = self.label_path(rel)
        if not os.path.lexists(path):
            return Detections.empty()
        if not path.is_file():
            raise DatasetError(
                f"{path} is not a label file (a folder or special file has the label file's "
                "name); rename it or remove it"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read label file {path}: {exc}") from exc
        h, w = image.shape[:2]
        boxes, classes, scores = [], [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            box, cls, score = _parse_yolo_line(line, f"{path}:{lineno}")
            boxes.append(box * np.array([w, h, w, h]))
            classes.append(cls)
            scores.append(score)
        if not boxes:
            return Detections.empty()
        return Detections.from_arrays(np.stack(boxes), classes, scores)


def _parse_yolo_line(line: str, where: str) -> tuple[np.ndarray, int, float]:
    """``(normalized XYXY box, class, score)`` of one label line."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        raise DatasetError(f"{where}: expected numbers 'class cx cy w h', got {line!r}") from None
    if not values:
        raise DatasetError(f"{where}: an empty label line")
    cls, coords = values[0], values[1:]
    if not math.isfinite(cls) or cls < 0 or cls != int(cls) or cls > MAX_CLASS_ID:
        raise DatasetError(
            f"{where}: the class must be a non-negative integer up to {MAX_CLASS_ID}, got {line.split()[0]}"
        )
    score = 1.0
    if len(coords) in (4, 5):
        cx, cy, bw, bh = coords[:4]
        if len(coords) == 5:
            score = coords[4]
            if not math.isfinite(score):
                raise DatasetError(f"{where}: the confidence must be a finite number, got {score}")
        if bw < 0 or bh < 0:
            raise DatasetError(f"{where}: negative box width or height in {line!r}")
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        check = np.array(coords[:4])
    elif len(coords) >= 6 and len(coords) % 2 == 0:
        xy = np.array(coords).reshape(-1, 2)
        box = np.concatenate([xy.min(0), xy.max(0)])
        check = xy
    else:
        raise DatasetError(
            f"{where}: expected 'class cx cy w h [score]' or a polygon 'class x1 y1 x2 y2 x3 y3 "
            f"...', got {len(values)} values"
        )
    if not np.all(np.isfinite(check)) or check.min() < -_COORD_TOLERANCE:
        raise DatasetError(f"{where}: coordinates must be normalized to 0..1, got {line!r}")
    if check.max() > 1 + _COORD_TOLERANCE:
        raise DatasetError(
            f"{where}: coordinates must be normalized to 0..1 (divide pixels by the image "
            f"width/height), got {line!r}"
        )
    return np.clip(box, 0.0, 1.0), int(cls), float(score)


# -- COCO detection JSON -------------------------------------------------------------------------
class CocoBoxes(BoxSource):
    """Boxes from a COCO JSON. Images are matched by ``file_name`` (relative path, else base
    name); for YOLO output, category ids are mapped to 0..K-1 in increasing id order."""

    def __init__(self, json_path: str | os.PathLike, images: list[PurePosixPath]) -> None:
        self.path = Path(json_path)
        data = _load_coco(self.path)
        cats = {}
        for i, c in enumerate(_list_field(data, "categories", self.path)):
            if not isinstance(c, dict) or "id" not in c:
                raise DatasetError(f"{self.path}: categories[{i}] needs an 'id': {_short(c)}")
            cats[_category_id(c["id"], f"{self.path}: categories[{i}]")] = str(
                c.get("name", c["id"])
            )
        entries = {}
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise DatasetError(
                    f"{self.path}: images[{i}] needs 'id' and 'file_name': {_short(img)}"
                )
            entries[PurePosixPath(str(img["file_name"]).replace("\\", "/"))] = img
        by_base: dict[str, list[dict]] = defaultdict(list)
        for key, img in entries.items():
            by_base[key.name].append(img)
        self.entries: dict[PurePosixPath, dict] = {}
        for rel in images:
            img = entries.get(rel)
            if img is None and len(by_base.get(rel.name, ())) == 1:
                img = by_base[rel.name][0]
            if img is not None:
                self.entries[rel] = img
        if images and not self.entries:
            example = next(iter(entries), "nothing")
            raise DatasetError(
                f"none of the {len(images)} images matches an image of {self.path} (its file "
                f"names look like {str(example)!r}, the first image is {str(images[0])!r})"
            )
        unmatched = len(images) - len(self.entries)
        if unmatched:
            logger.warning(
                "%d images are not listed in %s: no boxes for them", unmatched, self.path
            )
        self.annotations: dict[Any, list[dict]] = defaultdict(list)
        for i, ann in enumerate(_list_field(data, "annotations", self.path)):
            if not isinstance(ann, dict):
                raise DatasetError(f"{self.path}: annotations[{i}] is not an object: {_short(ann)}")
            if not ann.get("iscrowd", 0):
                ann = dict(ann, _index=i)
                try:
                    self.annotations[ann.get("image_id")].append(ann)
                except TypeError:  # an unhashable image_id such as a list
                    raise DatasetError(
                        f"{self.path}: annotations[{i}] has an invalid image_id {_short(ann)}"
                    ) from None
        ids = set(cats)
        for anns in self.annotations.values():
            ids.update(
                int(a["category_id"])
                for a in anns
                if _is_int(a.get("category_id")) and 0 <= a["category_id"] <= MAX_CLASS_ID
            )
        self.names = {i: cats.get(i, str(i)) for i in sorted(ids)} if cats else None
        self.to_output_ids = {cid: k for k, cid in enumerate(sorted(ids))}
        self.image_ids = {rel: img["id"] for rel, img in self.entries.items()}

    def __call__(self, rel: PurePosixPath, image: np.ndarray) -> Detections:
        img = self.entries.get(rel)
        if img is None:
            return Detections.empty()
        h, w = image.shape[:2]
        size = (img.get("height"), img.get("width"))
        if None not in size and (int(size[0]), int(size[1])) != (h, w):
            raise DatasetError(
                f"{self.path} gives {rel} a size of {size[1]}x{size[0]} (w x h) but the image is "
                f"{w}x{h} (after EXIF rotation): its boxes would not line up"
            )
        boxes, classes, scores = [], [], []
        for ann in self.annotations.get(img["id"], []):
            where = f"{self.path}: annotation {ann.get('id')!r} (annotations[{ann['_index']}])"
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise DatasetError(f"{where} has no [x, y, w, h] bbox, got {_short(bbox)}")
            try:
                x, y, bw, bh = (_number(v) for v in bbox)
                score = _number(ann.get("score", 1.0))
            except (TypeError, ValueError):
                raise DatasetError(
                    f"{where}: bbox and score must be numbers, got bbox {_short(bbox)}"
                ) from None
            if not all(math.isfinite(v) for v in (x, y, bw, bh, score)) or bw < 0 or bh < 0:
                raise DatasetError(f"{where}: bbox {bbox} must be finite with w, h >= 0")
            boxes.append([x, y, x + bw, y + bh])
            classes.append(_category_id(ann.get("category_id"), f"{where}: category_id"))
            scores.append(score)
        if not boxes:
            return Detections.empty()
        return Detections.from_arrays(boxes, classes, scores)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(v)
    return float(v)


def _category_id(v: Any, where: str) -> int:
    """A category id: an integer (or integral float) in 0..MAX_CLASS_ID."""
    if not _is_int(v) or not 0 <= v <= MAX_CLASS_ID:
        raise DatasetError(f"{where} must be an integer in 0..{MAX_CLASS_ID}, got {_short(v)}")
    return int(v)


def _list_field(data: dict, name: str, path: Path) -> list:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DatasetError(
            f"{path}: '{name}' must be a list, got {type(value).__name__} ({_short(value)})"
        )
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


def _load_coco(path: Path) -> dict:
    try:
        if not path.is_file():
            raise DatasetError(f"the COCO file {path} is not a regular file")
        if path.stat().st_size > MAX_JSON_BYTES:
            raise DatasetError(f"the COCO file {path} is larger than {MAX_JSON_BYTES} bytes")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise DatasetError(f"cannot read the COCO file {path}: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested too deeply to be a COCO file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path} is not a COCO file: it needs an 'images' list")
    return data
