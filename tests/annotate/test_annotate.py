"""auto_annotate end to end: callable / label inputs, YOLO and COCO output, failures, resuming."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from samkit import SamPredictor, auto_annotate
from samkit.annotate.writers import WORK_DIR
from samkit.data.files import read_image

from ..annotate_helpers import (
    BoxDetector,
    box_mask_sam,
    box_to_mask,
    boxes_for,
    iou,
    make_folder,
    parse_yolo,
    reference_masks,
    tree,
)
from ..conftest import TINY_VIT, tiny_model


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model's ops are microseconds: threads only add overhead on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sam():
    return tiny_model()


class Crash(BaseException):
    """Stands for the process being killed (not an Exception, so nothing catches it)."""


def test_yolo_output_from_a_callable_detector(tmp_path):
    ds = tmp_path / "dataset"
    images = make_folder(ds / "images", 4)
    summary = auto_annotate(
        ds / "images", det_model=BoxDetector(), sam_model=box_mask_sam(1), progress=False
    )
    out = ds / "images_auto_annotate_labels"  # default: next to data, nothing else written
    assert summary.output_dir == out
    assert sorted(p.name for p in ds.iterdir()) == ["images", out.name]
    assert sorted(tree(out)) == ["classes.txt", "data.yaml"] + [f"im{i}.txt" for i in range(4)]
    assert (out / "im3.txt").read_bytes() == b""  # 64x64: no detections -> an empty file
    assert (summary.images, summary.annotated, summary.empty, summary.failed) == (4, 4, 1, 0)
    assert (summary.objects, summary.dropped) == (9, 0)
    for i in (0, 1, 2):
        h, w = images[i].shape[:2]
        lines = parse_yolo(out / f"im{i}.txt", h, w)
        assert [c for c, _ in lines] == [2, 0, 1]
        for (_, raster), box in zip(lines, boxes_for(images[i])):
            assert iou(raster, box_to_mask(box, h, w)) > 0.8
    assert (out / "classes.txt").read_text() == "zero\none\ntwo\n"
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "zero", 1: "one", 2: "two"}
    assert (data["path"], data["train"]) == (ds.resolve().as_posix(), "images")


def test_class_alignment_when_a_mask_is_dropped(tmp_path):
    """The object after one whose mask is empty keeps its own class (the Ultralytics bug)."""
    make_folder(tmp_path / "images", 1)  # 60 x 80, resized to 192 x 256 (scale 3.2)
    boxes = np.array([[2, 2, 30, 20], [40, 5, 43, 25], [35, 30, 75, 55], [5, 25, 25, 58]])
    classes = [5, 7, 2, 9]  # box 1 is 3 px wide -> 9.6 input px < 12 -> empty mask

    def detector(image):
        return boxes, classes

    for fmt in ("yolo", "coco"):
        out = tmp_path / fmt
        summary = auto_annotate(
            tmp_path / "images",
            det_model=detector,
            sam_model=box_mask_sam(min_width=12),
            output_dir=out,
            format=fmt,
            progress=False,
        )
        assert (summary.objects, summary.dropped, summary.empty) == (3, 1, 0)
        if fmt == "yolo":
            lines = parse_yolo(out / "im0.txt", 60, 80)
            got = [(c, raster) for c, raster in lines]
        else:
            coco = COCO(str(out / "annotations.json"))
            got = [
                (a["category_id"], coco.annToMask(a).astype(bool))
                for a in coco.dataset["annotations"]
            ]
        assert [c for c, _ in got] == [5, 2, 9]
        for (_, mask), k in zip(got, [0, 2, 3]):
            assert iou(mask, box_to_mask(boxes[k], 60, 80)) > 0.8


def test_boxes_outside_the_image_are_dropped_not_shifted(tmp_path, sam):
    make_folder(tmp_path / "images", 1)
    boxes = np.array([[2, 3, 40, 30], [100, 100, 150, 120], [20, 10, 70, 50]])

    summary = auto_annotate(
        tmp_path / "images",
        det_model=lambda image: (boxes, [4, 1, 3]),
        sam_model=sam,
        format="coco",
        output_dir=tmp_path / "out",
        progress=False,
    )
    anns = json.loads((tmp_path / "out" / "annotations.json").read_text())["annotations"]
    ref = reference_masks(sam, read_image(tmp_path / "images" / "im0.png"), boxes[[0, 2]])
    assert [a["category_id"] for a in anns] == [4, 3]
    assert summary.dropped == 1
    for ann, mask in zip(anns, ref):
        assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)


def test_coco_output_loads_in_pycocotools_and_equals_the_python_api(tmp_path, sam):
    images = make_folder(tmp_path / "images", 4)
    checkpoint = tmp_path / "tiny.pt"  # `sam` as a file, with its architecture record
    torch.save({"model": sam.state_dict(), "samkit_config": TINY_VIT.to_dict()}, checkpoint)
    summary = auto_annotate(
        tmp_path / "images",
        det_model=BoxDetector(),
        sam_model=str(checkpoint),
        format="coco",
        progress=False,
    )
    path = tmp_path / "images_auto_annotate_labels" / "annotations.json"
    assert summary.annotations_file == path
    coco = COCO(str(path))
    assert [im["file_name"] for im in coco.dataset["images"]] == [f"im{i}.png" for i in range(4)]
    assert coco.getAnnIds(imgIds=[4]) == []  # the image without detections is listed, empty
    assert coco.dataset["categories"] == [
        {"id": 0, "name": "zero"},
        {"id": 1, "name": "one"},
        {"id": 2, "name": "two"},
    ]
    for img_id, image in zip((1, 2, 3), images[:3]):
        h, w = image.shape[:2]
        assert (coco.imgs[img_id]["height"], coco.imgs[img_id]["width"]) == (h, w)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        boxes = boxes_for(image)
        ref, ref_iou = reference_masks(sam, image, boxes, with_iou=True)
        assert len(anns) == 3  # the tiny model's masks are not empty here
        predictor = SamPredictor(sam)
        predictor.set_image(image)
        expected = zip(ref, ref_iou, boxes, [2, 0, 1], [0.9, 0.8, 0.7])
        for ann, (mask, pred_iou, box, cls, score) in zip(anns, expected):
            got = coco.annToMask(ann).astype(bool)
            assert np.array_equal(got, mask)
            single, _, _ = predictor.predict(box=box, multimask_output=False)  # one box at a time
            assert (single[0] == got).mean() > 0.999
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert ann["area"] == int(mask_utils.area(rle))
            assert ann["bbox"] == mask_utils.toBbox(rle).tolist()
            assert (ann["category_id"], ann["score"], ann["iscrowd"]) == (cls, score, 0)
            assert ann["predicted_iou"] == round(float(pred_iou), 6)


def test_coco_polygons(tmp_path):
    make_folder(tmp_path / "images", 1)
    boxes = np.array([[2, 2, 30, 20], [35, 30, 75, 55]])
    auto_annotate(
        tmp_path / "images",
        det_model=lambda image: (boxes, [0, 1]),
        sam_model=box_mask_sam(min_width=1),
        format="coco",
        segmentation="polygon",
        output_dir=tmp_path / "out",
        progress=False,
    )
    coco = COCO(str(tmp_path / "out" / "annotations.json"))
    for ann, box in zip(coco.dataset["annotations"], boxes):
        assert all(len(poly) >= 6 for poly in ann["segmentation"])
        assert iou(coco.annToMask(ann).astype(bool), box_to_mask(box, 60, 80)) > 0.8


def test_corrupt_images_and_detector_failures_are_isolated(tmp_path, sam, caplog):
    make_folder(tmp_path / "images", 3)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"this is not a JPEG")
    png = (tmp_path / "images" / "im0.png").read_bytes()
    (tmp_path / "images" / "cut.png").write_bytes(png[: len(png) // 2])

    def detector(image):
        if image.shape[:2] == (72, 64):
            raise ValueError("detector exploded")
        if image.shape[:2] == (56, 90):
            return np.zeros((2, 3)), [0, 1]  # malformed boxes
        return boxes_for(image), [0, 1, 2]

    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="samkit.annotate"):
        summary = auto_annotate(
            tmp_path / "images", det_model=detector, sam_model=sam, output_dir=out, progress=False
        )
    failed = {f.path.name: f.reason for f in summary.failures}
    assert sorted(failed) == ["broken.jpg", "cut.png", "im1.png", "im2.png"]
    assert "broken.jpg: not an image file" in failed["broken.jpg"]
    assert "cut.png: the image is corrupt or truncated" in failed["cut.png"]
    assert "ValueError: detector exploded" in failed["im1.png"]
    assert "N x 4" in failed["im2.png"]
    for name in failed:
        assert name in caplog.text
    assert summary.annotated == 1 and sorted(p.name for p in out.iterdir()) == ["im0.txt"]
    again = auto_annotate(
        tmp_path / "images", det_model=detector, sam_model=sam, output_dir=out, progress=False
    )
    assert (again.skipped, again.failed, again.annotated) == (1, 4, 0)


def _clean_and_crashed(tmp_path, sam, fmt: str, crash_at: int):
    """Output of a clean run, and of a run that crashes at detector call ``crash_at``."""
    make_folder(tmp_path / "images", 6)
    clean = tmp_path / "clean"
    auto_annotate(
        tmp_path / "images",
        det_model=BoxDetector(),
        sam_model=sam,
        output_dir=clean,
        format=fmt,
        progress=False,
    )

    class Crashing(BoxDetector):
        def __call__(self, image):
            if self.calls == crash_at:
                raise Crash
            return super().__call__(image)

    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        auto_annotate(
            tmp_path / "images",
            det_model=Crashing(),
            sam_model=sam,
            output_dir=out,
            format=fmt,
            progress=False,
        )
    return clean, out


def test_killed_yolo_run_resumes_to_the_same_files(tmp_path, sam):
    clean, out = _clean_and_crashed(tmp_path, sam, "yolo", crash_at=3)
    done = {k: v for k, v in tree(out).items() if not k.startswith(WORK_DIR)}
    assert sorted(done) == ["im0.txt", "im1.txt", "im2.txt"]
    assert all(tree(clean)[name] == data for name, data in done.items())
    (out / WORK_DIR / "tmp").mkdir(parents=True)
    (out / WORK_DIR / "tmp" / "123-4.tmp").write_text("0 0.1 0.1")  # left by a killed writer
    det = BoxDetector()
    summary = auto_annotate(
        tmp_path / "images", det_model=det, sam_model=sam, output_dir=out, progress=False
    )
    assert (summary.skipped, summary.annotated, det.calls) == (3, 3, 3)
    assert tree(out) == tree(clean)


def test_killed_coco_run_resumes_to_the_same_file(tmp_path, sam):
    clean, out = _clean_and_crashed(tmp_path, sam, "coco", crash_at=4)
    assert not (out / "annotations.json").exists()
    summary = auto_annotate(
        tmp_path / "images",
        det_model=BoxDetector(),
        sam_model=sam,
        output_dir=out,
        format="coco",
        progress=False,
    )
    assert (summary.skipped, summary.annotated) == (4, 2)
    assert tree(out) == tree(clean)  # annotations.json byte-identical, same partial results


def test_crash_while_writing_leaves_no_partial_label(tmp_path, sam, monkeypatch):
    import samkit.annotate.writers as writers

    make_folder(tmp_path / "images", 3)
    clean = tmp_path / "clean"
    auto_annotate(
        tmp_path / "images",
        det_model=BoxDetector(),
        sam_model=sam,
        output_dir=clean,
        progress=False,
    )
    real_replace = writers.os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise Crash  # killed between writing the temporary file and renaming it
        real_replace(src, dst)

    monkeypatch.setattr(writers.os, "replace", replace)
    out = tmp_path / "out"
    with pytest.raises(Crash):
        auto_annotate(
            tmp_path / "images",
            det_model=BoxDetector(),
            sam_model=sam,
            output_dir=out,
            progress=False,
        )
    assert sorted(p.name for p in out.glob("*.txt")) == ["im0.txt"]
    monkeypatch.setattr(writers.os, "replace", real_replace)
    auto_annotate(
        tmp_path / "images", det_model=BoxDetector(), sam_model=sam, output_dir=out, progress=False
    )
    assert tree(out) == tree(clean)


def test_overwrite_and_skip(tmp_path, sam):
    make_folder(tmp_path / "images", 2)
    out = tmp_path / "out"
    args = dict(det_model=BoxDetector(), sam_model=sam, output_dir=out, progress=False)
    auto_annotate(tmp_path / "images", **args)
    original = (out / "im0.txt").read_bytes()
    (out / "im0.txt").write_text("edited by hand\n")
    assert auto_annotate(tmp_path / "images", **args).skipped == 2
    assert (out / "im0.txt").read_text() == "edited by hand\n"
    summary = auto_annotate(tmp_path / "images", overwrite=True, **args)
    assert (summary.skipped, summary.annotated) == (0, 2)
    assert (out / "im0.txt").read_bytes() == original


def test_conf_max_det_and_classes_filter_callable_boxes(tmp_path):
    make_folder(tmp_path / "images", 1)
    boxes = np.array([[2, 2, 30, 20], [35, 30, 75, 55], [5, 25, 25, 58], [40, 2, 78, 25]])

    def detector(image):
        return boxes, [0, 1, 2, 1], [0.9, 0.1, 0.5, 0.8]

    def classes_written(**kwargs):
        out = tmp_path / "out"
        auto_annotate(
            tmp_path / "images",
            det_model=detector,
            sam_model=box_mask_sam(min_width=1),
            output_dir=out,
            overwrite=True,
            progress=False,
            **kwargs,
        )
        return [c for c, _ in parse_yolo(out / "im0.txt", 60, 80)]

    assert classes_written() == [0, 2, 1]  # conf=0.25 drops the 0.1 box
    assert classes_written(conf=0.0) == [0, 1, 2, 1]
    assert classes_written(conf=0.0, max_det=2) == [0, 1]  # the two best, in detector order
    assert classes_written(conf=0.0, classes=[1]) == [1, 1]


KILLED_RUN = """
import os, sys, time
import torch
torch.set_num_threads(1)
import samkit.annotate.writers as writers
from samkit import auto_annotate
from tests.annotate_helpers import BoxDetector
from tests.conftest import tiny_model

