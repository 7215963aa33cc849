"""auto_annotate box inputs: YOLO label folders, COCO JSON, the Ultralytics adapter, bad inputs."""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from pycocotools import mask as mask_utils

from samkit import DatasetError, DependencyError, SamkitError, auto_annotate
from samkit.annotate.writers import YoloWriter
from samkit.data.files import read_image

from ..annotate_helpers import box_mask_sam, make_folder, parse_yolo, reference_masks
from ..conftest import tiny_model


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_ultralytics(monkeypatch):
    """Ultralytics is not importable (so label inputs provably never load the detector)."""
    monkeypatch.setitem(sys.modules, "ultralytics", None)


@pytest.fixture(scope="module")
def sam():
    return tiny_model()


def _yolo_dataset(tmp_path):
    images = make_folder(tmp_path / "images", 3)  # 60x80, 72x64, 56x90
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "im0.txt").write_text("3 0.25 0.3 0.4 0.5\n\n1 0.7 0.6 0.5 0.6 0.83\n")
    (labels / "im1.txt").write_text("0 0.1 0.1 0.5 0.2 0.3 0.8\n")  # a polygon: its box
    (labels / "classes.txt").write_text("a\nb\nc\nd\n")
    boxes = {  # the same boxes in pixels, XYXY, computed by hand
        0: np.array([[4, 3, 36, 33], [36, 18, 76, 54]], np.float64),
        1: np.array([[6.4, 7.2, 32, 57.6]]),
    }
    return images, labels, boxes


def test_yolo_detection_labels_become_coco_masks(tmp_path, sam):
    images, labels, boxes = _yolo_dataset(tmp_path)
    out = tmp_path / "out"
    summary = auto_annotate(
        tmp_path / "images", labels=labels, sam_model=sam, format="coco", output_dir=out
    )
    assert (summary.annotated, summary.empty, summary.failed) == (3, 1, 0)
    data = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["a", "b", "c", "d"]
    anns = data["annotations"]
    assert [(a["image_id"], a["category_id"], a["score"]) for a in anns] == [
        (1, 3, 1.0),
        (1, 1, 0.83),
        (2, 0, 1.0),
    ]
    got = [mask_utils.decode(a["segmentation"]).astype(bool) for a in anns]
    want = list(reference_masks(sam, images[0], boxes[0])) + list(
        reference_masks(sam, images[1], boxes[1])
    )
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_yolo_detection_labels_become_yolo_segments(tmp_path):
    _, labels, _ = _yolo_dataset(tmp_path)
    out = tmp_path / "out"
    auto_annotate(tmp_path / "images", labels=labels, sam_model=box_mask_sam(1), output_dir=out)
    assert [c for c, _ in parse_yolo(out / "im0.txt", 60, 80)] == [3, 1]
    assert [c for c, _ in parse_yolo(out / "im1.txt", 72, 64)] == [0]
    assert (out / "im2.txt").read_text() == ""
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == dict(enumerate("abcd"))


def test_bad_yolo_labels(tmp_path, sam):
    make_folder(tmp_path / "images", 3)
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "im0.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 oops 0.2 0.2\n")
    (labels / "im1.txt").write_text("1 32 40 10 10\n")  # pixels, not normalized
    (labels / "im2.txt").write_text("1 0.5 0.5 0.2\n")
    summary = auto_annotate(
        tmp_path / "images", labels=labels, sam_model=sam, output_dir=tmp_path / "o"
    )
    reasons = {f.path.name: f.reason for f in summary.failures}
    assert "im0.txt:2" in reasons["im0.png"]
    assert "normalized" in reasons["im1.png"]
    assert "class cx cy w h" in reasons["im2.png"]
    with pytest.raises(DatasetError, match="no label file"):
        auto_annotate(tmp_path / "images", labels=tmp_path / "o", sam_model=sam)


def _coco_dataset(tmp_path):
    images = make_folder(tmp_path / "images", 3)
    coco = {
        "images": [
            {"id": 11, "file_name": "train/im0.png", "width": 80, "height": 60},
            {"id": 12, "file_name": "train/im1.png", "width": 64, "height": 72},
            {"id": 13, "file_name": "train/im2.png", "width": 90, "height": 56},
            {"id": 14, "file_name": "train/elsewhere.png", "width": 9, "height": 9},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 7, "bbox": [30, 20, 40, 30]},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [2, 4, 20, 10], "score": 0.5},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 80, 60], "iscrowd": 1},
            {"id": 4, "image_id": 12, "category_id": 3, "bbox": [5, 5, 30, 40]},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    path = tmp_path / "det.json"
    path.write_text(json.dumps(coco))
    return images, path, coco


