"""SAM 2 ONNX export (three-output encoder + decoder) run in onnxruntime against torch, and the
torch-free Sam2OnnxPredictor (also against Meta's fixtures for hiera_t)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from samkit import SAM
from samkit.predict.sam2_predictor import Sam2Predictor

from ..sam2_helpers import IMAGE_A, MANIFEST, NPZ, TINY, load_rgb

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

PROMPTS = [
    dict(point_coords=np.array([[60.0, 50.0]]), point_labels=np.array([1]), multimask_output=True),
    dict(
        point_coords=np.array([[60.0, 50.0], [20.0, 90.0]]),
        point_labels=np.array([1, 0]),
        multimask_output=False,
    ),
    dict(box=np.array([30.0, 20.0, 120.0, 100.0]), multimask_output=False),
    dict(
        box=np.array([30.0, 20.0, 120.0, 100.0]),
        point_coords=np.array([[70.0, 60.0]]),
        point_labels=np.array([0]),
        multimask_output=True,
    ),
]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    model = SAM.from_config(TINY, seeded=True, precision="fp32")
    out = model.export("onnx", tmp_path_factory.mktemp("sam2_onnx"), name="tiny")
    return model, out


def _image(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[20:90, 40:120] = (200, 60, 40)
    return img


def _agree(a_masks, a_iou, a_low, b_masks, b_iou, b_low):
    assert a_masks.shape == b_masks.shape
    assert (a_masks == b_masks).mean() >= 0.999
    np.testing.assert_allclose(a_iou, b_iou, atol=1e-4)
    assert np.abs(a_low - b_low).max() <= 1e-3 * max(1.0, np.abs(b_low).max())


def test_export_files_and_interface(tiny_export):
    import onnxruntime as ort

    model, out = tiny_export
    assert {"encoder", "decoder", "metadata"} <= set(out)
    enc = ort.InferenceSession(str(out["encoder"]))
    dec = ort.InferenceSession(str(out["decoder"]))
    assert [o.name for o in enc.get_outputs()] == [
        "high_res_feats_0",
        "high_res_feats_1",
        "image_embed",
    ]
    assert [i.name for i in dec.get_inputs()][:3] == [
        "image_embed",
        "high_res_feats_0",
        "high_res_feats_1",
    ]
    meta = json.loads(out["metadata"].read_text())
    assert meta["model_config"]["encoder"]["kind"] == "hiera"
    x = torch.randn(1, 3, TINY.img_size, TINY.img_size)
    with torch.no_grad():
        emb, (s0, s1) = model.model.encode(x)
    got = enc.run(None, {"image": x.numpy()})
    for g, r in zip(got, (s0, s1, emb)):
        assert np.abs(g - r.numpy()).max() <= 1e-4 * np.abs(r.numpy()).max()


@pytest.mark.parametrize("i", range(len(PROMPTS)))
@pytest.mark.parametrize("image_format", ["RGB"])
def test_onnx_predictor_matches_torch(tiny_export, i, image_format):
    from samkit.export.onnx_sam2_predictor import Sam2OnnxPredictor

    model, out = tiny_export
    image = _image()
    onnx_pred = Sam2OnnxPredictor.from_export(out["metadata"], image_format=image_format)
    onnx_pred.set_image(image)
    torch_pred = Sam2Predictor(model.model)
    torch_pred.set_image(image)
    np.testing.assert_allclose(
        onnx_pred.features,
        torch_pred.features.numpy(),
        atol=1e-4 * torch_pred.features.abs().max().item(),
    )
    kw = PROMPTS[i]
    _agree(*onnx_pred.predict(**kw), *torch_pred.predict(**kw))
    # mask input fed back
    masks, iou, low = torch_pred.predict(**kw)
    kw2 = dict(kw, mask_input=low[np.argmax(iou)][None], multimask_output=False)
    _agree(*onnx_pred.predict(**kw2), *torch_pred.predict(**kw2))


def test_onnx_predictor_results_match_torch(tiny_export):
    from samkit.export.onnx_sam2_predictor import Sam2OnnxPredictor

    model, out = tiny_export
    image = _image(seed=1)
    onnx_pred = Sam2OnnxPredictor.from_export(out["metadata"], image_format="RGB")
    onnx_pred.set_image(image)
    torch_pred = model.predictor(image_format="RGB")
    torch_pred.set_image(image)
    args = dict(bboxes=[[30, 20, 120, 100], [5, 5, 60, 60]])
    a, b = onnx_pred(**args), torch_pred(**args)
    _agree(a.masks, a.scores, a.low_res_logits, b.masks, b.scores, b.low_res_logits)
    args = dict(points=[[60, 50], [100, 30]], labels=[1, 1], multimask_output=True)
    a, b = onnx_pred(**args), torch_pred(**args)
    _agree(a.masks, a.scores, a.low_res_logits, b.masks, b.scores, b.low_res_logits)


def test_onnx_predictor_is_torch_free(tiny_export):
    _, out = tiny_export
    code = (
        "import sys, numpy as np\n"
        "from samkit.export.onnx_sam2_predictor import Sam2OnnxPredictor\n"
        f"p = Sam2OnnxPredictor.from_export({str(out['metadata'])!r}, image_format='RGB')\n"
        "p.set_image(np.full((50, 70, 3), 128, np.uint8))\n"
        "m, s, _ = p.predict(box=np.array([5, 5, 40, 30]), multimask_output=False)\n"
        "assert m.shape == (1, 50, 70)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wrong_mode_and_wrong_files(tiny_export, tmp_path):
    from samkit.errors import ExportError, PromptError
    from samkit.export.onnx_sam2_predictor import Sam2OnnxPredictor

    model, out = tiny_export
    multi = model.export("onnx", tmp_path, name="multi", mask_output="multi", encoder=False)
    p = Sam2OnnxPredictor(out["encoder"], multi["decoder"], image_format="RGB")
    p.set_image(_image())
    with pytest.raises(PromptError, match="multimask_output=True"):
        p.predict(box=np.array([30, 20, 120, 100]), multimask_output=False)
    with pytest.raises(ExportError, match="SAM 2 decoder"):
        Sam2OnnxPredictor(out["encoder"], out["encoder"])


def test_decoder_only_predictor_takes_torch_embeddings(tiny_export):
    """The one ONNX predictor's ``set_image_embedding`` serves SAM 2 too: the torch encoder's
    three maps fed to the decoder alone give the torch predictor's masks."""
    from samkit.errors import ImageError
    from samkit.export.onnx_sam2_predictor import Sam2OnnxPredictor

    model, out = tiny_export
    image = _image(seed=2)
    torch_pred = Sam2Predictor(model.model)
    torch_pred.set_image(image)
    pred = Sam2OnnxPredictor(None, out["decoder"])
    features = torch_pred.features.numpy()
    maps = tuple(t.numpy() for t in torch_pred.high_res)
    with pytest.raises(ImageError, match="2 high-resolution feature map"):
        pred.set_image_embedding(features, image.shape[:2])
    pred.set_image_embedding(features, image.shape[:2], high_res_feats=maps)
    assert pred.input_size == (TINY.img_size, TINY.img_size)
    for kw in PROMPTS:
        _agree(*pred.predict(**kw), *torch_pred.predict(**kw))


