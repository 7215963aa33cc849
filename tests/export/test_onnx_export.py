"""ONNX export on tiny models: run the exported pair in onnxruntime and compare with torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from samkit import SAM, Predictor, Results, SamPredictor
from samkit.errors import ExportError, ImageError, PromptError
from samkit.export import export_onnx
from samkit.export.onnx_predictor import OnnxPredictor
from samkit.predict.geometry import preprocess_shape

from ..conftest import TINY_TINYVIT, TINY_VIT, synthetic_image

ROOT = Path(__file__).resolve().parents[2]


def _dim64(config):
    """The tiny configs with an encoder that outputs the decoder's 64 channels."""
    return dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, out_chans=64))


VIT64, TINYVIT64 = _dim64(TINY_VIT), _dim64(TINY_TINYVIT)


def _prompts(h: int, w: int) -> list[dict]:
    box = np.array([w * 0.1, h * 0.15, w * 0.35, h * 0.5])
    fg = np.array([[w * 0.66, h * 0.66]])
    return [
        {"point_coords": fg, "point_labels": np.array([1])},
        {"box": box},
        {"point_coords": [[w * 0.2, h * 0.3], [w * 0.9, h * 0.1]], "point_labels": [1, 0]},
        {"point_coords": [[w * 0.25, h * 0.3]], "point_labels": [0], "box": box},
        # a padding point (label -1), as Meta's predictors accept it
        {"point_coords": [[w * 0.4, h * 0.5], [0.0, 0.0]], "point_labels": [1, -1]},
        {},  # no prompt at all: the decoder still answers (as the torch predictor does)
    ]


def _assert_same(onnx_out, torch_out, what):
    masks, iou, low = onnx_out
    ref_masks, ref_iou, ref_low = torch_out
    assert masks.shape == ref_masks.shape and masks.dtype == np.bool_, what
    assert (masks == ref_masks).mean() >= 0.99, what
    np.testing.assert_allclose(iou, ref_iou, atol=1e-4, err_msg=what)
    assert np.abs(low - ref_low).max() <= 1e-3 * max(np.abs(ref_low).max(), 1.0), what


_EXPORTS: dict = {}


def _export(config, tmp_path_factory):
    """(SAM, written paths) of a tiny seeded model exported with an int8 decoder (cached)."""
    key = id(config)
    if key not in _EXPORTS:
        model = SAM.from_config(config, seeded=True)
        out = tmp_path_factory.mktemp("onnx")
        _EXPORTS[key] = model, model.export("onnx", out, quantize="decoder", name="tiny")
    return _EXPORTS[key]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(VIT64, tmp_path_factory)


@pytest.mark.parametrize(
    "config, size",
    [(VIT64, (240, 320)), (VIT64, (300, 170)), (TINYVIT64, (240, 320))],
    ids=["vit-landscape", "vit-portrait", "tinyvit"],
)
def test_exported_pair_matches_torch(config, size, tmp_path_factory):
    model, paths = _export(config, tmp_path_factory)
    image = synthetic_image(*size, seed=1)
    onnx_pred = OnnxPredictor(paths["encoder"], paths["decoder"], image_format="RGB")
    torch_pred = SamPredictor(model.model)
    onnx_pred.set_image(image)
    torch_pred.set_image(image)
    ref = torch_pred.features.numpy()
    assert np.abs(onnx_pred.features - ref).max() <= 1e-3 * np.abs(ref).max()
    assert onnx_pred.input_size == torch_pred.input_size
    for i, prompt in enumerate(_prompts(*size)):
        for multimask in (True, False):
            what = f"prompt {i}, multimask {multimask}"
            out = onnx_pred.predict(**prompt, multimask_output=multimask)
            _assert_same(out, torch_pred.predict(**prompt, multimask_output=multimask), what)
            if not multimask:
                continue
            # feed the best low-res logits back as a mask prompt
            mask = out[2][np.argmax(out[1])][None]
            again = onnx_pred.predict(**prompt, mask_input=mask, multimask_output=False)
            ref_again = torch_pred.predict(**prompt, mask_input=mask, multimask_output=False)
            _assert_same(again, ref_again, what + " + mask_input")
    logits = onnx_pred.predict(box=[10, 10, 100, 90], return_logits=True)[0]
    assert logits.dtype == np.float32 and logits.shape == (3, *size)