def test_coco_boxes_become_coco_masks(tmp_path, sam):
    images, path, _ = _coco_dataset(tmp_path)
    (tmp_path / "images" / "im3.png").write_bytes((tmp_path / "images" / "im0.png").read_bytes())
    out = tmp_path / "out"
    auto_annotate(tmp_path / "images", labels=path, sam_model=sam, format="coco", output_dir=out)
    data = json.loads((out / "annotations.json").read_text())
    # ids of the input kept; an image not in the input is numbered after them (13 + 3 + 1)
    assert [im["id"] for im in data["images"]] == [11, 12, 13, 17]
    assert data["categories"] == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    anns = data["annotations"]
    assert [(a["image_id"], a["category_id"], a["score"]) for a in anns] == [
        (11, 7, 1.0),
        (11, 3, 0.5),
        (12, 3, 1.0),
    ]  # the crowd region is skipped
    want = list(reference_masks(sam, images[0], np.array([[30, 20, 70, 50], [2, 4, 22, 14]])))
    want += list(reference_masks(sam, images[1], np.array([[5, 5, 35, 45]])))
    for ann, mask in zip(anns, want):
        assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)


def test_coco_boxes_become_yolo_segments_with_contiguous_ids(tmp_path):
    _, path, coco = _coco_dataset(tmp_path)
    out = tmp_path / "out"
    auto_annotate(tmp_path / "images", labels=path, sam_model=box_mask_sam(1), output_dir=out)
    assert [c for c, _ in parse_yolo(out / "im0.txt", 60, 80)] == [1, 0]  # dog=1, cat=0
    assert [c for c, _ in parse_yolo(out / "im1.txt", 72, 64)] == [0]
    assert (out / "im2.txt").read_text() == ""
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "cat", 1: "dog"}
    auto_annotate(
        tmp_path / "images",
        labels=path,
        sam_model=box_mask_sam(1),
        output_dir=out,
        classes=[7],
        overwrite=True,
    )
    assert [c for c, _ in parse_yolo(out / "im0.txt", 60, 80)] == [1]
    assert (out / "im1.txt").read_text() == ""

    coco["images"][1]["width"] = 72  # does not match the file: its boxes would be off
    coco["images"][0]["file_name"] = "other/name.png"
    path.write_text(json.dumps(coco))
    summary = auto_annotate(
        tmp_path / "images", labels=path, sam_model=box_mask_sam(1), output_dir=tmp_path / "o2"
    )
    assert [f.path.name for f in summary.failures] == ["im1.png"]
    assert "would not line up" in summary.failures[0].reason
    assert (tmp_path / "o2" / "im0.txt").read_text() == ""  # not listed: no boxes
    coco["images"] = coco["images"][3:]
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="none of the 3 images"):
        auto_annotate(tmp_path / "images", labels=path, sam_model=box_mask_sam(1))


def test_missing_ultralytics_gives_the_install_hint(tmp_path, sam):
    make_folder(tmp_path / "images", 1)
    with pytest.raises(DependencyError, match=r'pip install "samkit\[yolo\]"'):
        auto_annotate(tmp_path / "images", det_model="yolov8n.pt", sam_model=sam)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # nothing written


class FakeYOLO:
    """Stands in for ``ultralytics.YOLO``: records its calls, returns two fixed boxes."""

    instances: list = []

    def __init__(self, weights):
        self.weights = weights
        self.names = {0: "person", 1: "car"}
        self.calls = []
        FakeYOLO.instances.append(self)

    def predict(self, source, **kwargs):
        self.calls.append((source.copy(), kwargs))
        boxes = SimpleNamespace(
            xyxy=torch.tensor([[40.0, 30, 75, 55], [2, 2, 30, 20]]),
            cls=torch.tensor([1.0, 0.0]),
            conf=torch.tensor([0.9, 0.6]),
        )
        return [SimpleNamespace(boxes=boxes)]


