"""samkit <-> supervision with the real package: annotators draw our masks, COCO export re-reads."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from samkit import SAM, Results, from_supervision
from samkit.errors import PromptError

from .conftest import synthetic_image

sv = pytest.importorskip("supervision")
mask_utils = pytest.importorskip("pycocotools.mask")


@pytest.fixture(scope="module")
def demo_results():
    """Two box prompts, 3 masks each, from the shipped demo model on a synthetic image."""
    img = synthetic_image(240, 320)
    model = SAM("samkit-demo")
    boxes = np.array([[40, 40, 106, 120], [160, 120, 265, 215]], np.float32)
    r = model(img, bboxes=boxes, multimask_output=True)[0]
    assert len(r) == 6 and r.masks.any(axis=(1, 2)).all()
    return img, r


def test_fields(demo_results):
    _, r = demo_results
    det = r.to_supervision(class_ids=[3, 7], names={3: "car", 7: "tree"})
    assert isinstance(det, sv.Detections) and len(det) == len(r)
    np.testing.assert_array_equal(det.mask, r.masks)
    np.testing.assert_array_equal(det.confidence, r.scores)
    # per-prompt class ids follow prompt_index (3 masks per box)
    np.testing.assert_array_equal(det.class_id, [3, 3, 3, 7, 7, 7])
    assert list(det.data["class_name"]) == ["car"] * 3 + ["tree"] * 3
    # XYXY boxes equal supervision's own box of each mask (inclusive pixels, both libraries)
    np.testing.assert_array_equal(det.xyxy, sv.mask_to_xyxy(r.masks).astype(np.float32))
    # default: one class 0, so annotators' default class colouring works
    assert r.to_supervision().class_id.tolist() == [0] * 6
    with pytest.raises(PromptError, match="class_ids has 4 values"):
        r.to_supervision(class_ids=[1, 2, 3, 4])


def test_mask_annotator_draws_the_masks(demo_results):
    img, r = demo_results
    best = r.best()
    scene = img[..., ::-1].copy()  # supervision works on BGR like OpenCV
    out = sv.MaskAnnotator(opacity=0.5).annotate(scene.copy(), best.to_supervision())
    changed = np.any(out != scene, axis=2)
    union = best.masks.any(axis=0)
    assert changed[union].mean() > 0.99  # mask pixels are painted
    assert not changed[~union].any()  # nothing outside the masks


def test_coco_export_rereads_with_pycocotools(demo_results, tmp_path):
    img, r = demo_results
    best = r.best()
    det = best.to_supervision(class_ids=[0, 1])
    src = tmp_path / "src" / "img.png"
    src.parent.mkdir()
    cv2.imwrite(str(src), img[..., ::-1])
    ds = sv.DetectionDataset(
        classes=["rect", "disk"], images=[str(src)], annotations={str(src): det}
    )
    ann_path = tmp_path / "ann.json"
    ds.as_coco(images_directory_path=str(tmp_path / "images"), annotations_path=str(ann_path))
    coco = json.loads(ann_path.read_text())
    anns = sorted(coco["annotations"], key=lambda a: a["id"])
    assert len(anns) == 2
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert [cats[a["category_id"]] for a in anns] == ["rect", "disk"]
    h, w = img.shape[:2]
    for a, mask in zip(anns, best.masks):
        seg = a["segmentation"]
        if isinstance(seg, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        else:
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
        back = mask_utils.decode(rle).astype(bool)
        iou = (back & mask).sum() / (back | mask).sum()
        assert iou > 0.9, iou  # polygons drawn back onto the pixel grid


def test_from_supervision_round_trip(demo_results):
    img, _ = demo_results
    dets = sv.Detections(
        xyxy=np.array([[40, 40, 106, 120], [160, 120, 265, 215]], np.float64),
        class_id=np.array([5, 2]),
        confidence=np.array([0.9, 0.8]),
    )
    boxes, ids = from_supervision(dets)
    assert boxes.dtype == np.float32 and ids.tolist() == [5, 2]
    r = SAM("samkit-demo")(img, bboxes=boxes)[0]
    out = r.to_supervision(class_ids=ids)
    assert out.class_id.tolist() == [5, 2] and len(out) == 2
    empty, none_ids = from_supervision(sv.Detections.empty())
    assert empty.shape == (0, 4) and (none_ids is None or none_ids.size == 0)
    with pytest.raises(PromptError, match="sv.Detections"):
        from_supervision([[1, 2, 3, 4]])


def test_empty_results():
    img = np.zeros((8, 8, 3), np.uint8)
    r = Results(img, "e", np.zeros((0, 8, 8), bool), [])
    det = r.to_supervision()
    assert len(det) == 0 and det.xyxy.shape == (0, 4)
