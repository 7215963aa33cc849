"""Pieces of auto-annotation: image folders and reading, label lines, COCO records, data.yaml."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import yaml
from PIL import Image

from samkit import DatasetError, ImageError
from samkit.annotate.detectors import Detections
from samkit.annotate.labels import data_yaml_text, read_names_file
from samkit.annotate.writers import SegmentedObject, coco_annotation, yolo_lines
from samkit.data.files import list_images, read_image
from samkit.ops import polygons_to_mask


def test_list_images_is_sorted_and_skips_hidden_and_output(tmp_path):
    for name in ["b.jpg", "a.PNG", "notes.txt", ".hidden.png", "sub/c.png", "out/d.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    root, found = list_images(tmp_path)
    assert root == tmp_path and [str(p) for p in found] == ["a.PNG", "b.jpg"]
    _, found = list_images(tmp_path, recursive=True, exclude=tmp_path / "out")
    assert [str(p) for p in found] == ["a.PNG", "b.jpg", "sub/c.png"]
    assert list_images(tmp_path / "sub" / "c.png") == (tmp_path / "sub", [PurePosixPath("c.png")])
    with pytest.raises(ImageError, match="not found"):
        list_images(tmp_path / "nope")


def _save(tmp_path: Path, image: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_read_image_applies_exif_orientation(tmp_path):
    raw = np.zeros((10, 20, 3), np.uint8)
    raw[:3, :3] = (255, 0, 0)  # red top-left corner in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path, Image.fromarray(raw), "r.png", exif=exif)
    img = read_image(path)
    assert img.shape == (20, 10, 3) and img.dtype == np.uint8
    assert tuple(img[0, -1]) == (255, 0, 0)  # top-left went to top-right


def test_read_image_converts_modes(tmp_path):
    values = np.array([[0, 65535], [257 * 100, 257 * 7]], np.uint16)
    img = read_image(_save(tmp_path, Image.fromarray(values), "16bit.png"))
    assert img.shape == (2, 2, 3) and img[..., 0].tolist() == [[0, 255], [100, 7]]
    rgba = Image.fromarray(np.full((4, 5, 4), (10, 20, 30, 0), np.uint8))
    assert read_image(_save(tmp_path, rgba, "a.png"))[0, 0].tolist() == [10, 20, 30]
    gray = read_image(_save(tmp_path, Image.new("L", (3, 2), 77), "g.png"))
    assert gray.shape == (2, 3, 3) and (gray == 77).all()
    pal = Image.new("P", (3, 2), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert read_image(_save(tmp_path, pal, "p.png"))[1, 2].tolist() == [200, 100, 50]
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 255, 0))
    got = read_image(_save(tmp_path, cmyk, "c.jpg"))
    assert np.abs(got.astype(int) - [255, 0, 0]).max() < 8


def test_read_image_reports_broken_files(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), 5).save(buf, "PNG")
    cases = {"text.jpg": b"hello", "empty.png": b"", "cut.png": buf.getvalue()[:60]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=f"{name}: (not an image|the image is corrupt)"):
            read_image(tmp_path / name)
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path / "missing.png")


def _two_squares(h=40, w=50):
    mask = np.zeros((h, w), bool)
    mask[5:15, 5:15] = True  # 100 px
    mask[20:36, 25:45] = True  # 320 px
    return mask


def test_yolo_lines_for_multi_part_masks():
    mask = _two_squares()
    obj = SegmentedObject(class_id=4, score=1.0, predicted_iou=0.9, mask=mask)

    def rasters(lines):
        out = []
        for line in lines:
            v = line.split()
            assert v[0] == "4" and all(len(x.split(".")[1]) == 6 for x in v[1:])
            xy = np.array(v[1:], float).reshape(-1, 2) * [50, 40]
            out.append(polygons_to_mask([xy], 40, 50))
        return out

    (merged,) = rasters(yolo_lines(obj, (40, 50), "merge"))
    assert (merged >= mask).all() and (merged & ~mask).sum() < 40  # parts + a 1-px bridge
    split = rasters(yolo_lines(obj, (40, 50), "split"))
    assert len(split) == 2 and np.array_equal(split[0] | split[1], mask)
    (largest,) = rasters(yolo_lines(obj, (40, 50), "largest"))
    assert largest.sum() == 320 and (largest <= mask).all()


def test_degenerate_masks_are_dropped():
    speck = np.zeros((30, 30), bool)
    speck[10, 12] = True
    for mask in (None, np.zeros((30, 30), bool), speck):
        obj = SegmentedObject(1, 1.0, 0.5, mask)
        assert yolo_lines(obj, (30, 30)) == []
        assert coco_annotation(obj, "polygon") is None
    assert coco_annotation(SegmentedObject(1, 1.0, 0.5, np.zeros((30, 30), bool))) is None
    ann = coco_annotation(SegmentedObject(1, 0.25, 0.5, speck), "rle")  # RLE keeps one pixel
    assert (ann["area"], ann["bbox"], ann["score"]) == (1, [12.0, 10.0, 1.0, 1.0], 0.25)


def test_data_yaml_and_names_files(tmp_path):
    names = {0: 'a "quoted": name', 2: "ünïcode"}
    text = data_yaml_text(tmp_path / "ds" / "images", names)
    data = yaml.safe_load(text)
    assert data == {
        "path": (tmp_path / "ds").resolve().as_posix(),
        "train": "images",
        "val": "images",
        "names": {0: 'a "quoted": name', 1: "class1", 2: "ünïcode"},
    }
    (tmp_path / "data.yaml").write_text(text)
    assert read_names_file(tmp_path / "data.yaml") == data["names"]
    (tmp_path / "list.yaml").write_text("names: [x, y]\n")
    assert read_names_file(tmp_path / "list.yaml") == {0: "x", 1: "y"}
    (tmp_path / "classes.txt").write_text("cat\n\ndog\n")
    assert read_names_file(tmp_path / "classes.txt") == {0: "cat", 2: "dog"}


def test_detections_validation():
    dets = Detections.from_arrays([[1, 2, 3, 4]], np.array([2.0]))
    assert dets.class_ids.dtype == np.int64 and dets.scores.tolist() == [1.0]
    bad = [
        ([[1, 2, 3]], [0], None, "N x 4"),
        ([[1, 2, 3, 4]], [0, 1], None, "class ids"),
        ([[1, 2, 3, 4]], [0.5], None, "non-negative integers"),
        ([[1, 2, 3, 4]], [-1], None, "non-negative integers"),
        ([[1, 2, 3, 4]], [0], [0.1, 0.2], "scores"),
        ([[1, 2, float("nan"), 4]], [0], None, "finite"),
        ([[1, 2, 3, 4]], [None], None, "class ids"),
        ([[1, 2, 3, 4], [1, 2]], [0, 0], None, "numeric"),
    ]
    for boxes, classes, scores, match in bad:
        with pytest.raises(DatasetError, match=match):
            Detections.from_arrays(boxes, classes, scores)
