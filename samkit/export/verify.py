"""Run exported graphs in onnxruntime and compare them with the torch model they came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from ..models import Sam
from ..predict.geometry import normalize_and_pad, resize_longest_side

EMBEDDING_REL_TOL = 1e-3  # max |onnx - torch| / max |torch| of the image embedding
MASK_AGREEMENT_MIN = 0.99  # fraction of equal mask pixels, per prompt and mask


def probe_image(size: int) -> np.ndarray:
    """A deterministic ``3/4 S x S`` RGB uint8 image: noise, a rectangle and a disc."""
    h, w = 3 * size // 4, size
    rng = np.random.default_rng(0)
    img = (rng.random((h, w, 3)) * 60 + 90).astype(np.uint8)
    img[h // 6 : h // 2, w // 8 : w // 3] = (220, 40, 40)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 2 * h // 3) ** 2 + (xx - 2 * w // 3) ** 2 < (h // 5) ** 2] = (40, 200, 60)
    return img


def probe_prompts(h: int, w: int) -> list[dict[str, np.ndarray]]:
    """Point, box, points + box, and fg + bg prompts for an ``h x w`` image (original pixels)."""
    box = np.array([w / 8, h / 6, w / 3, h / 2])
    return [
        {"point_coords": np.array([[w * 2 / 3, h * 2 / 3]]), "point_labels": np.array([1])},
        {"box": box},
        {
            "point_coords": np.array([[w / 5, h / 3], [w / 2, h / 2]]),
            "point_labels": np.array([1, 0]),
            "box": box,
        },
        {"point_coords": np.array([[w / 5, h / 3], [w * 0.9, h * 0.1]]), "point_labels": [1, 0]},
    ]


def compare_masks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(pixel agreement, IoU) of two boolean mask stacks (IoU 1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    iou = float(np.logical_and(a, b).sum() / union) if union else 1.0
    return float((a == b).mean()), iou


def torch_reference(predictor: Any, prompt: dict, mask_output: str, multimask: bool) -> tuple:
    """What the exported decoder must return for ``prompt``, from the torch predictor."""
    if mask_output != "best":
        return predictor.predict(**prompt, multimask_output=multimask)
    masks, iou, low = predictor.predict(**prompt, multimask_output=True)
    n_points = len(prompt.get("point_coords", [])) + (2 if "box" in prompt else 1)
    if n_points > 2:  # Meta's rule: token 0 for more than one click (or box + click)
        return predictor.predict(**prompt, multimask_output=False)
    best = int(np.argmax(iou))
    return masks[best : best + 1], iou[best : best + 1], low[best : best + 1]


def verify_export(sam: Sam, written: dict[str, Path], image: np.ndarray | None = None) -> dict:
    """Compare every exported graph in ``written`` with ``sam``; raise if an fp32 graph is off.

    Returns ``{"encoder": {"embedding_rel_err"}, "decoder": {"mask_agreement_min",
    "mask_agreement_mean", "mask_iou_min", "iou_max_abs_diff"}, "encoder_int8": ...,
    "decoder_int8": ...}``. Decoders are fed torch's embedding, so their numbers measure the
    decoder alone; ``encoder_int8`` adds the masks of the fp32 decoder on its embedding.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError("verify needs onnxruntime: pip install 'samkit[onnx]'") from e
    from ..predict.sam_predictor import SamPredictor
    from .onnx import pixel_stats
    from .onnx_predictor import OnnxPredictor

    image = probe_image(sam.image_size) if image is None else image
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    ref = predictor.features.float().cpu().numpy()
    report: dict[str, Any] = {}
    for key in ("encoder", "encoder_int8"):
        if key in written:
            session = ort.InferenceSession(str(written[key]), providers=["CPUExecutionProvider"])
            x = resize_longest_side(image, sam.image_size)
            x = normalize_and_pad(x, sam.image_size, *pixel_stats(sam))
            emb = session.run(None, {session.get_inputs()[0].name: x})[0]
            err = float(np.abs(emb - ref).max() / np.abs(ref).max())
            report[key] = {"embedding_rel_err": err}
            if key == "encoder_int8" and "decoder" in written:  # masks from the int8 embedding
                decoder = OnnxPredictor(None, written["decoder"])
                report[key].update(_verify_decoder(predictor, decoder, emb, image))
    for key in ("decoder", "decoder_int8"):
        if key in written:
            report[key] = _verify_decoder(predictor, OnnxPredictor(None, written[key]), ref, image)
    failures = []
    if "encoder" in report and report["encoder"]["embedding_rel_err"] > EMBEDDING_REL_TOL:
        failures.append(f"encoder embedding relative error {report['encoder']}")
    if "decoder" in report and report["decoder"]["mask_agreement_min"] < MASK_AGREEMENT_MIN:
        failures.append(f"decoder mask agreement {report['decoder']}")
    if failures:
        raise ExportError("the exported ONNX graphs disagree with torch: " + "; ".join(failures))
    return report


def _verify_decoder(torch_pred: Any, onnx_pred: Any, embedding: np.ndarray, image: np.ndarray):
    onnx_pred.set_image_embedding(embedding, image.shape[:2])
    modes = {"all": (True, False), "multi": (True,)}.get(onnx_pred.mask_output, (False,))
    agreement, ious, iou_diff = [], [], []
    for prompt in probe_prompts(*image.shape[:2]):
        for multimask in modes:
            masks, iou, _ = onnx_pred.predict(**prompt, multimask_output=multimask)
            ref_masks, ref_iou, _ = torch_reference(
                torch_pred, prompt, onnx_pred.mask_output, multimask
            )
            agree, mask_iou = compare_masks(masks, ref_masks)
            agreement.append(agree)
            ious.append(mask_iou)
            iou_diff.append(float(np.abs(iou - ref_iou).max()))
    return {
        "mask_agreement_min": min(agreement),
        "mask_agreement_mean": float(np.mean(agreement)),
        "mask_iou_min": min(ious),
        "iou_max_abs_diff": max(iou_diff),
    }
