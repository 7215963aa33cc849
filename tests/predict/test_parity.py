"""Numerical parity with Meta's reference on its fixtures (seeded weights, fp32)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samkit.predict.sam_predictor import SamPredictor
from samkit.predict.transforms import resize_longest_side, scale_boxes
from samkit.zoo.registry import VARIANTS
from samkit.zoo.seeded import seeded_state_dict

from ..conftest import DATA


def _check_case(name, args, ref, predictor):
    kw = {"multimask_output": args["multimask_output"]}
    if "point_coords" in args:
        kw["point_coords"] = np.array(args["point_coords"])
        kw["point_labels"] = np.array(args["point_labels"])
    if "box" in args:
        kw["box"] = np.array(args["box"])
    if name == "mask_input":
        kw["mask_input"] = ref["point.low_res_logits"][np.argmax(ref["point.iou"])][None]
    if name == "batched_boxes":
        boxes = scale_boxes(
            torch.tensor(args["boxes"]), predictor.original_size, predictor.input_size
        )
        masks, iou, low = predictor.predict_torch(None, None, boxes, multimask_output=False)
        masks, iou, low = masks.numpy(), iou.numpy(), low.numpy()
    else:
        masks, iou, low = predictor.predict(**kw)
    ref_masks, ref_iou, ref_low = (
        ref[f"{name}.masks"],
        ref[f"{name}.iou"],
        ref[f"{name}.low_res_logits"],
    )
    assert masks.shape == ref_masks.shape and masks.dtype == np.bool_
    assert np.abs(iou - ref_iou).max() <= 1e-4, name
    assert np.abs(low - ref_low).max() <= 1e-3 * np.abs(ref_low).max(), name
    assert (masks == ref_masks).mean() >= 0.999, name


@pytest.mark.parametrize("arch", ["mobile_sam", "sam_b"])
def test_parity_with_reference(arch, request, image_a, parity_manifest):
    model = request.getfixturevalue(f"seeded_{arch}")
    ref = np.load(DATA / f"{arch}_prompts.npz")

    resized = resize_longest_side(image_a, 1024)
    np.testing.assert_array_equal(resized, ref["resized_input"])

    predictor = SamPredictor(model)
    predictor.set_image(image_a)
    emb = predictor.features[0].numpy()
    assert emb.shape == (256, 64, 64)
    assert np.abs(emb - ref["embedding"]).max() <= 1e-4 * np.abs(ref["embedding"]).max()

    cases = parity_manifest["archs"][arch]["prompt_cases"]
    assert set(cases) == {
        "point",
        "fg_bg_points",
        "box",
        "box_and_neg_point",
        "mask_input",
        "batched_boxes",
    }
    for fast in (True, False):  # PointDecoder.decode_sparse, then Meta's module decoder
        predictor.fast_decoder = fast
        for name, args in cases.items():
            _check_case(name, args, ref, predictor)


def test_bgr_input_matches_rgb(seeded_mobile_sam, image_a):
    p = SamPredictor(seeded_mobile_sam)
    p.set_image(image_a)
    rgb = p.features.clone()
    p.set_image(np.ascontiguousarray(image_a[..., ::-1]), image_format="BGR")
    assert torch.equal(rgb, p.features)


@pytest.mark.parametrize("arch", ["sam_b", "mobile_sam", "sam_l", "sam_h"])
def test_keys_and_shapes_equal_reference_lists(arch):
    expected = json.loads((DATA / "keys.json").read_text())[arch]
    with torch.device("meta"):
        model = VARIANTS[arch].config.build()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: v[0] for k, v in expected.items()}


def test_seeded_recipe_matches_manifest(parity_manifest):
    for arch in ("sam_b", "mobile_sam"):
        with torch.device("meta"):
            template = VARIANTS[arch].config.build().state_dict()
        sd = seeded_state_dict(template)
        info = parity_manifest["archs"][arch]
        for key, value in info["sample_keys"].items():
            assert float(sd[key].double().sum()) == pytest.approx(value, rel=1e-9)
        total = sum(float(v.double().sum()) for v in sd.values())
        assert total == pytest.approx(info["weights_sum"], rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sam_l", "sam_h"])
def test_large_vits_load_strictly_and_run(arch, tmp_path):
    from samkit import SAM

    with torch.device("meta"):
        template = VARIANTS[arch].config.build().state_dict()
    path = tmp_path / "weights.pth"
    torch.save(seeded_state_dict(template), path)
    del template
    model = SAM(path)
    assert model.name == arch
    predictor = SamPredictor(model.model)
    image = np.full((64, 96, 3), 127, np.uint8)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 256, 64, 64)
    assert torch.isfinite(predictor.features).all()
    masks, iou, _ = predictor.predict(box=np.array([10, 10, 50, 40]), multimask_output=False)
    assert masks.shape == (1, 64, 96)
