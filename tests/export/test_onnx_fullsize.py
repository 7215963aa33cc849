"""Full-size ONNX exports checked against Meta's reference outputs (tests/data/PARITY.md).

MobileSAM: encoder + decoder exported and run in onnxruntime from the image. ViT-B: the decoder
(the same for every variant) fed Meta's reference embedding; the ViT-B encoder export takes
minutes on 2 cores and is measured by benchmarks/bench_onnx.py instead.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from samkit.export import export_onnx
from samkit.export.onnx_predictor import OnnxPredictor
from samkit.models import Sam

from ..conftest import DATA

pytestmark = pytest.mark.slow


def _case_prompts(name: str, args: dict, ref) -> list[dict]:
    """The predict() keyword arguments of a manifest prompt case (one per box if batched)."""
    if name == "batched_boxes":
        return [{"box": np.array(b), "multimask_output": False} for b in args["boxes"]]
    kw = {"multimask_output": args["multimask_output"]}
    if "point_coords" in args:
        kw["point_coords"] = np.array(args["point_coords"])
        kw["point_labels"] = np.array(args["point_labels"])
    if "box" in args:
        kw["box"] = np.array(args["box"])
    if name == "mask_input":
        kw["mask_input"] = ref["point.low_res_logits"][np.argmax(ref["point.iou"])][None]
    return [kw]


def _check_against_reference(predictor, arch, parity_manifest) -> None:
    ref = np.load(DATA / f"{arch}_prompts.npz")
    agreement, iou_diff = [], []
    for name, args in parity_manifest["archs"][arch]["prompt_cases"].items():
        for i, kw in enumerate(_case_prompts(name, args, ref)):
            masks, iou, low = predictor.predict(**kw)
            ref_masks, ref_iou, ref_low = (
                ref[f"{name}.{k}"] for k in ("masks", "iou", "low_res_logits")
            )
            if name == "batched_boxes":
                ref_masks, ref_iou, ref_low = ref_masks[i], ref_iou[i], ref_low[i]
            assert masks.shape == ref_masks.shape, name
            agreement.append((masks == ref_masks).mean())
            iou_diff.append(np.abs(iou - ref_iou).max())
            assert agreement[-1] >= 0.99, name
            assert iou_diff[-1] <= 1e-3, name
            assert np.abs(low - ref_low).max() <= 1e-3 * np.abs(ref_low).max(), name
    print(
        f"{arch} onnx vs Meta: pixel agreement min {min(agreement):.6f}, IoU diff max "
        f"{max(iou_diff):.1e}"
    )


def _int8_agreement(fp32: OnnxPredictor, int8: OnnxPredictor, h: int, w: int) -> tuple:
    """(min pixel agreement, mean pixel agreement, min IoU) over a 4 x 4 grid of clicks."""
    agreement, ious = [], []
    for y in np.linspace(h * 0.15, h * 0.85, 4):
        for x in np.linspace(w * 0.15, w * 0.85, 4):
            kw = {"point_coords": [[x, y]], "point_labels": [1], "multimask_output": False}
            a, b = fp32.predict(**kw)[0], int8.predict(**kw)[0]
            agreement.append((a == b).mean())
            ious.append((a & b).sum() / max((a | b).sum(), 1))
    return min(agreement), float(np.mean(agreement)), min(ious)


def test_mobile_sam_pair_matches_reference(seeded_mobile_sam, image_a, parity_manifest, tmp_path):
    paths = export_onnx(seeded_mobile_sam, tmp_path, quantize="decoder", name="mobile_sam")
    predictor = OnnxPredictor.from_export(tmp_path, image_format="RGB")
    predictor.set_image(image_a)
    ref_emb = np.load(DATA / "mobile_sam_prompts.npz")["embedding"]
    emb = predictor.get_image_embedding()[0]
    rel = np.abs(emb - ref_emb).max() / np.abs(ref_emb).max()
    print(f"mobile_sam onnx embedding vs Meta: max error {rel:.1e} of max |value|")
    assert rel <= 1e-3
    _check_against_reference(predictor, "mobile_sam", parity_manifest)

    int8 = OnnxPredictor(None, paths["decoder_int8"])
    int8.set_image_embedding(predictor.features, image_a.shape[:2])
    low, mean, iou = _int8_agreement(predictor, int8, *image_a.shape[:2])
    print(f"mobile_sam int8 decoder: agreement min {low:.4f} mean {mean:.4f}, IoU min {iou:.4f}")
    assert low >= 0.9 and mean >= 0.95


def test_sam_b_decoder_matches_reference(seeded_sam_b, image_a, parity_manifest, tmp_path):
    export_onnx(seeded_sam_b, tmp_path, encoder=False, name="sam_b")
    predictor = OnnxPredictor.from_export(tmp_path)
    embedding = np.load(DATA / "sam_b_prompts.npz")["embedding"][None]
    predictor.set_image_embedding(embedding, image_a.shape[:2])
    _check_against_reference(predictor, "sam_b", parity_manifest)


def test_int8_decoder_with_trained_weights(seeded_sam_b, image_a, tmp_path):
    """Quantization error on the fixture decoder trained on shapes (compact, meaningful masks)."""
    trained = torch.load(DATA / "sam_b_shapes_decoder.pt", weights_only=True)
    sam = Sam(
        seeded_sam_b.image_encoder,  # shared, not modified
        copy.deepcopy(seeded_sam_b.prompt_encoder),
        copy.deepcopy(seeded_sam_b.mask_decoder),
    ).eval()
    missing, unexpected = sam.load_state_dict(trained, strict=False)
    assert not unexpected and all(k.startswith("image_encoder.") for k in missing)
    paths = export_onnx(sam, tmp_path, encoder=False, quantize="decoder", name="shapes")
    embedding = np.load(DATA / "sam_b_prompts.npz")["embedding"][None]
    fp32, int8 = OnnxPredictor(None, paths["decoder"]), OnnxPredictor(None, paths["decoder_int8"])
    for predictor in (fp32, int8):
        predictor.set_image_embedding(embedding, image_a.shape[:2])
    low, mean, iou = _int8_agreement(fp32, int8, *image_a.shape[:2])
    print(f"trained decoder int8: agreement min {low:.4f} mean {mean:.4f}, IoU min {iou:.4f}")
    assert low >= 0.95 and iou >= 0.8