real_replace = os.replace
calls = []

def stalling_replace(src, dst):  # the 4th label file is written but never renamed
    calls.append(dst)
    if len(calls) == 4:
        time.sleep(600)
    real_replace(src, dst)

writers.os.replace = stalling_replace
auto_annotate(sys.argv[1], det_model=BoxDetector(), sam_model=tiny_model(),
              output_dir=sys.argv[2], progress=False)
"""


def test_sigkilled_run_resumes_to_the_same_files(tmp_path, sam):
    """A real process killed (SIGKILL) mid-write: no partial label visible; resuming gives the
    same files as a clean run."""
    make_folder(tmp_path / "images", 6)
    clean, out = tmp_path / "clean", tmp_path / "killed"
    args = dict(det_model=BoxDetector(), sam_model=sam, progress=False)
    auto_annotate(tmp_path / "images", output_dir=clean, **args)
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "images"), str(out)], cwd=repo, env=env
    )
    try:
        deadline = time.monotonic() + 300
        stalled = False  # three labels renamed into place, the fourth written as a temporary
        while not stalled and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            temporaries = list((out / WORK_DIR / "tmp").glob("*.tmp"))
            stalled = len(list(out.glob("*.txt"))) == 3 and len(temporaries) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert stalled, "the run never reached its 4th label file"
    labels = sorted(p.name for p in out.glob("*.txt"))
    assert labels == ["im0.txt", "im1.txt", "im2.txt"]  # im3.txt only exists as a temporary
    assert all((out / name).read_bytes() == (clean / name).read_bytes() for name in labels)
    summary = auto_annotate(tmp_path / "images", output_dir=out, **args)
    assert (summary.skipped, summary.annotated) == (3, 3)
    assert tree(out) == tree(clean)
