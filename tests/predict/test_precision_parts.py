"""Precision per part: what "auto" picks, that prompts stay on the exact fp32 fast decoder, and
the agreement of the bf16 parts with fp32 on the fixtures (mean mask IoU >= 0.95).

The agreement tests run the seeded ViT-B with the decoder trained on shapes
(``tests/data/sam_b_shapes_decoder.pt``) on ``image_b``, in fp32 and with what "auto" picks on
a CPU with native bf16 (encoder and everything decoder in bf16). They are skipped on CPUs that
only emulate bf16 (~10x slower there, and "auto" does not pick it).
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch

from samkit import precision as prec
from samkit.errors import SamkitError
from samkit.everything import everything_dtypes
from samkit.everything.automatic import SamAutomaticMaskGenerator
from samkit.models import Sam
from samkit.ops.rle import rle_to_mask
from samkit.predict.predictor import Predictor

from ..conftest import DATA, synthetic_image, tiny_model
from .test_precision import DECODABLE

MEAN_IOU = 0.95
AMG_PARAMS = json.loads((DATA / "sam_b_amg.json").read_text())["grid16"]["params"]


@pytest.fixture
def native(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(prec, "device_has_native_bf16", lambda device: value)

    return set_native


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_picks_per_part(native, has_bf16):
    native(has_bf16)
    parts = prec.resolve_parts("auto")
    if has_bf16:
        assert parts == prec.PartPrecision("bf16", "bf16", "bf16")
        assert str(parts) == "bf16"
        mixed = prec.resolve_parts({"prompt_decoder": "fp32"})
        assert str(mixed) == "encoder=bf16, prompt_decoder=fp32, everything_decoder=bf16"
    else:
        assert parts == prec.PartPrecision("fp32", "fp32", "fp32")
        assert str(parts) == "fp32"
    assert prec.resolve_parts(None) == prec.PartPrecision()
    assert prec.resolve_parts("FP32") == prec.PartPrecision()
    assert prec.resolve_precision("auto") == ("bf16" if has_bf16 else "fp32")
    assert everything_dtypes("auto", torch.device("cpu")) == (
        (torch.bfloat16, torch.bfloat16) if has_bf16 else (torch.float32, torch.float32)
    )
    # CUDA keeps the decoders in fp32 (auto_part's rule)
    assert prec.auto_part("everything_decoder", "cuda") == ("fp32")
    assert prec.auto_part("prompt_decoder", "cuda") == ("fp32")


def test_narrow_models_stay_fp32_under_auto(native):
    """The width rule: a mask decoder narrower than MIN_BF16_WIDTH keeps every part in fp32
    under "auto" (the demo model, 128 wide, is slower in bf16), explicit bf16 is honoured."""
    from samkit import SAM

    native(True)
    demo = SAM("samkit-demo")
    assert prec.model_width(demo) == 128 and prec.model_width(demo.model) == 128
    assert prec.resolve_parts("auto", "cpu", demo) == prec.PartPrecision()
    assert prec.resolve_precision("auto", "cpu", demo) == "fp32"
    assert everything_dtypes("auto", "cpu", demo) == (torch.float32, torch.float32)
    assert prec.resolve_parts({"prompt_decoder": "bf16"}, "cpu", demo).prompt_decoder == "bf16"
    pred = Predictor(demo, image_format="RGB")  # the model's own precision: "auto"
    assert pred.dtype == pred.decoder_dtype == torch.float32
    wide = tiny_model(DECODABLE["vit"])
    wide.mask_decoder.transformer_dim = 256  # (only the width is read)
    assert prec.resolve_parts("auto", "cpu", wide) == prec.PartPrecision("bf16", "bf16", "bf16")
    assert prec.model_width(object()) is None


def test_mapping_sets_parts_and_rejects_unknown_ones(native):
    native(True)
    parts = prec.resolve_parts({"encoder": "fp32", "prompt_decoder": "bf16"})
    assert parts == prec.PartPrecision("fp32", "bf16", "bf16")  # the missing part is auto
    assert prec.resolve_parts(parts) is parts
    assert prec.resolve_precision({"encoder": "bf16"}) == "bf16"
    with pytest.raises(SamkitError, match="unknown model part.*'decoder'"):
        prec.resolve_parts({"decoder": "bf16"})
    with pytest.raises(SamkitError, match="precision must be one of"):
        prec.resolve_parts({"encoder": "fp16"})


def test_explicit_bf16_warns_where_emulated(native):
    native(False)
    with pytest.warns(prec.SlowPrecisionWarning):
        assert prec.resolve_parts({"prompt_decoder": "bf16"}).prompt_decoder == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prec.resolve_parts("auto") == prec.PartPrecision()


def test_auto_prompts_use_the_point_decoder_in_bf16(native, monkeypatch):
    """With native bf16, "auto" decodes prompts with the fast point decoder in its bf16 mode
    (not the module decoder under autocast): the same numbers as calling that decoder
    directly, the deferred low-res logits completed in bf16 too, and masks close to fp32's;
    ``prompt_decoder="fp32"`` keeps the exact path."""
    from samkit.predict.fast_decode import PointDecoder
    from samkit.predict.transforms import scale_boxes

    native(True)
    sam = tiny_model(DECODABLE["vit"]).eval()
    monkeypatch.setattr(prec, "MIN_BF16_WIDTH", 0)  # the tiny model counts as wide here
    image = synthetic_image(96, 128)
    auto = Predictor(sam, precision="auto", image_format="RGB")
    exact = Predictor(sam, precision={"prompt_decoder": "fp32"}, image_format="RGB")
    assert auto.dtype == torch.bfloat16 and auto.decoder_dtype == torch.bfloat16
    assert exact.decoder_dtype == torch.float32
    auto.set_image(image)
    assert auto.features.dtype == torch.float32
    exact.set_embedding(auto.cache.get(auto.cache_key(image)), image)
    boxes = [[10, 12, 70, 60], [40, 30, 120, 90]]
    a, b = auto(bboxes=boxes, multimask_output=True), exact(bboxes=boxes, multimask_output=True)
    sp = auto.sam_predictor
    assert set(sp._point_decoders) == {torch.bfloat16}  # the module decoder was not used
    assert set(exact.sam_predictor._point_decoders) == {torch.float32}
    # the same numbers as the bf16 point decoder called directly
    direct = PointDecoder(sam, dtype=torch.bfloat16)
    direct.set_features(auto.features)
    with torch.inference_mode():
        scaled = scale_boxes(np.asarray(boxes, np.float64), sp.original_size, sp.input_size)
        scaled = torch.as_tensor(scaled)
        sparse, _ = sam.prompt_encoder(None, scaled, None)
        low, iou = direct.decode_sparse(sparse, True, chunk=2)
    np.testing.assert_allclose(a.scores, iou.flatten().numpy(), rtol=0, atol=1e-6)
    # (the call upscales the image region and completes the rest later: products of other
    # shapes, so bf16 roundings may differ by an ulp on other CPUs)
    full = low.flatten(0, 1).numpy()
    np.testing.assert_allclose(np.asarray(a.low_res_logits), full, atol=1e-2 * np.abs(full).max())
    # bf16 against fp32: close, not equal
    assert np.abs(a.scores - b.scores).max() < 0.05
    agree = (a.masks == b.masks).mean()
    assert agree > 0.97, agree


# -- agreement with fp32 on the fixtures (native bf16 only) -------------------------------------
needs_native = pytest.mark.skipif(
    not prec.cpu_has_native_bf16(), reason="this CPU only emulates bf16 ('auto' keeps fp32)"
)


@pytest.fixture(scope="module")
def shapes_model(seeded_sam_b):
    sam = Sam(
        seeded_sam_b.image_encoder,
        copy.deepcopy(seeded_sam_b.prompt_encoder),
        copy.deepcopy(seeded_sam_b.mask_decoder),
    ).eval()
    state = torch.load(DATA / "sam_b_shapes_decoder.pt", weights_only=True)
    sam.load_state_dict(state, strict=False)
    return sam


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def everything(shapes_model, image_b) -> dict[str, list]:
    """Segment-everything records in fp32 and in what "auto" picks (the fixture's "grid16"
    parameters of ``sam_b_amg.json``: 16 x 16 points, the filters the fixture decoder passes)."""
    params = AMG_PARAMS
    out = {}
    for p in ("fp32", "auto"):
        gen = SamAutomaticMaskGenerator(
            shapes_model, output_mode="uncompressed_rle", precision=p, **params
        )
        out[p] = gen.generate(image_b)
    return out


@needs_native
@pytest.mark.slow
def test_auto_prompts_agree_with_fp32(shapes_model, image_b, everything):
    """Box prompts around the objects fp32 found (XYWH -> XYXY), fp32 vs "auto"."""
    records = sorted(everything["fp32"], key=lambda r: -r["area"])[:8]
    assert records
    box_arr = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)])
    out = {}
    for p in ("fp32", "auto"):
        pred = Predictor(shapes_model, precision=p, image_format="RGB")
        pred.set_image(image_b)
        out[p] = pred(bboxes=box_arr).masks
    ious = [_iou(out["fp32"][i], out["auto"][i]) for i in range(len(box_arr))]
    assert np.mean(ious) >= MEAN_IOU, ious


@needs_native
@pytest.mark.slow
def test_auto_everything_agrees_with_fp32(everything):
    """Each fp32 mask against its best bf16 match (a mask bf16 loses counts as IoU 0)."""
    out = {p: [rle_to_mask(r["segmentation"]) for r in recs] for p, recs in everything.items()}
    assert len(out["fp32"]) > 5  # the fixture decoder finds masks
    best = [max((_iou(m, o) for o in out["auto"]), default=0.0) for m in out["fp32"]]
    back = [max((_iou(m, o) for o in out["fp32"]), default=0.0) for m in out["auto"]]
    assert np.mean(best) >= MEAN_IOU, (len(out["fp32"]), len(out["auto"]), np.round(best, 3))
    assert np.mean(back) >= MEAN_IOU, (len(out["fp32"]), len(out["auto"]), np.round(back, 3))