def test_ultralytics_adapter(tmp_path, monkeypatch):
    module = types.ModuleType("ultralytics")
    module.YOLO = FakeYOLO
    monkeypatch.setitem(sys.modules, "ultralytics", module)
    FakeYOLO.instances.clear()
    make_folder(tmp_path / "images", 1)
    out = tmp_path / "out"
    auto_annotate(
        tmp_path / "images",
        det_model="my_yolo.pt",
        sam_model=box_mask_sam(1),
        device="cpu",
        conf=0.3,
        iou=0.5,
        imgsz=320,
        max_det=7,
        classes=[1, 0],
        output_dir=out,
        progress=False,
    )
    (model,) = FakeYOLO.instances
    assert model.weights == "my_yolo.pt"
    ((source, kwargs),) = model.calls
    rgb = read_image(tmp_path / "images" / "im0.png")
    assert np.array_equal(source, rgb[..., ::-1])  # Ultralytics reads arrays as BGR
    assert kwargs == {
        "conf": 0.3,
        "iou": 0.5,
        "imgsz": 320,
        "max_det": 7,
        "classes": [0, 1],
        "device": "cpu",
        "verbose": False,
    }
    assert [c for c, _ in parse_yolo(out / "im0.txt", 60, 80)] == [1, 0]
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "person", 1: "car"}
    # A loaded model object works too.
    auto_annotate(
        tmp_path / "images",
        det_model=FakeYOLO("x.pt"),
        sam_model=box_mask_sam(1),
        output_dir=tmp_path / "o2",
    )
    assert (tmp_path / "o2" / "im0.txt").read_bytes() == (out / "im0.txt").read_bytes()


def test_bad_arguments_and_guards(tmp_path, sam):
    make_folder(tmp_path / "images", 2)
    det = lambda image: (np.zeros((0, 4)), [])  # noqa: E731
    with pytest.raises(SamkitError, match="format"):
        auto_annotate(tmp_path / "images", det_model=det, sam_model=sam, format="voc")
    with pytest.raises(SamkitError, match="parts"):
        auto_annotate(tmp_path / "images", det_model=det, sam_model=sam, parts="all")
    with pytest.raises(SamkitError, match="data not found"):
        auto_annotate(tmp_path / "missing", det_model=det, sam_model=sam)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SamkitError, match="no images"):
        auto_annotate(tmp_path / "empty", det_model=det, sam_model=sam)
    with pytest.raises(SamkitError, match="labels= input"):
        auto_annotate(
            tmp_path / "images", labels=tmp_path / "l", output_dir=tmp_path / "l", sam_model=sam
        )
    with pytest.raises(SamkitError, match="sam_model"):
        auto_annotate(tmp_path / "images", det_model=det, sam_model=42)
    with pytest.raises(SamkitError, match="precision"):
        auto_annotate(tmp_path / "images", det_model=det, sam_model=sam, precision="fp16")
    out = tmp_path / "out"
    busy = YoloWriter(out)
    busy.open()  # another run holds the folder
    try:
        with pytest.raises(SamkitError, match="another auto_annotate run"):
            auto_annotate(tmp_path / "images", det_model=det, sam_model=sam, output_dir=out)
    finally:
        busy.close(keep_work_dir=False)


def test_names_argument_and_label_name_clash(tmp_path, sam):
    images = make_folder(tmp_path / "images", 2)
    (tmp_path / "images" / "im0.jpg").write_bytes((tmp_path / "images" / "im1.png").read_bytes())
    (tmp_path / "names.txt").write_text("first\nsecond\n")
    det = lambda image: ([[2, 2, 30, 20]], [1])  # noqa: E731
    out = tmp_path / "out"
    summary = auto_annotate(
        tmp_path / "images",
        det_model=det,
        sam_model=box_mask_sam(1),
        output_dir=out,
        names=str(tmp_path / "names.txt"),
    )
    assert [(f.path.name, "also the result of im0.jpg" in f.reason) for f in summary.failures] == [
        ("im0.png", True)
    ]
    assert summary.names == {0: "first", 1: "second"}
    assert (out / "classes.txt").read_text() == "first\nsecond\n"
    assert len(images) == 2


def test_recursive_folders_mirror_into_the_output(tmp_path):
    make_folder(tmp_path / "data" / "a", 1)
    make_folder(tmp_path / "data" / "b" / "c", 2)
    det = lambda image: ([[2, 2, 30, 20]], [0])  # noqa: E731
    out = tmp_path / "data" / "labels"  # inside data: left out of the listing
    summary = auto_annotate(
        tmp_path / "data", det_model=det, sam_model=box_mask_sam(1), output_dir=out, recursive=True
    )
    assert summary.images == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == [
        "a/im0.txt",
        "b/c/im0.txt",
        "b/c/im1.txt",
    ]
    auto_annotate(
        tmp_path / "data",
        det_model=det,
        sam_model=box_mask_sam(1),
        output_dir=out,
        recursive=True,
        format="coco",
    )
    data = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in data["images"]] == ["a/im0.png", "b/c/im0.png", "b/c/im1.png"]