@pytest.mark.slow
def test_hiera_t_onnx_matches_meta_fixture(tmp_path):
    """The exported hiera_t pair, run by the torch-free predictor, against Meta's outputs."""
    from samkit.export.onnx_sam2_predictor import Sam2OnnxPredictor
    from samkit.zoo.sam2 import size_config

    from ..sam2_helpers import seeded_sam2

    torch.set_num_threads(1)
    model = SAM.from_module(seeded_sam2(size_config("t")), size_config("t"), precision="fp32")
    out = model.export("onnx", tmp_path, name="hiera_t")
    pred = Sam2OnnxPredictor.from_export(out["metadata"], image_format="RGB")
    pred.set_image(load_rgb(IMAGE_A))
    ref = dict(np.load(NPZ))
    emb = ref["hiera_t.image_embed_s4"]
    assert np.abs(pred.features[..., ::4, ::4] - emb).max() <= 1e-4 * np.abs(emb).max()
    cases = json.loads(MANIFEST.read_text())["prompt_cases"]["image_a"]
    for case in ("point", "fg_bg_points", "box", "box_and_neg_point", "mask_input"):
        kw = {k: np.asarray(v) if isinstance(v, list) else v for k, v in cases[case].items()}
        if case == "mask_input":
            kw["mask_input"] = ref["hiera_t.point.best_low_res_logits"]
        masks, iou, low = pred.predict(**kw)
        p = f"hiera_t.{case}."
        assert (masks == ref[p + "masks"]).mean() >= 0.999
        np.testing.assert_allclose(iou, ref[p + "iou"], atol=1e-4)
        r = ref[p + "low_res_logits_s2"]
        assert np.abs(low[..., ::2, ::2] - r).max() <= 1e-3 * np.abs(r).max()