def test_call_returns_results_like_the_torch_predictor(exported):
    """``predictor(bboxes=, points=, labels=, masks=)`` -> Results, as ``samkit.Predictor``."""
    model, paths = exported
    image_bgr = np.ascontiguousarray(synthetic_image(240, 320, seed=6)[..., ::-1])
    onnx_pred = OnnxPredictor.from_export(paths["metadata"])  # NumPy images are BGR by default
    torch_pred = Predictor(model, precision="fp32")
    onnx_pred.set_image(image_bgr)
    torch_pred.set_image(image_bgr)
    binary = np.zeros((240, 320), bool)
    binary[40:120, 30:110] = True
    calls = [
        {"bboxes": [[30, 40, 110, 120], [150, 100, 300, 230]]},
        {"points": [[[60, 80], [200, 50]], [[220, 160], [0, 0]]], "labels": [[1, 0], [1, -1]]},
        {"points": [[60, 80], [220, 160]], "labels": [1, 1], "multimask_output": True},
        {"bboxes": [[30, 40, 110, 120]], "points": [[[70, 70]]], "labels": [[0]]},
        {"masks": binary[None]},
    ]
    for kw in calls:
        r, ref = onnx_pred(**kw), torch_pred(**kw)
        assert isinstance(r, Results) and len(r) == len(ref), kw
        assert (r.masks == ref.masks).mean() >= 0.99, kw
        np.testing.assert_allclose(r.scores, ref.scores, atol=1e-4, err_msg=str(kw))
        np.testing.assert_array_equal(r.prompt_index, ref.prompt_index)
        np.testing.assert_array_equal(r.orig_img, ref.orig_img)
        np.testing.assert_allclose(r.boxes, ref.boxes, atol=2)
        assert r.low_res_logits.shape == ref.low_res_logits.shape
    with pytest.raises(PromptError, match="no prompt given"):
        onnx_pred()
    with pytest.raises(PromptError, match="outside"):
        onnx_pred(points=[[500, 10]])


