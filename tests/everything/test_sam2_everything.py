"""SAM 2 segment-everything against Meta's SAM2AutomaticMaskGenerator records
(tests/data/sam2/sam2.1_t_amg_image_b.json, seeded hiera_t), plus the hole / speck clean-up
(``min_mask_region_area``) on hand-made masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samkit.everything.sam2 import Sam2AmgParams, Sam2AutomaticMaskGenerator
from samkit.ops.regions import fill_holes_and_sprinkles
from samkit.ops.rle import rle_to_mask
from samkit.predict.sam2_predictor import Sam2Predictor

from ..sam2_helpers import DATA, IMAGE_B, TINY, load_rgb, seeded_arch, seeded_sam2

FIXTURE = json.loads((DATA / "sam2.1_t_amg_image_b.json").read_text())


def test_defaults_are_sam2s():
    p = Sam2AmgParams()
    assert (p.points_per_side, p.points_per_batch, p.pred_iou_thresh) == (32, 64, 0.8)
    assert (p.stability_score_thresh, p.stability_score_offset, p.mask_threshold) == (
        0.95,
        1.0,
        0.0,
    )
    assert (p.box_nms_thresh, p.crop_n_layers, p.use_m2m, p.multimask_output) == (
        0.7,
        0,
        False,
        True,
    )


def test_unknown_argument_names_the_valid_ones():
    with pytest.raises(TypeError, match="pred_iou_thresh"):
        Sam2AutomaticMaskGenerator(seeded_sam2(TINY), conf_thres=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FIXTURE))
def test_matches_reference_records(name):
    torch.set_num_threads(1)
    cfg = FIXTURE[name]
    image = load_rgb(IMAGE_B)
    gen = Sam2AutomaticMaskGenerator(
        seeded_arch("hiera_t"), output_mode="uncompressed_rle", **cfg["params"]
    )
    ours = gen.generate(image)
    ref = [dict(r, segmentation=rle_to_mask(r["segmentation"])) for r in cfg["records"]]
    mine = [dict(r, segmentation=rle_to_mask(r["segmentation"])) for r in ours]
    pairs = _match(ref, mine)
    assert len(pairs) >= 0.98 * len(ref)
    assert len(mine) - len(pairs) <= 0.02 * len(ref)
    for i, j, _ in pairs:
        assert abs(ref[i]["predicted_iou"] - mine[j]["predicted_iou"]) <= 1e-3
        assert abs(ref[i]["stability_score"] - mine[j]["stability_score"]) <= 1e-3
        assert mine[j]["crop_box"] == pytest.approx(ref[i]["crop_box"])
        assert mine[j]["point_coords"][0] == pytest.approx(ref[i]["point_coords"][0])
        assert mine[j]["bbox"] == pytest.approx(ref[i]["bbox"], abs=1.0)
        assert mine[j]["area"] == pytest.approx(ref[i]["area"], rel=0.02)


def _match(ref: list[dict], ours: list[dict], min_iou: float = 0.98):
    """One-to-one matching at mask IoU >= ``min_iou``, preferring pairs made from the same
    point (masks can repeat: m2m refines the 3 masks of a point into near-copies)."""
    if not ref or not ours:
        return []
    a = np.stack([r["segmentation"].ravel() for r in ref]).astype(np.float32)
    b = np.stack([r["segmentation"].ravel() for r in ours]).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    pa = np.array([r["point_coords"][0] for r in ref])
    pb = np.array([r["point_coords"][0] for r in ours])
    same = (np.abs(pa[:, None] - pb[None]).max(-1) < 1e-3).astype(np.float32)
    diff_iou = np.abs(
        np.array([r["predicted_iou"] for r in ref])[:, None]
        - np.array([r["predicted_iou"] for r in ours])[None]
    )
    key = (iou >= min_iou) * 4.0 + same * 2.0 + (diff_iou < 1e-3) + iou * 0.5
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-key, axis=None):
        i, j = divmod(int(flat), key.shape[1])
        if iou[i, j] < min_iou:
            continue
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, float(iou[i, j])))
    return pairs


def _logits(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.where(mask, 8.0, -8.0).astype(np.float32))[None, None]


def test_fill_holes_and_sprinkles_hand_made():
    m = np.zeros((40, 40), bool)
    m[5:30, 5:30] = True  # an object
    m[10:12, 10:12] = False  # a 4-pixel hole
    m[15:22, 15:22] = False  # a 49-pixel hole
    m[35, 35] = True  # a 1-pixel speck
    m[33:36, 2:5] = True  # a 9-pixel speck
    m[0, 39] = True  # a speck in the corner
    out = fill_holes_and_sprinkles(_logits(m), 0.0, max_hole_area=9, max_sprinkle_area=9)[0, 0]
    fg = out.numpy() > 0
    expect = m.copy()
    expect[10:12, 10:12] = True  # small hole filled
    expect[35, 35] = expect[0, 39] = False
    expect[33:36, 2:5] = False  # area 9 <= 9: removed
    np.testing.assert_array_equal(fg, expect)
    assert not fg[15:22, 15:22].any()  # the large hole stays
    # filled / removed pixels get threshold +- 10, the rest is untouched
    assert out[10, 10] == 10.0 and out[35, 35] == -10.0 and out[20, 6] == 8.0
    # background touching the border counts as a hole if it is small enough
    ring = np.ones((20, 20), bool)
    ring[0, 0] = False
    assert (fill_holes_and_sprinkles(_logits(ring), 0.0, 1, 0)[0, 0] > 0).all()
    # 8-connectivity: two diagonal pixels are one 2-pixel speck
    diag = np.zeros((10, 10), bool)
    diag[3, 3] = diag[4, 4] = True
    kept = fill_holes_and_sprinkles(_logits(diag), 0.0, 0, 1)[0, 0] > 0
    assert kept[3, 3] and kept[4, 4]
    # specks are found on the input, so a filled hole is never removed as a speck
    hole = np.ones((10, 10), bool)
    hole[4:6, 4:6] = False
    both = fill_holes_and_sprinkles(_logits(hole), 0.0, 4, 4)[0, 0] > 0
    assert both.all()
    # the threshold is the given one
    t = fill_holes_and_sprinkles(_logits(m) - 5.0, -4.0, 9, 9)[0, 0]
    np.testing.assert_array_equal(t.numpy() > -4.0, expect)


def test_min_mask_region_area_reaches_the_masks():
    """The generator's predictor cleans the low-res logits before upsampling."""
    gen = Sam2AutomaticMaskGenerator(seeded_sam2(TINY), points_per_side=2, min_mask_region_area=25)
    assert gen.predictor.max_hole_area == 25 and gen.predictor.max_sprinkle_area == 25
    pred = Sam2Predictor(seeded_sam2(TINY), max_hole_area=3, max_sprinkle_area=3)
    rng = np.random.default_rng(0)
    pred.set_image(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    m = np.zeros((64, 64), bool)
    m[8:40, 8:40] = True
    m[20, 20] = False
    m[50, 50] = True
    low = _logits(m)
    cleaned = pred.clean_low_res(low)[0, 0] > 0
    assert cleaned[20, 20] and not cleaned[50, 50]


def test_high_level_call_without_prompts_uses_sam2_generator():
    from samkit import SAM
    from samkit.errors import SamkitError

    model = SAM.from_config(TINY, seeded=True, precision="fp32")
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    kw = dict(
        points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    r = model(image, image_format="RGB", **kw)[0]
    recs = Sam2AutomaticMaskGenerator(model.model, **kw).generate(image)
    assert len(r.masks) == len(recs) > 1
    order = sorted(range(len(recs)), key=lambda i: -recs[i]["area"])
    for k, i in enumerate(order):
        np.testing.assert_array_equal(r.masks[k], recs[i]["segmentation"])
        assert r.scores[k] == pytest.approx(recs[i]["predicted_iou"])
    # Ultralytics' names are aliases of SAM 2's
    alias = model(
        image,
        image_format="RGB",
        points_stride=8,
        conf_thres=0.0,
        iou=1.0,
        stability_score_thresh=0.0,
    )[0]
    assert len(alias.masks) == len(r.masks)
    with pytest.raises(SamkitError, match="pred_iou_thresh"):
        model(image, bogus=1)
