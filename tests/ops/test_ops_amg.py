"""Segment-everything helpers: grids, crop boxes, stability score, crop-edge test, uncropping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samkit.ops.amg import (
    batch_iterator,
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
    is_box_near_crop_edge,
    stability_score,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)


def test_point_grid_cell_centres_row_major():
    g = build_point_grid(2)
    np.testing.assert_allclose(g, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    g4 = build_point_grid(4)
    assert g4.shape == (16, 2) and g4.dtype == np.float64
    np.testing.assert_allclose(g4[:4, 0], [0.125, 0.375, 0.625, 0.875])  # x varies fastest
    np.testing.assert_allclose(g4[::4, 1], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(build_point_grid(1), [[0.5, 0.5]])
    assert build_point_grid(0).shape == (0, 2)
    with pytest.raises(ValueError):
        build_point_grid(-1)


def test_all_layer_grids_downscale():
    grids = build_all_layer_point_grids(16, 2, 2)
    assert [len(g) for g in grids] == [256, 64, 16]
    assert [len(g) for g in build_all_layer_point_grids(10, 1, 3)] == [100, 9]  # int(10 / 3)
    assert [len(g) for g in build_all_layer_point_grids(2, 2, 2)] == [4, 1, 0]


def test_crop_boxes_hand_computed():
    # 600 x 401 image, one layer: overlap int(512/1500 * 401) = 136, crops 269 x 368.
    boxes, layers = generate_crop_boxes((600, 401), 1, 512 / 1500)
    assert boxes == [
        [0, 0, 401, 600],
        [0, 0, 269, 368],
        [0, 232, 269, 600],
        [133, 0, 401, 368],
        [133, 232, 401, 600],
    ]
    assert layers == [0, 1, 1, 1, 1]
    boxes, layers = generate_crop_boxes((100, 200), 0, 0.5)
    assert boxes == [[0, 0, 200, 100]] and layers == [0]


def test_crop_boxes_two_layers_cover_image():
    h, w = 480, 640
    boxes, layers = generate_crop_boxes((h, w), 2, 512 / 1500)
    assert layers == [0] + [1] * 4 + [2] * 16
    for layer in (1, 2):
        cover = np.zeros((h, w), bool)
        for b, li in zip(boxes, layers):
            if li == layer:
                x0, y0, x1, y1 = b
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
                cover[y0:y1, x0:x1] = True
        assert cover.all()
    # layer 2: overlap int(512/1500 * 480 * 0.5) = 81, crop width ceil((81 * 3 + 640) / 4)
    assert boxes[5][2] - boxes[5][0] == math.ceil((81 * 3 + 640) / 4)


def test_stability_score_hand_cases():
    logits = torch.tensor([[[2.0, 0.5], [-0.5, -2.0]]])  # > 1: 1 pixel, > -1: 3 pixels
    assert stability_score(logits, 0.0, 1.0).tolist() == [pytest.approx(1 / 3)]
    assert stability_score(logits, 0.0, 0.0).tolist() == [1.0]
    empty = torch.full((1, 3, 3), -5.0)
    assert torch.isnan(stability_score(empty, 0.0, 1.0)).all()  # 0 / 0, as the reference
    batch = torch.stack([logits[0], -logits[0]])
    assert stability_score(batch, 0.0, 1.0).shape == (2,)
    assert stability_score(batch, 0.0, 1.0).dtype == torch.float32


def test_box_near_crop_edge():
    crop = [100, 50, 300, 250]  # inner crop of a 400 x 300 image
    image = [0, 0, 400, 300]
    boxes = torch.tensor(
        [
            [50, 50, 100, 100],  # interior of the crop
            [0, 50, 40, 100],  # touches the crop's left edge (x 100, not an image edge)
            [50, 185, 150, 200],  # within 20 px of the crop's bottom edge (y 250)
            [50, 50, 150, 199],  # bottom at 249 > 20 px from 250? no: 199 + 50 = 249 -> near
            [50, 50, 179, 100],  # right at 279: 21 px from 300 -> not near
        ]
    )
    near = is_box_near_crop_edge(boxes, crop, image).tolist()
    assert near == [False, True, True, True, False]
    # A crop that shares its edges with the image: image edges never count.
    full = is_box_near_crop_edge(torch.tensor([[0, 0, 400, 300]]), image, image)
    assert full.tolist() == [False]
    right_crop = [200, 0, 400, 300]  # its right and bottom edges are image edges
    boxes = torch.tensor([[100, 100, 199, 200], [5, 100, 100, 200]])
    assert is_box_near_crop_edge(boxes, right_crop, image).tolist() == [False, True]


def test_uncrop():
    crop = [10, 20, 60, 80]
    b = uncrop_boxes_xyxy(torch.tensor([[1, 2, 3, 4]]), crop)
    assert b.tolist() == [[11, 22, 13, 24]]
    p = uncrop_points(torch.tensor([[1.5, 2.5]], dtype=torch.float64), crop)
    assert p.tolist() == [[11.5, 22.5]] and p.dtype == torch.float64
    np.testing.assert_allclose(uncrop_points(np.array([[0.0, 0.0]]), crop), [[10, 20]])
    m = torch.ones((2, 60, 50), dtype=torch.bool)
    full = uncrop_masks(m, crop, 100, 70)
    assert full.shape == (2, 100, 70)
    assert full[:, 20:80, 10:60].all() and full.sum() == m.sum()
    same = uncrop_masks(m, [0, 0, 50, 60], 60, 50)
    assert same is m


def test_batch_iterator():
    a = np.arange(10)
    b = list(range(10))
    out = list(batch_iterator(4, a, b))
    assert [len(x[0]) for x in out] == [4, 4, 2]
    np.testing.assert_array_equal(out[2][0], [8, 9])
    assert out[2][1] == [8, 9]
    assert list(batch_iterator(3, np.zeros((0, 2)))) == []
    with pytest.raises(ValueError):
        list(batch_iterator(2, [1, 2], [1]))
    with pytest.raises(ValueError):
        list(batch_iterator(0, [1]))
