"""Dataset readers (YOLO segmentation, COCO instances) and the synthetic-shapes writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samkit.data.datasets import (
    DatasetError,
    label_path,
    load_coco,
    load_dataset,
    rasterize_polygons,
)
from samkit.data.synthetic import SHAPE_NAMES, make_shapes_image, write_shapes_dataset
from samkit.ops.rle import encode_coco_rle, mask_to_rle

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402


def _png(path, h, w, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


@pytest.fixture
def yolo_root(tmp_path):
    """images/{train,val}, labels/{train,val} and data.yaml with hand-written labels."""
    _png(tmp_path / "images/val/a.png", 40, 60)
    _png(tmp_path / "images/val/sub/b.png", 20, 20)  # no label file: background image
    _png(tmp_path / "images/train/c.png", 40, 60)
    (tmp_path / "labels/val").mkdir(parents=True)
    (tmp_path / "labels/train").mkdir(parents=True)
    (tmp_path / "labels/val/a.txt").write_text(
        "0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n"  # square x 15..45, y 10..30
        "1 0.5 0.5 0.2 0.2\n"  # detection-only line
        "1 0.1 0.1 0.2\n"  # malformed
        "\n"
        "1 0.0 0.0 0.1 0.0 0.0 0.1\n"  # triangle at the top-left corner
    )
    (tmp_path / "labels/train/c.txt").write_text("1 0.5 0.5 0.6 0.5 0.6 0.6\n")
    (tmp_path / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames: [square, triangle]\n"
    )
    return tmp_path


def test_yolo_reads_polygons_as_masks(yolo_root):
    ds = load_dataset(yolo_root / "data.yaml", "val")
    assert len(ds) == 2 and ds.num_instances == 2
    assert ds.names == {0: "square", 1: "triangle"}
    first = ds.load([s.image_path.name for s in ds.samples].index("a.png"))
    assert first.image.shape == (40, 60, 3) and first.masks.shape == (2, 40, 60)
    expected = np.zeros((40, 60), bool)
    expected[10:31, 15:46] = True  # cv2.fillPoly includes the boundary pixels
    assert np.array_equal(first.masks[0], expected)
    assert first.categories.tolist() == [0, 1]
    tri = first.masks[1]
    assert tri[0, 0] and tri[0, 6] and tri[4, 0] and not tri[5, 5] and tri.sum() < 40
    # the problems are reported, not fatal
    assert any("detection-only" in p for p in ds.problems)
    assert any("got 4 numbers" in p for p in ds.problems)
    background = ds.load([s.image_path.name for s in ds.samples].index("b.png"))
    assert background.masks.shape == (0, 20, 20)


def test_yolo_splits_lists_and_folders(yolo_root):
    assert len(load_dataset(yolo_root, "train")) == 1  # a folder with data.yaml
    (yolo_root / "val.txt").write_text("images/val/a.png\n./images/train/c.png\n")
    (yolo_root / "list.yaml").write_text(
        f"path: {yolo_root}\nval: val.txt\nnames:\n  0: square\n  1: triangle\n"
    )
    ds = load_dataset(yolo_root / "list.yaml", "val")
    assert [s.image_path.name for s in ds.samples] == ["a.png", "c.png"]
    assert ds.names == {0: "square", 1: "triangle"}
    with pytest.raises(DatasetError, match="has no 'test' split"):
        load_dataset(yolo_root / "data.yaml", "test")


def test_yolo_label_path_rule(tmp_path):
    p = tmp_path / "images" / "x" / "images" / "y.jpg"
    assert label_path(p) == tmp_path / "images" / "x" / "labels" / "y.txt"


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(DatasetError, match="expected a mapping"):
        load_dataset(tmp_path / "bad.yaml")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DatasetError, match="not a COCO instances file"):
        load_dataset(tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="expected data.yaml or images/"):
        load_dataset(tmp_path)


@pytest.fixture
def coco_file(tmp_path):
    """A COCO file: polygon, compressed RLE, uncompressed RLE, crowd and broken annotations."""
    h, w = 40, 50
    _png(tmp_path / "images" / "one.png", h, w)
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - 25) ** 2 + (xx - 30) ** 2 < 64
    ring = ((yy - 12) ** 2 + (xx - 38) ** 2 < 81) & ((yy - 12) ** 2 + (xx - 38) ** 2 >= 9)
    compressed = mask_utils.encode(np.asfortranarray(disk.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode()
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0,
         "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]},
        {"id": 2, "image_id": 1, "category_id": 4, "iscrowd": 0, "segmentation": compressed},
        {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": mask_to_rle(ring)},
        {"id": 4, "image_id": 1, "category_id": 3, "iscrowd": 1, "segmentation": mask_to_rle(ring)},
        {"id": 5, "image_id": 1, "category_id": 3, "iscrowd": 0,
         "segmentation": {"size": [10, 10], "counts": [100]}},
        {"id": 6, "image_id": 2, "category_id": 3, "iscrowd": 0, "segmentation": [[1, 1, 5, 1, 5, 5]]},
    ]  # fmt: skip
    coco = {
        "images": [
            {"id": 1, "file_name": "one.png", "height": h, "width": w},
            {"id": 2, "file_name": "missing.png", "height": h, "width": w},
        ],
        "annotations": anns,
        "categories": [{"id": 3, "name": "thing"}, {"id": 4, "name": "disk"}],
    }
    path = tmp_path / "annotations" / "instances_val.json"
    path.parent.mkdir()
    path.write_text(json.dumps(coco))
    return path


def test_coco_polygons_and_rle_match_pycocotools(coco_file):
    ds = load_dataset(coco_file)
    assert len(ds) == 1  # missing.png skipped with a note
    assert any("missing.png" in p for p in ds.problems)
    assert any("annotation 5" in p for p in ds.problems)
    assert ds.names == {3: "thing", 4: "disk"}
    sample = ds.load(0)
    assert sample.categories.tolist() == [3, 4, 3]  # the crowd annotation is skipped
    ref = COCO(str(coco_file))
    for mask, ann_id in zip(sample.masks, (1, 2, 3)):
        expected = ref.annToMask(ref.loadAnns(ann_id)[0]).astype(bool)
        assert np.array_equal(mask, expected), ann_id
    expected_rect = np.zeros((40, 50), bool)
    expected_rect[5:15, 5:25] = True  # pixel centres inside [5, 25) x [5, 15)
    assert np.array_equal(sample.masks[0], expected_rect)


def test_coco_polygon_rasterization_close_to_pycocotools():
    rng = np.random.default_rng(0)
    h, w = 60, 80
    ious, diffs = [], []
    for _ in range(100):
        n = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(8, 25, n)
        poly = np.stack([40 + rad * np.cos(ang), 30 + rad * np.sin(ang)], 1)
        ref = mask_utils.decode(mask_utils.frPyObjects([poly.ravel().tolist()], h, w))[..., 0]
        ref = ref.astype(bool)
        ours = rasterize_polygons([poly], h, w)
        diffs.append(int((ours != ref).sum()))
        if ref.sum() >= 200:
            ious.append((ours & ref).sum() / (ours | ref).sum())
    # pycocotools walks edges on a 5x upsampled grid; only a few boundary pixels differ
    assert np.mean(ious) > 0.98 and min(ious) > 0.95
    assert max(diffs) <= 15


def test_coco_image_dir_argument(coco_file, tmp_path):
    other = tmp_path / "elsewhere"
    _png(other / "one.png", 40, 50)
    ds = load_coco(coco_file, image_dir=other)
    assert ds.samples[0].image_path == other / "one.png"


def test_synthetic_writer_roundtrips_through_both_readers(tmp_path):
    yaml_path = write_shapes_dataset(
        tmp_path / "shapes", n_train=2, n_val=4, seed=3, height=96, width=128
    )
    yolo = load_dataset(yaml_path, "val")
    coco = load_dataset(tmp_path / "shapes" / "annotations" / "instances_val.json")
    assert yolo.names == dict(enumerate(SHAPE_NAMES))
    assert len(yolo) == len(coco) == 4 and yolo.num_instances == coco.num_instances > 0
    # regenerate the same images: the COCO RLE is exact, YOLO polygons nearly so
    rng = np.random.default_rng(3)
    for _ in range(2):
        make_shapes_image(rng, 96, 128)
    for i in range(4):
        truth = make_shapes_image(rng, 96, 128)
        c, y = coco.load(i), yolo.load(i)
        assert np.array_equal(c.image, truth.image)
        assert np.array_equal(c.masks, truth.masks)
        assert c.categories.tolist() == (truth.classes + 1).tolist()
        assert y.categories.tolist() == truth.classes.tolist()
        for a, b in zip(y.masks, truth.masks):
            # occlusion holes are joined by 1-pixel bridges in YOLO's one-polygon format
            assert (a & b).sum() / (a | b).sum() > 0.95


def test_make_shapes_image_masks_are_visible_parts():
    s = make_shapes_image(np.random.default_rng(5), 128, 128, max_objects=6)
    assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
    assert len(s.masks) == len(s.classes) >= 1
    # visible parts never overlap and each is at least min_area pixels
    assert s.masks.sum(axis=0).max() <= 1
    assert s.masks.sum(axis=(1, 2)).min() >= 64
    assert encode_coco_rle(s.masks[0])["size"] == [128, 128]
