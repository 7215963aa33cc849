"""Prompt parsing and checking (samkit.predict.prompts): forms, normalization, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest

from samkit.errors import PromptError
from samkit.predict.prompts import (
    MASK_PROMPT_LOGIT,
    binary_masks_to_logits,
    fit_prompts,
    parse_prompts,
)

H, W = 720, 1280


def test_points_one_per_object():
    p = parse_prompts(points=[[10, 20], [30, 40], [50, 60]], labels=[1, 0, 1])
    assert p.n == 3
    assert p.points.shape == (3, 1, 2)
    np.testing.assert_array_equal(p.labels, [[1], [0], [1]])
    np.testing.assert_array_equal(p.points[1, 0], [30, 40])


def test_points_grouped_and_default_labels():
    p = parse_prompts(points=np.zeros((2, 3, 2)) + 5)
    assert p.n == 2 and p.points.shape == (2, 3, 2)
    np.testing.assert_array_equal(p.labels, np.ones((2, 3)))


def test_single_point_and_scalar_label():
    p = parse_prompts(points=[7, 8], labels=0)
    assert p.n == 1 and p.points.shape == (1, 1, 2) and p.labels.tolist() == [[0]]


def test_boxes_and_box_with_points():
    p = parse_prompts(bboxes=[1, 2, 3, 4])
    assert p.n == 1 and p.boxes.shape == (1, 4)
    p = parse_prompts(bboxes=[[0, 0, 10, 10], [5, 5, 20, 20]], points=np.ones((2, 2, 2)))
    assert p.n == 2 and p.points.shape == (2, 2, 2) and p.boxes.shape == (2, 4)


def test_torch_tensor_prompts_are_accepted():
    torch = pytest.importorskip("torch")
    p = parse_prompts(bboxes=torch.tensor([[1.0, 2.0, 30.0, 40.0]]))
    np.testing.assert_array_equal(p.boxes, [[1, 2, 30, 40]])


def test_no_prompts_is_empty():
    assert parse_prompts().empty
    assert not parse_prompts(bboxes=np.zeros((0, 4))).empty
    assert parse_prompts(bboxes=np.zeros((0, 4))).n == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": [[1, 2, 3]]}, "points must have shape"),
        ({"points": [[[1, 2]], [[1, 2], [3, 4]]]}, "pad the shorter ones with label -1"),
        ({"points": [[np.nan, 2]]}, "points[0] contains NaN or inf"),
        ({"points": [[1, 2], [np.inf, 2]]}, "points[1] contains NaN or inf"),
        ({"points": [[1, 2], [3, 4]], "labels": [1]}, "one label per point"),
        ({"points": [[1, 2], [3, 4]], "labels": [[1, 0]]}, "for one object with 2 points"),
        ({"points": [[1, 2]], "labels": [2]}, "labels must be 1 (foreground), 0"),
        ({"points": [[[1, 2], [3, 4]]], "labels": [[-1, -1]]}, "object 0 have label -1"),
        ({"labels": [1]}, "labels were given without points"),
        ({"bboxes": [1, 2, 3]}, "bboxes must have shape (4,) or (N, 4)"),
        ({"bboxes": [[1, 2, 3, np.nan]]}, "bboxes[0] contains NaN or inf"),
        ({"bboxes": [[0, 0, 5, 5], [10, 10, 5, 20]]}, "bboxes[1] = (10, 10, 5, 20) has x2 < x1"),
        (
            {"bboxes": [[0, 0, 5, 5]], "points": [[1, 1], [2, 2]]},
            "for a box with 2 points pass points of shape (1, 2, 2)",
        ),
        ({"bboxes": np.ones((2, 4)), "masks": np.zeros((3, 256, 256))}, "number of objects"),
        ({"masks": np.zeros((2, 3, 4, 5, 6))}, "masks must have shape (N, H, W)"),
        ({"masks": np.array([["a"]])}, "numeric or bool"),
        ({"masks": np.full((1, 256, 256), np.nan)}, "masks[0] contains NaN or inf"),
    ],
)
def test_malformed_prompts_raise_clear_errors(kwargs, message):
    with pytest.raises(PromptError) as exc:
        parse_prompts(**kwargs)
    assert message in str(exc.value)


def test_box_partly_outside_is_clipped():
    p = fit_prompts(parse_prompts(bboxes=[[-20, 10, 1400, 800]]), H, W)
    np.testing.assert_array_equal(p.boxes, [[0, 10, W, H]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": [[10, 10], [1300, 20]]}, "points[1] = (1300, 20) lies outside the 1280 x 720"),
        ({"points": [[[10, 10], [5, -1]]]}, "points[0][1] = (5, -1) lies outside"),
        ({"points": [5000, 5]}, "points = (5000, 5) lies outside"),
        ({"bboxes": [[1300, 0, 1400, 50]]}, "bboxes[0] = (1300, 0, 1400, 50) lies entirely"),
        ({"bboxes": [[0.1, 0.2, 0.5, 0.6]]}, "look normalized"),
        ({"points": [[0.25, 0.5]]}, "points[0] = (0.25, 0.5)"),
        ({"masks": np.zeros((1, 100, 100))}, "masks must be (N, 720, 1280) binary"),
        ({"masks": np.full((1, H, W), 0.5)}, "must be binary (bool or 0/1)"),
    ],
)
def test_prompts_that_do_not_fit_the_image(kwargs, message):
    with pytest.raises(PromptError) as exc:
        fit_prompts(parse_prompts(**kwargs), H, W)
    assert message in str(exc.value)


def test_padding_points_are_not_checked_and_integer_corners_are_not_normalized():
    p = parse_prompts(points=[[[100, 100], [-50, 9000]]], labels=[[1, -1]])
    fit_prompts(p, H, W)  # the padding point may be anywhere
    fit_prompts(parse_prompts(points=[[0, 0], [1, 1]]), H, W)  # pixel corners, not normalized
    fit_prompts(parse_prompts(bboxes=[[0.1, 0.2, 0.5, 0.6]]), 20, 20)  # tiny image: allowed


def test_mask_kinds():
    binary = fit_prompts(parse_prompts(masks=np.zeros((2, H, W), bool)), H, W)
    assert binary.mask_kind == "binary" and binary.masks.dtype == bool
    logits = fit_prompts(parse_prompts(masks=np.random.randn(1, 1, 256, 256)), H, W)
    assert logits.mask_kind == "logits" and logits.masks.shape == (1, 256, 256)
    # a 0/1 float mask at image size counts as binary
    assert fit_prompts(parse_prompts(masks=np.ones((H, W))), H, W).mask_kind == "binary"


def test_binary_mask_to_logits_geometry():
    # 720 x 1280 -> input 576 x 1024 -> 144 x 256 of the 256 grid; rest is padding.
    m = np.zeros((1, H, W), bool)
    m[:, 200:400, 640:1280] = True  # rows 200..399 -> 40..80, cols 640.. -> 128..256
    out = binary_masks_to_logits(m, (576, 1024), 1024)
    assert out.shape == (1, 1, 256, 256) and out.dtype == np.float32
    grid = out[0, 0]
    assert np.all(grid[41:79, 129:255] == MASK_PROMPT_LOGIT)
    assert np.all(grid[:39] == -MASK_PROMPT_LOGIT)
    assert np.all(grid[:, :127] == -MASK_PROMPT_LOGIT)
    assert np.all(grid[144:] == -MASK_PROMPT_LOGIT)  # padding below the image