@pytest.mark.parametrize("config", [VIT64, TINYVIT64], ids=["vit", "tinyvit"])
def test_decoder_graph_has_the_tools_interface(config, tmp_path_factory):
    """Feed the raw decoder session as CVAT / X-AnyLabeling do, N dynamic, any output size."""
    model, paths = _export(config, tmp_path_factory)
    s = model.model.image_size
    session = ort.InferenceSession(str(paths["decoder"]), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.shape, i.type) for i in session.get_inputs()}
    assert inputs == {
        "image_embeddings": ([1, 64, s // 16, s // 16], "tensor(float)"),
        "point_coords": ([1, "num_points", 2], "tensor(float)"),
        "point_labels": ([1, "num_points"], "tensor(float)"),
        "mask_input": ([1, 1, s // 4, s // 4], "tensor(float)"),
        "has_mask_input": ([1], "tensor(float)"),
        "orig_im_size": ([2], "tensor(float)"),
    }
    assert [o.name for o in session.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
    image = synthetic_image(200, 500, seed=2)
    torch_pred = SamPredictor(model.model)
    torch_pred.set_image(image)
    emb = torch_pred.features.numpy()
    new_h, new_w = preprocess_shape(200, 500, s)  # the resized frame: 102 x 256 for s = 256
    scale = np.array([new_w / 500, new_h / 200])
    rng = np.random.default_rng(0)
    for n in (1, 2, 5):
        coords = rng.uniform([0, 0], [500, 200], (n, 2))
        labels = rng.integers(0, 2, n)
        feed = {
            "image_embeddings": emb,
            "point_coords": np.concatenate([coords * scale, [[0.0, 0.0]]])[None].astype("f4"),
            "point_labels": np.concatenate([labels, [-1]])[None].astype("f4"),
            "mask_input": np.zeros((1, 1, s // 4, s // 4), "f4"),
            "has_mask_input": np.zeros(1, "f4"),
            "orig_im_size": np.array([200, 500], "f4"),
        }
        masks, iou, low = session.run(None, feed)
        assert masks.shape == (1, 4, 200, 500) and iou.shape == (1, 4)
        assert low.shape == (1, 4, s // 4, s // 4)
        ref = torch_pred.predict(coords, labels, multimask_output=True)
        assert ((masks[0, 1:] > 0) == ref[0]).mean() >= 0.99
        np.testing.assert_allclose(iou[0, 1:], ref[1], atol=1e-4)
    # a box: its two corners labelled 2 and 3, and no padding point
    box = np.array([50.0, 20.0, 300.0, 150.0])
    feed["point_coords"] = (box.reshape(1, 2, 2) * scale).astype("f4")
    feed["point_labels"] = np.array([[2, 3]], "f4")
    masks, iou, _ = session.run(None, feed)
    ref = torch_pred.predict(box=box, multimask_output=False)
    assert ((masks[0, :1] > 0) == ref[0]).mean() >= 0.99
    np.testing.assert_allclose(iou[0, :1], ref[1], atol=1e-4)


def test_metadata_describes_the_pair(exported):
    model, paths = exported
    assert set(paths) == {"encoder", "decoder", "decoder_int8", "metadata"}
    assert sorted(p.name for p in paths["metadata"].parent.iterdir()) == sorted(
        p.name for p in paths.values()
    )  # nothing else written, no temporary folder left behind
    modes = {p.stat().st_mode & 0o777 for p in paths.values()}
    assert len(modes) == 1  # the JSON gets the same permissions as the graphs
    meta = json.loads(paths["metadata"].read_text())
    assert meta["variant"] == "custom" and meta["mask_output"] == "all" and meta["num_masks"] == 4
    assert meta["files"] == {k: p.name for k, p in paths.items() if k != "metadata"}
    assert meta["preprocessing"]["long_side"] == model.model.image_size
    assert meta["preprocessing"]["pixel_mean"] == [123.675, 116.28, 103.53]
    assert [i["name"] for i in meta["graphs"]["encoder"]["inputs"]] == ["image"]
    assert meta["graphs"]["decoder"]["inputs"][1]["shape"] == [1, "num_points", 2]
    assert meta["model_config"]["encoder"]["img_size"] == 256
    props = [
        {p.key: p.value for p in onnx.load(str(paths[k]), load_external_data=False).metadata_props}
        for k in ("encoder", "decoder", "decoder_int8")
    ]
    assert props[0]["samkit.role"] == "encoder" and props[1]["samkit.role"] == "decoder"
    assert props[2]["samkit.quantized"] == "int8"
    assert {p["samkit.fingerprint"] for p in props} == {meta["fingerprint"]}


def test_int8_decoder_agreement_is_bounded(exported):
    model, paths = exported
    image = synthetic_image(240, 320, seed=3)
    fp32 = OnnxPredictor.from_export(paths["metadata"], image_format="RGB")
    int8 = OnnxPredictor.from_export(paths["metadata"].parent, quantized=True)
    assert int8.decoder_meta.quantized == "int8" and fp32.decoder_meta.quantized is None
    fp32.set_image(image)
    int8.set_image_embedding(fp32.features, image.shape[:2])
    agreement, ious = [], []
    prompts = _prompts(240, 320)[:4]
    low_res = fp32.predict(**prompts[1], multimask_output=False)[2]
    prompts.append({**prompts[1], "mask_input": low_res})  # the int8 mask-downscaling path
    for prompt in prompts:
        a = fp32.predict(**prompt, multimask_output=False)[0]
        b = int8.predict(**prompt, multimask_output=False)[0]
        agreement.append((a == b).mean())
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    print(f"int8 decoder: pixel agreement min {min(agreement):.4f}, IoU min {min(ious):.4f}")
    assert min(agreement) >= 0.95 and min(ious) >= 0.8


@pytest.mark.parametrize("mode", ["multi", "single", "best"])
def test_mask_output_modes(tmp_path, mode):
    model = SAM.from_config(VIT64, seeded=True)
    paths = export_onnx(model, tmp_path, mask_output=mode, encoder=False, opset=14)
    assert set(paths) == {"decoder", "metadata"}
    torch_pred = SamPredictor(model.model)
    image = synthetic_image(240, 320, seed=4)
    torch_pred.set_image(image)
    pred = OnnxPredictor.from_export(tmp_path)  # decoder only: no encoder
    assert pred.encoder is None and pred.mask_output == mode
    with pytest.raises(ImageError, match="no encoder"):
        pred.set_image(image)
    pred.set_image_embedding(torch_pred.features.numpy(), image.shape[:2])
    multimask = mode == "multi"
    with pytest.raises(PromptError, match=f"mask_output='{mode}'"):
        pred.predict(point_coords=[[10, 10]], point_labels=[1], multimask_output=not multimask)
    for prompt in _prompts(240, 320)[:4]:
        out = pred.predict(**prompt, multimask_output=multimask)
        if mode == "best":  # Meta's rule: best multimask mask for one click or a box alone
            n = len(prompt.get("point_coords", [])) + (2 if "box" in prompt else 1)
            masks, iou, low = torch_pred.predict(**prompt, multimask_output=n <= 2)
            k = 0 if n > 2 else int(np.argmax(iou))
            ref = masks[k : k + 1], iou[k : k + 1], low[k : k + 1]
        else:
            ref = torch_pred.predict(**prompt, multimask_output=multimask)
        _assert_same(out, ref, f"{mode} {prompt}")


def test_encoder_and_decoder_from_different_models_are_refused(exported, tmp_path):
    model, paths = exported
    other = SAM.from_config(TINYVIT64, seeded=True)
    other_paths = export_onnx(other, tmp_path, decoder=False)
    with pytest.raises(ExportError, match="different models"):
        OnnxPredictor(other_paths["encoder"], paths["decoder"])
    # graphs without samkit metadata (foreign files) are still checked by their shapes
    small = dataclasses.replace(VIT64, encoder=dataclasses.replace(VIT64.encoder, img_size=128))
    small_paths = export_onnx(SAM.from_config(small, seeded=True), tmp_path / "s", encoder=False)
    proto = onnx.load(str(small_paths["decoder"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign_decoder.onnx"))
    with pytest.raises(ExportError, match="does not fit"):
        OnnxPredictor(paths["encoder"], tmp_path / "foreign_decoder.onnx")


def test_export_option_errors(tmp_path):
    model = SAM.from_config(VIT64, seeded=True)
    bad = [
        ({"format": "engine"}, "unsupported export format 'engine'"),
        ({"opset": 13}, "opset must be an integer from 14"),
        ({"opset": "17"}, "opset must be"),
        ({"mask_output": "three"}, "mask_output must be one of"),
        ({"quantize": "int4"}, "quantize must be"),
        ({"half": True}, "unknown onnx export option"),
        ({"encoder": False, "decoder": False}, "nothing to export"),
        ({"quantize": "encoder", "encoder": False}, "needs the encoder"),
        ({"name": "../escape"}, "plain file name"),
    ]
    for options, message in bad:
        with pytest.raises(ExportError, match=message):
            model.export(output_dir=tmp_path, **options)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        model.export(output_dir=tmp_path / "file")
    with pytest.raises(ExportError, match="samkit.SAM"):
        export_onnx(object(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_predictor_input_errors(exported, tmp_path):
    _, paths = exported
    pred = OnnxPredictor.from_export(paths["metadata"])
    with pytest.raises(PromptError, match="no image is set"):
        pred.predict(box=[0, 0, 10, 10])
    with pytest.raises(ImageError, match="H x W, H x W x 3"):
        pred.set_image(np.zeros((20, 20, 5), np.uint8))
    with pytest.raises(ImageError, match="no such image file"):
        pred.set_image(str(tmp_path / "missing.png"))
    pred.set_image(synthetic_image(60, 80))
    for kwargs, message in [
        ({"point_coords": [[1, 2]]}, "point_labels must be given"),
        ({"point_coords": [1, 2], "point_labels": [1]}, "N x 2"),
        ({"point_coords": [[1, 2]], "point_labels": [1, 1]}, "one label per point"),
        ({"point_coords": [[1, 2]], "point_labels": [5]}, "1 \\(foreground\\) or 0"),
        ({"point_coords": [[np.nan, 2]], "point_labels": [1]}, "NaN"),
        ({"box": [1, 2, 3]}, "4 values"),
        ({"box": [30, 2, 3, 40]}, "x1 <= x2"),
        ({"mask_input": np.zeros((1, 256, 256))}, "mask_input must be 1 x 64 x 64"),
    ]:
        with pytest.raises(PromptError, match=message):
            pred.predict(**kwargs)
    with pytest.raises(ExportError, match="not found"):
        OnnxPredictor(tmp_path / "missing.onnx", paths["decoder"])
    with pytest.raises(ExportError, match="SAM's ONNX decoder interface"):
        OnnxPredictor(None, paths["encoder"])
    with pytest.raises(ExportError, match="holds 0"):
        OnnxPredictor.from_export(tmp_path)


def test_large_graph_weights_go_to_one_external_file(tmp_path, monkeypatch):
    """Graphs over protobuf's 2 GiB (ViT-H) keep their weights in <name>.onnx.data."""
    import samkit.export.onnx as onnx_export

    model = SAM.from_config(VIT64, seeded=True)
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1000)
    paths = export_onnx(model, tmp_path, name="big")
    assert paths["encoder_data"] == tmp_path / "big_encoder.onnx.data"
    assert paths["decoder_data"].is_file()
    pred = OnnxPredictor.from_export(tmp_path)
    image = synthetic_image(100, 120)
    pred.set_image(image, image_format="RGB")
    torch_pred = SamPredictor(model.model)
    torch_pred.set_image(image)
    prompt = {"box": [10, 10, 60, 80]}
    _assert_same(pred.predict(**prompt), torch_pred.predict(**prompt), "external data")
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 2**31)
    export_onnx(model, tmp_path, name="big", encoder=False)
    assert not (tmp_path / "big_decoder.onnx.data").exists()  # stale weights removed


def test_onnx_predictor_runs_without_torch(exported, tmp_path):
    """The predictor imports no torch, directly or through samkit: run it where torch fails."""
    model, paths = exported
    image = synthetic_image(150, 200, seed=5)
    box = np.array([20, 30, 120, 140])
    np.save(tmp_path / "image.npy", image)
    script = textwrap.dedent(
        f"""
        import sys

        attempts = []

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    attempts.append(name)
                    raise ImportError("torch is not installed here")
                return None

        sys.meta_path.insert(0, BlockTorch())
        for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
            del sys.modules[name]

        import numpy as np
        import samkit

        pred = samkit.OnnxPredictor.from_export({str(paths["metadata"])!r})
        pred.set_image(np.load({str(tmp_path / "image.npy")!r}), image_format="RGB")
        masks, iou, low = pred.predict(box=np.array({box.tolist()}), multimask_output=False)
        np.savez({str(tmp_path / "out.npz")!r}, masks=masks, iou=iou)
        try:
            import torch  # noqa: F401
            sys.exit("torch could be imported")
        except ImportError:
            pass
        assert attempts == ["torch"], attempts  # only our own probe above
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    out = np.load(tmp_path / "out.npz")
    torch_pred = SamPredictor(model.model)
    torch_pred.set_image(image)
    ref_masks, ref_iou, _ = torch_pred.predict(box=box, multimask_output=False)
    assert (out["masks"] == ref_masks).mean() >= 0.99
    np.testing.assert_allclose(out["iou"], ref_iou, atol=1e-4)


def test_verify_records_agreement_and_raises_on_mismatch(tmp_path, monkeypatch):
    import samkit.export.verify as verify

    model = SAM.from_config(VIT64, seeded=True)
    paths = model.export(output_dir=tmp_path, quantize="encoder", verify=True, mask_output="single")
    report = json.loads(paths["metadata"].read_text())["verification"]
    assert set(report) == {"encoder", "decoder", "encoder_int8"}
    assert report["encoder"]["embedding_rel_err"] < 1e-4
    assert report["decoder"]["mask_agreement_min"] >= 0.99
    assert report["encoder_int8"]["mask_agreement_mean"] >= 0.9  # masks from the int8 embedding
    monkeypatch.setattr(verify, "MASK_AGREEMENT_MIN", 1.01)  # no decoder can meet this
    with pytest.raises(ExportError, match="disagree with torch: decoder mask agreement"):
        model.export(
            output_dir=tmp_path / "strict", encoder=False, verify=True, mask_output="single"
        )
