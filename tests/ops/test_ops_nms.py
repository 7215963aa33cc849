import time

import numpy as np
import pytest
import torch

from samkit.ops import batched_nms, nms


def reference_nms(boxes, scores, thr, idxs=None):
    """Plain-Python greedy NMS with torchvision's rules, in the boxes' numpy dtype."""
    b = boxes.numpy()
    s = scores.tolist()
    n = len(s)
    order = sorted(range(n), key=lambda i: -s[i])  # Python's sort is stable
    area = [(b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]) for i in range(n)]
    zero = b.dtype.type(0)
    suppressed = [False] * n
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            if suppressed[j] or (idxs is not None and idxs[i] != idxs[j]):
                continue
            w = max(zero, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(zero, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = inter / (area[i] + area[j] - inter)
            if float(iou) > thr:
                suppressed[j] = True
    return keep


def random_boxes(n, seed, dtype=torch.float32, span=100.0, size=40.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * span
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    boxes = torch.cat([xy, xy + wh], dim=1).to(dtype)
    scores = torch.rand(n, generator=g)
    return boxes, scores


def test_hand_case():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: score .9, kept
            [1.0, 1.0, 11.0, 11.0],  # 1: IoU with 0 = 81/119 = .68 -> suppressed at .5
            [20.0, 20.0, 30.0, 30.0],  # 2: disjoint, kept
            [0.0, 0.0, 10.0, 5.0],  # 3: IoU with 0 = .5 exactly -> NOT suppressed at .5
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.3, 0.5])
    keep = nms(boxes, scores, 0.5)
    assert keep.dtype == torch.int64
    assert keep.tolist() == [0, 3, 2]
    assert nms(boxes, scores, 0.49).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 3, 2]


def test_ties_keep_input_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [50.0, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes[[1, 0, 2]], scores, 0.5).tolist() == [0, 2]


def test_threshold_compared_as_double():
    # IoU is 1/10 in float32, i.e. 0.10000000149 > 0.1: torchvision suppresses. A naive
    # float32 comparison (iou > float32(0.1)) would keep both boxes.
    boxes = torch.tensor([[0.0, 0, 1, 1], [0.0, 0, 10, 1]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.1).tolist() == [0]
    # In float64 the IoU equals the threshold exactly: not suppressed.
    assert nms(boxes.double(), scores, 0.1).tolist() == [0, 1]


def test_empty_input():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_shape_errors():
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 0.95])
def test_matches_reference_on_random_boxes(dtype, thr):
    boxes, scores = random_boxes(200, seed=int(thr * 100), dtype=dtype)
    # Some duplicated scores and boxes to exercise ties.
    scores[::7] = 0.25
    boxes[5] = boxes[6]
    keep = nms(boxes, scores, thr)
    assert keep.tolist() == reference_nms(boxes, scores, thr)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_blocked_path_matches_reference():
    # More boxes than one block, so several blocks and cross-block suppression are used.
    boxes, scores = random_boxes(600, seed=3, span=60.0)
    assert nms(boxes, scores, 0.4).tolist() == reference_nms(boxes, scores, 0.4)


def test_batched_nms_categories_do_not_interact():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [0.5, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.tensor([0, 1, 0])
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5).tolist() == [0]


def test_batched_nms_negative_coordinates():
    # torchvision's offset (max + 1 = 1 here) would make these overlap; ours must not.
    boxes = torch.tensor([[-100.0, -100.0, 0.0, 0.0], [-100.0, -100.0, 0.0, 0.0]])
    scores = torch.tensor([0.9, 0.8])
    assert batched_nms(boxes, scores, torch.tensor([0, 1]), 0.5).tolist() == [0, 1]


def test_batched_nms_matches_reference_and_plain_nms():
    boxes, scores = random_boxes(400, seed=7)
    g = torch.Generator().manual_seed(1)
    idxs = torch.randint(0, 5, (400,), generator=g)
    keep = batched_nms(boxes, scores, idxs, 0.5)
    assert keep.tolist() == reference_nms(boxes, scores, 0.5, idxs.tolist())
    same = torch.zeros(400, dtype=torch.long)
    assert batched_nms(boxes, scores, same, 0.5).tolist() == nms(boxes, scores, 0.5).tolist()


def test_speed_3000_boxes():
    boxes, scores = random_boxes(3000, seed=11, span=1000.0, size=80.0)
    nms(boxes[:10], scores[:10], 0.7)  # warm-up
    t = time.perf_counter()
    keep = nms(boxes, scores, 0.7)
    elapsed = time.perf_counter() - t
    assert len(keep) > 100
    assert elapsed < 2.0, f"nms on 3000 boxes took {elapsed:.2f}s"
