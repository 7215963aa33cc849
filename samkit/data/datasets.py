"""Instance-segmentation datasets: YOLO segmentation (``data.yaml``, images/ + labels/) and COCO.

Both formats load into a :class:`SegDataset`: a list of :class:`SegSample` (an image path and its
instances), with :meth:`SegDataset.load` giving the RGB image and the ``N x H x W`` bool instance
masks. Masks are rasterized only when a sample is loaded.

YOLO
    ``data.yaml`` holds ``path`` (the dataset root; relative paths are taken from the yaml's own
    folder, unlike Ultralytics, which takes them from its datasets directory), ``train`` / ``val``
    / ``test`` (a folder of images, a ``.txt`` list of image paths, or a list of these) and
    ``names``. The labels of ``.../images/.../x.jpg`` are in ``.../labels/.../x.txt``: one object
    per line, ``class x1 y1 x2 y2 ...`` with coordinates normalized to 0..1 by the image width and
    height. Detection-only lines (``class xc yc w h``) carry no mask and are skipped with a note.
    Reading ``data.yaml`` needs PyYAML (``pip install pyyaml``, or ``samkit[train]``).
COCO
    An instances JSON (``images``, ``annotations``, ``categories``); segmentations as polygons
    (lists of ``[x1, y1, x2, y2, ...]`` in pixels) or RLE (uncompressed or compressed). Crowd
    annotations (``iscrowd: 1``) are skipped, as COCO evaluation does.

Problems in individual files (a malformed label line, a missing image) do not stop loading: the
item is skipped and a line is added to :attr:`SegDataset.problems`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..ops.polygons import polygons_to_mask
from ..ops.rle import rle_to_mask
from .files import read_image
from .sources import IMAGE_SUFFIXES

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetError",
    "Instance",
    "LoadedSample",
    "SegDataset",
    "SegSample",
    "load_coco",
    "load_dataset",
    "load_yolo",
    "rasterize_polygons",
]


@dataclass
class Instance:
    """One object. Exactly one of ``polygons`` (list of ``K x 2`` xy arrays) or ``rle`` (COCO RLE
    dict) is set.

    Polygons follow their format's convention. YOLO (``normalized``): coordinates are 0..1 and
    rasterized as Ultralytics does, with ``cv2.fillPoly`` (boundary pixels included; the inverse of
    :func:`samkit.ops.mask_to_polygons`). COCO: continuous pixel coordinates (pixel ``(c, r)``
    spans ``[c, c + 1) x [r, r + 1)``); a pixel is set when its centre is inside, which agrees with
    pycocotools up to a few boundary pixels. Several polygons of one instance are united.
    """

    category: int
    polygons: list[np.ndarray] | None = None
    rle: dict[str, Any] | None = None
    normalized: bool = False

    def mask(self, height: int, width: int) -> np.ndarray:
        """The instance as an ``H x W`` bool mask."""
        if self.rle is not None:
            m = rle_to_mask(self.rle)
            if m.shape != (height, width):
                raise DatasetError(
                    f"RLE of size {list(m.shape)} does not match the image size {[height, width]}"
                )
            return m
        if self.normalized:
            scale = np.array([width, height], np.float64)
            return polygons_to_mask([p * scale for p in self.polygons or []], height, width)
        return rasterize_polygons(self.polygons or [], height, width)


def rasterize_polygons(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """``H x W`` bool mask of the pixels whose centres lie inside any of the polygons (each
    ``K x 2`` xy in continuous pixel coordinates; even-odd rule within a polygon)."""
    out = np.zeros((height, width), bool)
    for poly in polygons:
        p = np.asarray(poly, np.float64).reshape(-1, 2)
        x0, y0 = p[:, 0], p[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        # each edge crosses the centre lines y = r + 0.5 of rows r in [r0, r1)
        r0 = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, height).astype(np.int64)
        r1 = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, height).astype(np.int64)
        n = r1 - r0
        if n.sum() == 0:
            continue
        edge = np.repeat(np.arange(len(p)), n)
        rows = np.repeat(r0 - np.cumsum(n) + n, n) + np.arange(n.sum())
        yc = rows + 0.5
        xs = x0[edge] + (yc - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
        order = np.lexsort((xs, rows))
        rows, xs = rows[order], xs[order]
        # crossings pair up within a row (inside between the 1st and 2nd, 3rd and 4th, ...)
        start = np.clip(np.ceil(xs[0::2] - 0.5), 0, width).astype(np.int64)
        stop = np.clip(np.ceil(xs[1::2] - 0.5), 0, width).astype(np.int64)
        diff = np.zeros((height, width + 1), np.int64)
        np.add.at(diff, (rows[0::2], start), 1)
        np.add.at(diff, (rows[0::2], stop), -1)
        out |= np.cumsum(diff, axis=1)[:, :width] > 0
    return out


@dataclass
class SegSample:
    """An image file and its instances (``height``/``width`` known up front for COCO only)."""

    image_path: Path
    instances: list[Instance]
    height: int | None = None
    width: int | None = None


@dataclass
class LoadedSample:
    """A sample read from disk: ``image`` H x W x 3 uint8 RGB, ``masks`` N x H x W bool,
    ``categories`` N ints."""

    path: Path
    image: np.ndarray
    masks: np.ndarray
    categories: np.ndarray


@dataclass
class SegDataset:
    """Images with instance masks, from YOLO or COCO files (see the module docstring)."""

    samples: list[SegSample]
    names: dict[int, str] = field(default_factory=dict)
    source: str = ""
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> SegSample:
        return self.samples[i]

    @property
    def num_instances(self) -> int:
        return sum(len(s.instances) for s in self.samples)

    def subset(self, indices: Iterable[int]) -> SegDataset:
        """A dataset of the samples at ``indices`` (same names)."""
        return SegDataset([self.samples[i] for i in indices], self.names, self.source, [])

    def load(self, i: int) -> LoadedSample:
        """Read image ``i`` and rasterize its masks; raises :class:`ImageError` for a bad image."""
        s = self.samples[i]
        image = read_image(s.image_path)
        h, w = image.shape[:2]
        if s.height is not None and (s.height, s.width) != (h, w):
            raise DatasetError(
                f"{s.image_path}: the annotation says {s.width}x{s.height} but the image is {w}x{h}"
            )
        masks = np.zeros((len(s.instances), h, w), bool)
        for k, inst in enumerate(s.instances):
            masks[k] = inst.mask(h, w)
        cats = np.array([inst.category for inst in s.instances], dtype=np.int64)
        return LoadedSample(s.image_path, image, masks, cats)

    def __repr__(self) -> str:
        return (
            f"SegDataset({self.source!r}: {len(self)} images, {self.num_instances} instances, "
            f"{len(self.names)} classes)"
        )


# ---------------------------------------------------------------------------------------------
# YOLO


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise DatasetError(
            f"reading {path} needs PyYAML: pip install pyyaml (or pip install 'samkit[train]')"
        ) from None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DatasetError(f"{path}: cannot read the dataset yaml ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with 'path', 'train', 'val', 'names'")
    return data


def _names(raw: Any) -> dict[int, str]:
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return dict(enumerate(str(v) for v in raw))
    return {}


def _image_files(entry: Path, root: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.suffix == ".txt" and entry.is_file():
        files = []
        for line in entry.read_text().splitlines():
            line = line.strip()
            if line:
                p = Path(line)
                files.append(
                    p
                    if p.is_absolute()
                    else (entry.parent / p if line.startswith("./") else root / p)
                )
        return files
    raise DatasetError(f"split entry {entry} is neither a folder of images nor a .txt list")


def label_path(image_path: Path) -> Path:
    """YOLO's rule: the last ``images`` folder of the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image_path.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _parse_yolo_labels(path: Path, problems: list[str]) -> list[Instance]:
    instances = []
    if not path.exists():
        return instances
    skipped_boxes = 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.append(f"{path}:{n}: not numbers, line skipped")
            continue
        if len(values) == 5:
            skipped_boxes += 1
            continue
        if len(values) < 7 or len(values) % 2 == 0:
            problems.append(
                f"{path}:{n}: expected 'class x1 y1 x2 y2 x3 y3 ...' (a class and at least 3 "
                f"points), got {len(values)} numbers; line skipped"
            )
            continue
        poly = np.asarray(values[1:], np.float64).reshape(-1, 2)
        if poly.min() < -0.01 or poly.max() > 1.01:
            problems.append(f"{path}:{n}: coordinates outside 0..1 (not normalized?); line skipped")
            continue
        instances.append(Instance(int(values[0]), polygons=[poly], normalized=True))
    if skipped_boxes:
        problems.append(f"{path}: {skipped_boxes} detection-only (box) lines skipped: no mask")
    return instances


