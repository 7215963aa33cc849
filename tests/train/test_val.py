"""Validation protocol and metrics on hand-made cases, with stand-in predictors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samkit import PromptError
from samkit.data.datasets import Instance, SegDataset, SegSample
from samkit.ops.boxes import mask_to_box_xyxy
from samkit.ops.rle import mask_to_rle
from samkit.train.val import error_click, interior_point, validate

H, W = 120, 160


def _rect(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# small (8 x 8 = 64 px), medium (40 x 50 = 2000 px), large (100 x 100 = 10000 px), disjoint
MASKS = [_rect(2, 10, 2, 10), _rect(60, 100, 5, 55), _rect(10, 110, 58, 158)]


def _dataset(tmp_path, masks_per_image, corrupt=False):
    samples = []
    for i, masks in enumerate(masks_per_image):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(path)
        samples.append(SegSample(path, [Instance(0, rle=mask_to_rle(m)) for m in masks], H, W))
    if corrupt:
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not a png")
        samples.insert(0, SegSample(bad, [Instance(0, rle=mask_to_rle(MASKS[0]))], H, W))
    return SegDataset(samples, {0: "thing"}, "hand-made")


class Oracle:
    """Answers with the ground-truth instance the prompt points at (box equal / first click
    inside), transformed by ``fn``. Three candidates: (fn(gt), empty, gt) with predicted IoU
    (0.9, 0.1, 0.5), so selection by predicted IoU picks fn(gt) and the oracle picks gt."""

    def __init__(self, masks, fn=lambda m: m):
        self.masks, self.fn, self.calls = masks, fn, []

    def set_image(self, image):
        assert image.shape == (H, W, 3)

    def _find(self, point=None, box=None):
        for m in self.masks:
            if box is not None and np.array_equal(mask_to_box_xyxy(m), box):
                return m
            if point is not None and m[int(point[1]), int(point[0])]:
                return m
        raise AssertionError("prompt matches no instance")

    def predict_batch(self, points, labels, boxes, multimask):
        self.calls.append((points, labels, boxes, multimask))
        n = len(boxes) if boxes is not None else len(points)
        gts = [
            self._find(box=boxes[i]) if boxes is not None else self._find(point=points[i, 0])
            for i in range(n)
        ]
        out = np.stack(
            [
                self.answer(g, None if points is None else (points[i], labels[i]))
                for i, g in enumerate(gts)
            ]
        )
        if not multimask:
            return out[:, :1], np.full((n, 1), 0.9)
        return out, np.tile([0.9, 0.1, 0.5], (n, 1))

    def answer(self, gt, clicks):
        return np.stack([self.fn(gt), np.zeros_like(gt), gt])


def test_perfect_predictor_scores_one(tmp_path):
    data = _dataset(tmp_path, [MASKS, MASKS[1:]])
    for prompt in ("box", "point", "points3"):
        r = validate(Oracle(MASKS), data, prompt, verbose=False)
        assert r.miou == 1.0 and r.oracle_miou == 1.0
        assert r.by_size() == {"all": 1.0, "small": 1.0, "medium": 1.0, "large": 1.0}
        assert r.counts() == {"all": 5, "small": 1, "medium": 2, "large": 2}
        assert r.images == 2
    assert r.per_click == [1.0, 1.0, 1.0]


def test_empty_predictor_scores_zero(tmp_path):
    data = _dataset(tmp_path, [MASKS])
    for prompt in ("box", "point", "points3"):
        r = validate(Oracle(MASKS, fn=np.zeros_like), data, prompt, verbose=False)
        assert r.miou == 0.0
    # the oracle over three candidates finds the perfect one for a single click
    r = validate(Oracle(MASKS, fn=np.zeros_like), data, "point", verbose=False)
    assert r.oracle_miou == 1.0


def _left_half(m):
    out = m.copy()
    xs = np.flatnonzero(m.any(axis=0))
    out[:, xs[0] + len(xs) // 2 :] = False
    return out


def test_half_masks_score_one_half_and_selection_uses_predicted_iou(tmp_path):
    data = _dataset(tmp_path, [MASKS])
    r = validate(Oracle(MASKS, fn=_left_half), data, "point", verbose=False)
    assert r.ious.tolist() == [0.5, 0.5, 0.5]  # every width is even
    assert r.oracle_ious.tolist() == [1.0, 1.0, 1.0]
    # box prompts default to one mask; with multimask the highest predicted IoU is scored
    assert validate(Oracle(MASKS, fn=_left_half), data, "box", verbose=False).miou == 0.5
    r = validate(Oracle(MASKS, fn=_left_half), data, "box", multimask=True, verbose=False)
    assert r.miou == 0.5 and r.oracle_miou == 1.0


class Clicker(Oracle):
    """First click: the left half. Later: the whole mask once a positive click lands in the
    missing right half (so the protocol's error click must be positive and inside it)."""

    def answer(self, gt, clicks):
        pts, labels = clicks
        half = _left_half(gt)
        fixed = any(
            lab == 1 and gt[int(y), int(x)] and not half[int(y), int(x)]
            for (x, y), lab in zip(pts, labels)
        )
        return np.stack([gt if fixed else half, np.zeros_like(gt), np.zeros_like(gt)])


def test_error_clicks_fix_the_missing_half(tmp_path):
    data = _dataset(tmp_path, [MASKS])
    model = Clicker(MASKS)
    r = validate(model, data, "points3", verbose=False)
    assert r.per_click == [0.5, 1.0, 1.0]
    assert r.miou == 1.0
    first, second = model.calls[0], model.calls[1]
    assert first[0].shape == (3, 1, 2) and first[3] is True  # one click, three masks
    assert second[0].shape == (3, 2, 2) and second[3] is False  # two clicks, one mask
    assert second[1][:, 1].tolist() == [1, 1, 1]


def test_interior_point_hand_cases():
    # a 20 x 40 rectangle: distance 10 is reached first at row 9, column 9 of the rectangle
    assert interior_point(_rect(10, 30, 20, 60)).tolist() == [29.0, 19.0]
    # a ring: the point lies on the ring, not in the hole
    yy, xx = np.mgrid[:H, :W]
    r2 = (yy - 60) ** 2 + (xx - 80) ** 2
    ring = (r2 < 50**2) & (r2 >= 30**2)
    x, y = interior_point(ring).astype(int)
    assert ring[y, x] and 38 <= np.hypot(x - 80, y - 60) <= 42
    # a mask touching the image border: the border counts as boundary
    x, y = interior_point(_rect(0, 10, 0, 10)).astype(int)
    assert (x, y) == (4, 4)


def test_error_click_picks_the_largest_region():
    gt = _rect(20, 60, 20, 80)
    pred = gt.copy()
    pred[20:25, 20:25] = False  # missed 5 x 5
    pred[80:100, 100:120] = True  # false 20 x 20
    (x, y), label = error_click(pred, gt)
    assert label == 0 and 100 <= x < 120 and 80 <= y < 100
    pred[80:100, 100:120] = False
    (x, y), label = error_click(pred, gt)
    assert label == 1 and 20 <= x < 25 and 20 <= y < 25
    (x, y), label = error_click(gt, gt)
    assert label == 1 and gt[int(y), int(x)]


def test_bad_prompt_and_unreadable_images(tmp_path):
    data = _dataset(tmp_path, [MASKS], corrupt=True)
    with pytest.raises(PromptError, match="'box', 'point' or 'points<k>'"):
        validate(Oracle(MASKS), data, "scribble", verbose=False)
    r = validate(Oracle(MASKS), data, "box", verbose=False)
    assert r.miou == 1.0 and r.images == 1 and len(r.skipped) == 1 and "bad.png" in r.skipped[0]
    table = r.table()
    assert "prompt 'box'" in table and "1 images skipped" in table
    assert r.to_dict()["miou"]["all"] == 1.0
