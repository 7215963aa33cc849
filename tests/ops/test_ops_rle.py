import numpy as np
import pycocotools.mask as cocomask
import pytest
import torch

from samkit.ops import (
    area_from_rle,
    coco_to_rle,
    encode_coco_rle,
    mask_to_rle,
    masks_to_rle_torch,
    rle_to_coco,
    rle_to_mask,
)
from samkit.ops.rle import _batch_counts_torch


def coco_encode(mask: np.ndarray) -> dict:
    return cocomask.encode(np.asfortranarray(mask.astype(np.uint8)))


def reference_counts(mask: np.ndarray) -> list[int]:
    """Run lengths by walking the column-major pixels one by one."""
    counts, cur, run = [], False, 0
    for v in mask.T.reshape(-1).tolist():
        if bool(v) != cur:
            counts.append(run)
            cur, run = bool(v), 0
        run += 1
    counts.append(run)
    return counts


def sample_masks():
    rng = np.random.default_rng(0)
    out = {}
    for h, w in [(1, 1), (1, 9), (7, 1), (5, 7), (13, 31), (64, 48)]:
        out[f"empty{h}x{w}"] = np.zeros((h, w), bool)
        out[f"full{h}x{w}"] = np.ones((h, w), bool)
        for p in (0.1, 0.5, 0.9):
            out[f"rand{p}_{h}x{w}"] = rng.random((h, w)) < p
        one = np.zeros((h, w), bool)
        one[h // 2, w // 2] = True
        out[f"pixel{h}x{w}"] = one
        first = rng.random((h, w)) < 0.5
        first[0, 0] = True
        out[f"starts1_{h}x{w}"] = first
        last = np.zeros((h, w), bool)
        last[-1, -1] = True
        out[f"last_pixel{h}x{w}"] = last
    # Long runs: counts needing several 5-bit groups and negative deltas.
    big = np.zeros((480, 640), bool)
    big[10:400, 5:600] = True
    big[200:210, 300:310] = False
    big[470:, 630:] = True
    out["big_rects"] = big
    return out


MASKS = sample_masks()


@pytest.mark.parametrize("name", list(MASKS))
def test_roundtrip_against_pycocotools(name):
    mask = MASKS[name]
    h, w = mask.shape
    rle = mask_to_rle(mask)
    assert rle["size"] == [h, w]
    assert rle["counts"] == reference_counts(mask)
    assert sum(rle["counts"]) == h * w

    ref = coco_encode(mask)
    ours = encode_coco_rle(mask)
    assert isinstance(ours["counts"], str)
    assert ours == {"size": [h, w], "counts": ref["counts"].decode("ascii")}
    assert rle_to_coco(rle) == ours

    # Decoding pycocotools' bytes and our string gives the mask back.
    assert coco_to_rle(ref) == rle
    assert coco_to_rle(ours) == rle
    np.testing.assert_array_equal(rle_to_mask(ref), mask)
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    decoded = rle_to_mask(ours)
    assert decoded.dtype == bool and decoded.shape == (h, w)
    np.testing.assert_array_equal(decoded, mask)

    # Our uncompressed counts are what pycocotools compresses to the same string.
    assert cocomask.frPyObjects(rle, h, w)["counts"] == ref["counts"]
    assert area_from_rle(rle) == area_from_rle(ours) == int(cocomask.area(ref)) == mask.sum()


def test_hand_case():
    # Column-major: column 0 = [0, 1], column 1 = [1, 1], column 2 = [0, 0].
    mask = np.array([[0, 1, 0], [1, 1, 0]], dtype=bool)
    assert mask_to_rle(mask) == {"size": [2, 3], "counts": [1, 3, 2]}
    assert mask_to_rle(torch.from_numpy(mask)) == {"size": [2, 3], "counts": [1, 3, 2]}
    assert mask_to_rle(np.ones((2, 2), bool))["counts"] == [0, 4]
    assert mask_to_rle(np.zeros((2, 2), bool))["counts"] == [4]


def test_string_codec_known_values():
    # COCO string for counts [0, 35]: 0 -> "0"; 35 = 0b1_00011 -> groups 3|0x20, 1 -> "S1".
    assert rle_to_coco({"size": [5, 7], "counts": [0, 35]})["counts"] == "0S1"
    assert coco_to_rle({"size": [5, 7], "counts": b"0S1"})["counts"] == [0, 35]
    # Deltas from the fourth count on: [5, 5, 5, 3] stores 3 as 3 - 5 = -2, one group
    # -2 & 0x1F = 30 (sign bit 0x10 set, nothing more) -> chr(48 + 30) = "N".
    assert rle_to_coco({"size": [1, 18], "counts": [5, 5, 5, 3]})["counts"] == "555N"
    assert coco_to_rle({"size": [1, 18], "counts": "555N"})["counts"] == [5, 5, 5, 3]


def test_batch_matches_single_and_pycocotools():
    g = torch.Generator().manual_seed(0)
    b, h, w = 6, 37, 29
    masks = torch.zeros(b, h, w, dtype=torch.bool)
    masks[0] = torch.rand(h, w, generator=g) > 0.5
    masks[1, 5:20, 3:9] = True
    masks[2, 0, 0] = True  # starts with 1
    masks[3] = True  # full; masks[4] stays empty
    masks[5, -1, -1] = True
    rles = masks_to_rle_torch(masks)
    assert len(rles) == b
    for m, rle in zip(masks, rles):
        arr = m.numpy()
        assert rle == mask_to_rle(arr)
        assert rle_to_coco(rle)["counts"] == coco_encode(arr)["counts"].decode()
    # The all-masks-at-once path used on accelerators gives the same counts (run on CPU here).
    assert _batch_counts_torch(masks) == [r["counts"] for r in rles]
    assert _batch_counts_torch(masks.to(torch.uint8)) == [r["counts"] for r in rles]
    assert masks_to_rle_torch(masks.to(torch.uint8)) == rles


def test_batch_edge_shapes():
    assert masks_to_rle_torch(torch.zeros(0, 4, 4, dtype=torch.bool)) == []
    rles = masks_to_rle_torch(torch.ones(2, 1, 1, dtype=torch.bool))
    assert rles == [{"size": [1, 1], "counts": [0, 1]}] * 2
    with pytest.raises(ValueError):
        masks_to_rle_torch(torch.zeros(4, 4, dtype=torch.bool))


def test_rle_to_mask_rejects_bad_counts():
    with pytest.raises(ValueError, match="sum"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError):
        rle_to_mask({"size": [2, 2], "counts": "0 !"})
    with pytest.raises(ValueError):
        rle_to_mask({"counts": [4]})