def load_yolo(yaml_path: str | os.PathLike, split: str = "val") -> SegDataset:
    """Read split ``split`` of a YOLO segmentation dataset described by ``data.yaml``."""
    yaml_path = Path(yaml_path)
    data = _read_yaml(yaml_path)
    root = Path(data.get("path") or ".")
    if not root.is_absolute():
        root = (yaml_path.parent / root).resolve()
    if split not in data or data[split] is None:
        have = [k for k in ("train", "val", "test") if data.get(k)]
        raise DatasetError(f"{yaml_path}: has no '{split}' split (it has: {', '.join(have)})")
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    problems: list[str] = []
    samples = []
    for entry in entries:
        entry_path = Path(str(entry))
        entry_path = entry_path if entry_path.is_absolute() else root / entry_path
        if not entry_path.exists():
            raise DatasetError(f"{yaml_path}: '{split}' path {entry_path} does not exist")
        for img in _image_files(entry_path, root):
            samples.append(SegSample(img, _parse_yolo_labels(label_path(img), problems)))
    return SegDataset(samples, _names(data.get("names")), f"{yaml_path} [{split}]", problems)


def _load_yolo_dir(root: Path, split: str) -> SegDataset:
    images = root / "images" / split if (root / "images" / split).is_dir() else root / "images"
    problems: list[str] = []
    samples = [
        SegSample(img, _parse_yolo_labels(label_path(img), problems))
        for img in _image_files(images, root)
    ]
    return SegDataset(samples, {}, f"{images}", problems)


