import numpy as np
import pytest
import torch

from samkit.ops import (
    box_area,
    box_iou,
    clip_boxes,
    mask_to_box_xyxy,
    masks_to_boxes_xyxy,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_xyxy_xywh_roundtrip_keeps_type_and_dtype(kind):
    data = [[1.5, 2.0, 4.0, 7.0], [0.0, 0.0, 10.0, 3.0]]
    boxes = torch.tensor(data, dtype=torch.float64) if kind == "torch" else np.array(data)
    xywh = xyxy_to_xywh(boxes)
    assert type(xywh) is type(boxes)
    assert xywh.dtype == boxes.dtype
    np.testing.assert_allclose(np.asarray(xywh), [[1.5, 2.0, 2.5, 5.0], [0, 0, 10, 3]])
    back = xywh_to_xyxy(xywh)
    np.testing.assert_allclose(np.asarray(back), data)
    # Input untouched, extra leading dims work.
    np.testing.assert_allclose(np.asarray(boxes), data)
    assert xyxy_to_xywh(boxes[None]).shape == (1, 2, 4)


def test_xywh_int_boxes():
    out = xywh_to_xyxy(np.array([[3, 4, 5, 6]], dtype=np.int32))
    assert out.dtype == np.int32
    assert out.tolist() == [[3, 4, 8, 10]]


def test_bad_box_shape_raises():
    with pytest.raises(ValueError):
        xyxy_to_xywh(np.zeros((2, 3)))
    with pytest.raises(TypeError):
        xyxy_to_xywh([[0, 0, 1, 1]])


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_clip_boxes(kind):
    data = [[-5.0, -1.0, 50.0, 20.0], [3.0, 4.0, 5.0, 6.0]]
    boxes = torch.tensor(data) if kind == "torch" else np.array(data, dtype=np.float32)
    out = clip_boxes(boxes, height=10, width=30)
    assert type(out) is type(boxes) and out.dtype == boxes.dtype
    np.testing.assert_allclose(np.asarray(out), [[0, 0, 30, 10], [3, 4, 5, 6]])
    assert np.asarray(boxes)[0, 0] == -5.0  # not modified in place


def test_box_area_and_degenerate():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [5.0, 5.0, 4.0, 9.0]])
    assert box_area(boxes).tolist() == [6.0, 0.0]
    assert box_area(boxes.numpy()).tolist() == [6.0, 0.0]


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_box_iou_hand_computed(kind):
    a = [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]]
    b = [[1.0, 1.0, 3.0, 3.0], [10.0, 10.0, 11.0, 11.0], [0.0, 0.0, 2.0, 2.0]]
    conv = torch.tensor if kind == "torch" else np.array
    iou = np.asarray(box_iou(conv(a), conv(b)))
    assert iou.shape == (2, 3)
    # [0,0,2,2] vs [1,1,3,3]: inter 1, union 4 + 4 - 1 = 7.
    np.testing.assert_allclose(iou[0], [1 / 7, 0.0, 1.0], rtol=1e-6)
    # [0,0,4,4] vs [1,1,3,3]: inter 4, union 16.  vs [0,0,2,2]: 4 / 16.
    np.testing.assert_allclose(iou[1], [0.25, 0.0, 0.25], rtol=1e-6)


def test_box_iou_degenerate_is_zero_not_nan():
    z = torch.zeros(1, 4)
    assert box_iou(z, z).item() == 0.0
    assert box_iou(z.numpy(), z.numpy()).item() == 0.0


def test_box_iou_empty_shapes():
    assert box_iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)


def test_masks_to_boxes_hand_case():
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True  # rows 1..2, cols 2..4
    m[0, 4, 0] = True  # makes rows 1..4, cols 0..4
    boxes = masks_to_boxes_xyxy(m)
    assert boxes.dtype == torch.int64
    assert boxes.tolist() == [[0, 1, 4, 4], [0, 0, 0, 0]]


def test_masks_to_boxes_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 4, 17, 23, generator=g) > 0.97
    masks[1, 2] = False
    boxes = masks_to_boxes_xyxy(masks)
    assert boxes.shape == (3, 4, 4)
    for idx in np.ndindex(3, 4):
        ys, xs = np.nonzero(masks[idx].numpy())
        want = [0, 0, 0, 0] if len(xs) == 0 else [xs.min(), ys.min(), xs.max(), ys.max()]
        assert boxes[idx].tolist() == want
        assert mask_to_box_xyxy(masks[idx].numpy()).tolist() == want


def test_single_pixel_and_full_mask():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 3, 3] = True
    assert masks_to_boxes_xyxy(m).tolist() == [[3, 3, 3, 3]]
    full = np.ones((4, 7), dtype=bool)
    assert mask_to_box_xyxy(full).tolist() == [0, 0, 6, 3]
    assert masks_to_boxes_xyxy(torch.zeros(0, 5, 5, dtype=torch.bool)).shape == (0, 4)