# ---------------------------------------------------------------------------------------------
# COCO


def _coco_image_dirs(json_path: Path, image_dir: Path | None) -> list[Path]:
    if image_dir is not None:
        return [Path(image_dir)]
    here, up = json_path.parent, json_path.parent.parent
    split = json_path.stem.removeprefix("instances_")
    return [here, up, here / "images", up / "images", up / split, up / "images" / split]


def _coco_segmentation(seg: Any, h: int, w: int) -> Instance | str:
    if isinstance(seg, list):
        polys = [np.asarray(p, np.float64).reshape(-1, 2) for p in seg if len(p) >= 6]
        if not polys:
            return "polygon with fewer than 3 points"
        return Instance(0, polygons=polys)
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(v) for v in seg["size"]] != [h, w]:
            return f"RLE size {seg['size']} differs from the image size {[h, w]}"
        return Instance(0, rle=seg)
    return f"unknown segmentation format {type(seg).__name__}"


def load_coco(
    json_path: str | os.PathLike, image_dir: str | os.PathLike | None = None
) -> SegDataset:
    """Read a COCO instances JSON; images are looked up in ``image_dir``, or next to the JSON
    (its folder, its parent, ``images/``, and ``<split>/`` for ``instances_<split>.json``)."""
    json_path = Path(json_path)
    try:
        coco = json.loads(json_path.read_text())
        images, anns = coco["images"], coco.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{json_path}: not a COCO instances file ({e})") from None
    names = {int(c["id"]): str(c["name"]) for c in coco.get("categories", [])}
    dirs = _coco_image_dirs(json_path, Path(image_dir) if image_dir else None)
    problems: list[str] = []
    by_image: dict[Any, list[dict]] = {}
    for a in anns:
        by_image.setdefault(a.get("image_id"), []).append(a)
    samples = []
    for im in images:
        found = next((d / im["file_name"] for d in dirs if (d / im["file_name"]).is_file()), None)
        if found is None:
            problems.append(
                f"{im['file_name']}: image not found in {', '.join(map(str, dirs))}; skipped"
            )
            continue
        h, w = int(im["height"]), int(im["width"])
        instances = []
        for a in by_image.get(im["id"], []):
            if a.get("iscrowd", 0):
                continue
            inst = _coco_segmentation(a.get("segmentation"), h, w)
            if isinstance(inst, str):
                problems.append(f"annotation {a.get('id')} of {im['file_name']}: {inst}; skipped")
                continue
            inst.category = int(a.get("category_id", 0))
            instances.append(inst)
        samples.append(SegSample(found, instances, h, w))
    if images and not samples:
        raise DatasetError(
            f"{json_path}: none of its {len(images)} images were found ({problems[0]}); pass "
            "image_dir= with the folder that holds them"
        )
    return SegDataset(samples, names, str(json_path), problems)


# ---------------------------------------------------------------------------------------------


def load_dataset(
    data: str | os.PathLike | SegDataset,
    split: str = "val",
    *,
    image_dir: str | os.PathLike | None = None,
) -> SegDataset:
    """A dataset from ``data``: a ``data.yaml`` (YOLO), a COCO ``.json``, a YOLO root folder
    (with ``data.yaml``, or ``images/`` and ``labels/``), or an existing :class:`SegDataset`.

    ``split`` picks the YOLO split; ``image_dir`` is where a COCO file's images are.
    """
    if isinstance(data, SegDataset):
        return data
    path = Path(data).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset not found: {path}. Pass a data.yaml, a COCO .json or a folder")
    if path.is_dir():
        if (path / "data.yaml").is_file():
            return load_yolo(path / "data.yaml", split)
        if (path / "images").is_dir():
            return _load_yolo_dir(path, split)
        raise DatasetError(f"{path}: expected data.yaml or images/ and labels/ folders inside")
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_yolo(path, split)
    if path.suffix.lower() == ".json":
        return load_coco(path, image_dir)
    raise DatasetError(f"{path}: unknown dataset file; pass a data.yaml or a COCO instances .json")
