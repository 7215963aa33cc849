"""Export presets run the way each consuming tool runs them (onnxruntime), against samkit's torch
predictor.

Every tool's steps are re-stated here from its own code (cited at each test); nothing of the
tools is imported or copied. The model is a tiny seeded ViT with the real interface sizes
(input 1024, embeddings 256 x 64 x 64, which CVAT hard-codes), so the tools' fixed constants hold.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import io
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from PIL import Image

from samkit import SAM, SamPredictor
from samkit.errors import ExportError
from samkit.export import export_preset
from samkit.zoo.registry import DecoderConfig, ModelConfig, ViTConfig

from ..conftest import synthetic_image

# full interface sizes, tiny compute: 2 blocks of width 32 (one global), decoder width 256
TOOL_CONFIG = ModelConfig(
    ViTConfig(
        embed_dim=32,
        depth=2,
        num_heads=2,
        global_attn_indexes=(1,),
        window_size=8,
        img_size=1024,
        out_chans=256,
    ),
    DecoderConfig(transformer_dim=256, depth=2, num_heads=8, mlp_dim=256, iou_head_hidden_dim=64),
)
MIN_AGREEMENT = 0.999  # fraction of equal mask pixels, fp32 graphs


@pytest.fixture(scope="module")
def tool_model():
    return SAM.from_config(TOOL_CONFIG, seeded=True)


@pytest.fixture(scope="module")
def exports(tool_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("presets")
    img_path = out / "photo.png"
    Image.fromarray(synthetic_image(600, 800, seed=3)).save(img_path)
    return {
        "xany": tool_model.export("onnx", out / "xany", preset="xanylabeling", name="tiny"),
        "cvat": tool_model.export("onnx", out / "cvat", preset="cvat", name="tiny"),
        "web": tool_model.export(
            "onnx", out / "web", preset="webdemo", name="tiny", image=img_path
        ),
        "image_path": img_path,
    }


_PREDICTORS: dict = {}


def _predictor(model, image):
    """samkit's torch predictor with ``image`` set (cached: encoding is the slow part)."""
    key = (id(model), image.shape, hashlib.sha1(image.tobytes()).hexdigest())
    if key not in _PREDICTORS:
        p = SamPredictor(model.model)
        p.set_image(image)
        _PREDICTORS[key] = p
    return _PREDICTORS[key]


def _reference(model, image, prompt):
    """samkit's torch predictor: the best of the multimask outputs for one click or a box,
    the single-mask output for more points (Meta's rule for a one-mask decoder)."""
    p = _predictor(model, image)
    kw = {}
    if "points" in prompt:
        kw["point_coords"] = np.array(prompt["points"], np.float64)
        kw["point_labels"] = np.array(prompt["labels"])
    if "box" in prompt:
        kw["box"] = np.array(prompt["box"], np.float64)
    one = "box" in prompt and "points" not in prompt or len(prompt.get("points", [])) == 1
    masks, scores, low = p.predict(**kw, multimask_output=one)
    best = int(np.argmax(scores)) if one else 0
    return masks[best], low[best], p


def _prompts(h, w):
    return {
        "click": {"points": [[w * 0.66, h * 0.66]], "labels": [1]},
        "box": {"box": [w * 0.1, h * 0.15, w * 0.36, h * 0.52]},
        "two_points": {"points": [[w * 0.2, h * 0.3], [w * 0.7, h * 0.75]], "labels": [1, 0]},
    }


def _agreement(a, b):
    assert a.shape == b.shape
    return float((a == b).mean())


# -- X-AnyLabeling ----------------------------------------------------------------------------
_XANY_EMBEDDINGS: dict = {}


def _xanylabeling_run(config_path: Path, image_rgb: np.ndarray, marks: list[dict]) -> np.ndarray:
    """X-AnyLabeling's SAM path, re-stated from CVHub520/X-AnyLabeling:
    anylabeling/services/auto_labeling/model.py (YAML, paths relative to the config file),
    segment_anything.py (required keys, ``masks[0][0]``, threshold > 0) and sam_onnx.py
    (SegmentAnythingONNX: fixed 684 x 1024 canvas, cv2.warpAffine INTER_LINEAR, float32 RGB into
    the encoder's first input, a (0, 0) / -1 point always appended, coordinates mapped to the
    canvas, ``orig_im_size`` = the canvas size, masks warped back with the inverse matrix)."""
    config = yaml.safe_load(config_path.read_text())
    for key in ("type", "name", "display_name", "encoder_model_path", "decoder_model_path"):
        assert key in config
    assert config["type"] == "segment_anything"
    enc = ort.InferenceSession(str(config_path.parent / config["encoder_model_path"]))
    dec = ort.InferenceSession(str(config_path.parent / config["decoder_model_path"]))
    canvas_hw, target = (684, 1024), 1024
    h, w = image_rgb.shape[:2]
    scale = min(canvas_hw[1] / w, canvas_hw[0] / h)
    matrix = np.array([[scale, 0, 0], [0, scale, 0], [0, 0, 1]], np.float64)
    canvas = cv2.warpAffine(
        image_rgb, matrix[:2], (canvas_hw[1], canvas_hw[0]), flags=cv2.INTER_LINEAR
    )
    key = (str(config_path), hashlib.sha1(canvas.tobytes()).hexdigest())
    if key not in _XANY_EMBEDDINGS:  # X-AnyLabeling caches embeddings per image too
        feeds = {enc.get_inputs()[0].name: canvas.astype(np.float32)}
        _XANY_EMBEDDINGS[key] = enc.run(None, feeds)[0]
    embedding = _XANY_EMBEDDINGS[key]
    points, labels = [], []
    for mark in marks:
        if mark["type"] == "point":
            points.append(mark["data"])
            labels.append(mark["label"])
        else:
            points += [mark["data"][:2], mark["data"][2:]]
            labels += [2, 3]
    coords = np.concatenate([np.array(points, np.float64), [[0.0, 0.0]]])[None]
    onnx_labels = np.concatenate([np.array(labels), [-1]])[None].astype(np.float32)
    s = target / max(canvas_hw)
    new_h, new_w = int(canvas_hw[0] * s + 0.5), int(canvas_hw[1] * s + 0.5)
    coords[..., 0] *= new_w / canvas_hw[1]
    coords[..., 1] *= new_h / canvas_hw[0]
    coords = np.concatenate([coords, np.ones((1, coords.shape[1], 1))], axis=2) @ matrix.T
    masks, _, _ = dec.run(
        None,
        {
            "image_embeddings": embedding,
            "point_coords": coords[:, :, :2].astype(np.float32),
            "point_labels": onnx_labels,
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(canvas_hw, np.float32),
        },
    )
    inverse = np.linalg.inv(matrix)
    mask = cv2.warpAffine(masks[0, 0], inverse[:2], (w, h), flags=cv2.INTER_LINEAR)
    return mask > 0.0


def _marks(prompt):
    if "box" in prompt:
        return [{"type": "rectangle", "data": list(prompt["box"])}]
    return [
        {"type": "point", "data": list(p), "label": int(lb)}
        for p, lb in zip(prompt["points"], prompt["labels"])
    ]


@pytest.mark.parametrize("kind", ["click", "box", "two_points"])
def test_xanylabeling_matches_predictor(tool_model, exports, kind):
    paths = exports["xany"]
    assert {p.name for p in paths.values()} == {
        "tiny.encoder.onnx",
        "tiny.decoder.onnx",
        "tiny.yaml",
    }
    enc = ort.InferenceSession(str(paths["encoder"]))
    (inp,) = enc.get_inputs()
    assert inp.name == "input_image" and inp.type == "tensor(float)" and len(inp.shape) == 3
    # an image the size of X-AnyLabeling's canvas: its warps are the identity, so every
    # remaining difference would be the exported graphs'
    image = synthetic_image(684, 1024, seed=5)
    prompt = _prompts(684, 1024)[kind]
    got = _xanylabeling_run(paths["config"], image, _marks(prompt))
    ref, _, _ = _reference(tool_model, image, prompt)
    assert ref.any() and _agreement(got, ref) >= MIN_AGREEMENT


# -- CVAT --------------------------------------------------------------------------------------
def _load_function(folder: Path):
    spec = importlib.util.spec_from_file_location("cvat_sam_main", folder / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = SimpleNamespace(
        user_data=SimpleNamespace(),
        logger=SimpleNamespace(info=lambda *a: None),
        Response=lambda **kw: kw,
    )
    module.init_context(context)
    return module, context


def _mask2rle(flat):
    """cvat-core's mask2Rle: runs of equal values, starting with the count of zeros."""
    runs, prev = ([0, 1] if flat[0] > 0 else [1]), flat[0]
    for v in flat[1:]:
        if v == prev:
            runs[-1] += 1
        else:
            runs.append(1)
        prev = v
    return runs


def _cvat_shape_to_mask(points, h, w):
    """A CVAT mask shape (``rle + [left, top, right, bottom]``, inclusive) on the full frame."""
    *rle, left, top, right, bottom = points
    box = np.zeros((bottom - top + 1) * (right - left + 1), bool)
    i, value = 0, False
    for run in rle:
        box[i : i + run] = value
        i, value = i + run, not value
    full = np.zeros((h, w), bool)
    full[top : bottom + 1, left : right + 1] = box.reshape(bottom - top + 1, right - left + 1)
    return full


def _cvat_decode(decoder, embedding, h, w, pos=(), neg=(), bbox=None, low_res=None):
    """CVAT's SAM plugin, re-stated from cvat-ai/cvat cvat-ui/plugins/sam/src/ts/index.tsx
    (clicks: box corners 2 / 3 first, then positives 1, negatives 0; no padding point;
    coordinates times 1024 / max(w, h); ``orig_im_size`` [h, w]; the previous
    ``low_res_masks`` as ``mask_input``) and inference.worker.ts (outputs read: ``masks`` as
    raw uint8 bytes, ``low_res_masks``, ``xtl ytl xbr ybr``; the shape is ``mask2Rle(masks)``
    followed by the bounds)."""
    clicks = []
    if bbox is not None:
        clicks += [(2, bbox[0], bbox[1]), (3, bbox[2], bbox[3])]
    clicks += [(1, x, y) for x, y in pos] + [(0, x, y) for x, y in neg]
    scale = 1024 / max(h, w)
    coords = np.array([[x * scale, y * scale] for _, x, y in clicks], np.float32)[None]
    labels = np.array([c for c, _, _ in clicks], np.float32)[None]
    out = decoder.run(
        None,
        {
            "image_embeddings": embedding,
            "point_coords": coords,
            "point_labels": labels,
            "orig_im_size": np.array([h, w], np.float32),
            "mask_input": low_res
            if low_res is not None
            else np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.array([1.0 if low_res is not None else 0.0], np.float32),
        },
    )
    named = dict(zip([o.name for o in decoder.get_outputs()], out))
    assert named["masks"].dtype == np.uint8
    bounds = [int(named[k][0]) for k in ("xtl", "ytl", "xbr", "ybr")]
    rle = _mask2rle(named["masks"].reshape(-1).tolist())
    if len(rle) < 2:
        return np.zeros((h, w), bool), named["low_res_masks"]
    return _cvat_shape_to_mask(rle + bounds, h, w), named["low_res_masks"]


def test_cvat_function_and_decoder(tool_model, exports):
    paths = exports["cvat"]
    folder = paths["function"].parent
    assert {p.name for p in folder.iterdir()} == {"function.yaml", "main.py", "model.safetensors"}
    spec = yaml.safe_load(paths["function"].read_text())
    assert spec["metadata"]["name"] == "pth-facebookresearch-sam-vit-h"  # the plugin's model id
    assert spec["metadata"]["annotations"]["type"] == "interactor"
    assert spec["spec"]["handler"] == "main:handler"

    image = synthetic_image(600, 800, seed=7)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    request = {"image": base64.b64encode(buf.getvalue()).decode()}
    module, context = _load_function(folder)
    # nuclio hands the body over parsed (JSON content type) or as bytes; both work
    for body in (request, json.dumps(request).encode()):
        reply = module.handler(context, SimpleNamespace(body=body))
        assert reply["status_code"] == 200 and reply["content_type"] == "application/json"
    blob = base64.b64decode(json.loads(reply["body"])["blob"])
    # the plugin: new Float32Array(bytes.buffer) as a [1, 256, 64, 64] tensor
    embedding = np.frombuffer(blob, dtype="<f4").reshape(1, 256, 64, 64)
    _, _, predictor = _reference(tool_model, image, _prompts(600, 800)["click"])
    np.testing.assert_allclose(embedding, predictor.features.numpy(), rtol=0, atol=1e-6)

    decoder = ort.InferenceSession(str(paths["decoder"]))
    assert [o.name for o in decoder.get_outputs()] == [
        "masks", "iou_predictions", "low_res_masks", "xtl", "ytl", "xbr", "ybr",
    ]  # fmt: skip
    h, w = image.shape[:2]
    for kind, prompt in _prompts(h, w).items():
        pos = [p for p, lb in zip(prompt.get("points", []), prompt.get("labels", [])) if lb == 1]
        neg = [p for p, lb in zip(prompt.get("points", []), prompt.get("labels", [])) if lb == 0]
        got, _ = _cvat_decode(decoder, embedding, h, w, pos, neg, prompt.get("box"))
        ref, _, _ = _reference(tool_model, image, prompt)
        assert ref.any() and _agreement(got, ref) >= MIN_AGREEMENT, kind

    # a second click refines the first: the plugin feeds the previous low-res mask back
    first = _prompts(h, w)["click"]["points"]
    _, low = _cvat_decode(decoder, embedding, h, w, pos=first)
    second = [[w * 0.2, h * 0.3]]
    got, _ = _cvat_decode(decoder, embedding, h, w, pos=first, neg=second, low_res=low)
    masks, _, _ = _predictor(tool_model, image).predict(
        point_coords=np.array(first + second),
        point_labels=np.array([1, 0]),
        mask_input=low[0],
        multimask_output=False,
    )
    assert _agreement(got, masks[0]) >= MIN_AGREEMENT


def test_cvat_function_rejects_bad_requests(exports):
    module, context = _load_function(exports["cvat"]["function"].parent)
    for body in (
        b"not json",
        {"image": "***"},
        {"img": "x"},
        {"image": base64.b64encode(b"xx").decode()},
    ):
        reply = module.handler(context, SimpleNamespace(body=body))
        assert reply["status_code"] == 400 and "error" in json.loads(reply["body"])


# -- Meta's web demo ---------------------------------------------------------------------------
def _webdemo_decode(decoder, embedding, h, w, prompt):
    """Meta's demo, re-stated from facebookresearch/segment-anything demo/src/App.tsx
    (embedding from an .npy, first output, ``handleImageScale``: samScale = 1024 / max(h, w))
    and helpers/onnxModelAPI.tsx (clicks then a (0, 0) / -1 padding point, ``orig_im_size``
    [h, w], empty mask input), maskUtils.tsx (threshold > 0). The demo's UI sends clicks only;
    a box follows the same ONNX convention as scripts/export_onnx_model.py's notebook: two
    corners labelled 2 and 3, no padding point."""
    scale = 1024 / max(h, w)
    if "box" in prompt:
        coords = np.array(prompt["box"], np.float32).reshape(2, 2)
        labels = [2, 3]
    else:
        coords = np.concatenate([np.array(prompt["points"], np.float32), [[0, 0]]])
        labels = [*prompt["labels"], -1]
    out = decoder.run(
        None,
        {
            "image_embeddings": embedding,
            "point_coords": (coords * scale).astype(np.float32)[None],
            "point_labels": np.array(labels, np.float32)[None],
            "orig_im_size": np.array([h, w], np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
        },
    )
    return out[0][0, 0] > 0.0


@pytest.mark.parametrize("kind", ["click", "box", "two_points"])
def test_webdemo_matches_predictor(tool_model, exports, kind):
    paths = exports["web"]
    assert paths["decoder_int8"].name == "sam_onnx_quantized_example.onnx"
    embedding = np.load(paths["embedding"])
    assert embedding.dtype == np.float32 and embedding.shape == (1, 256, 64, 64)
    image = np.asarray(Image.open(exports["image_path"]).convert("RGB"))
    h, w = image.shape[:2]
    prompt = _prompts(h, w)[kind]
    ref, _, _ = _reference(tool_model, image, prompt)
    fp32 = _webdemo_decode(ort.InferenceSession(str(paths["decoder"])), embedding, h, w, prompt)
    assert ref.any() and _agreement(fp32, ref) >= MIN_AGREEMENT
    int8 = ort.InferenceSession(str(paths["decoder_int8"]))
    assert _agreement(_webdemo_decode(int8, embedding, h, w, prompt), ref) >= 0.97


# -- options and errors -----------------------------------------------------------------------
def test_preset_errors(tool_model, tmp_path):
    demo = SAM("samkit-demo")  # input 256, embeddings 128 x 16 x 16
    for preset in ("xanylabeling", "cvat", "webdemo"):
        with pytest.raises(ExportError, match="1024 long side"):
            demo.export("onnx", tmp_path, preset=preset)
    narrow = ModelConfig(
        dataclasses.replace(TOOL_CONFIG.encoder, out_chans=128),
        dataclasses.replace(TOOL_CONFIG.decoder, transformer_dim=128, num_heads=4),
    )
    small = SAM.from_config(narrow, seeded=True)  # input 1024, embeddings 128 x 64 x 64
    with pytest.raises(ExportError, match=r"\[1, 256, 64, 64\]"):
        small.export("onnx", tmp_path, preset="cvat")
    with pytest.raises(ExportError, match="unknown preset"):
        tool_model.export("onnx", tmp_path, preset="labelme")
    with pytest.raises(ExportError, match="webdemo option"):
        tool_model.export("onnx", tmp_path, preset="cvat", image="x.png")
    with pytest.raises(ExportError, match="unknown onnx export option"):
        tool_model.export("onnx", tmp_path, preset="webdemo", mask_output="all")
    with pytest.raises(ExportError, match="cannot be read"):
        tool_model.export("onnx", tmp_path, preset="webdemo", image=tmp_path / "missing.png")
    with pytest.raises(ExportError, match="opset must be"):
        tool_model.export("onnx", tmp_path, preset="webdemo", opset=9)
    sam2_like = SimpleNamespace(model=type("Sam2", (), {})())
    with pytest.raises(ExportError, match="web demo runs SAM 1"):
        export_preset(sam2_like, tmp_path, "webdemo")
    with pytest.raises(ExportError, match="cannot export a Sam2: pass a samkit.SAM"):
        export_preset(sam2_like, tmp_path, "xanylabeling")
    assert not list(tmp_path.iterdir())  # nothing written, not even a folder


def test_cli_webdemo_preset(tool_model, exports, tmp_path):
    from samkit.cli import main

    weights = exports["cvat"]["weights"]  # the CVAT function's safetensors (config inside)
    img = tmp_path / "cat.png"
    Image.fromarray(synthetic_image(120, 160)).save(img)
    out = tmp_path / "out"
    argv = ["export", f"model={weights}", "preset=webdemo", f"output_dir={out}", f"image={img}"]
    assert main(argv) == 0
    emb = np.load(out / "model_webdemo" / "data" / "cat_embedding.npy")
    p = SamPredictor(tool_model.model)
    p.set_image(synthetic_image(120, 160))
    np.testing.assert_allclose(emb, p.features.numpy(), rtol=0, atol=1e-6)
    assert (out / "model_webdemo" / "model" / "sam_onnx_quantized_example.onnx").is_file()
    # the pair's options do not apply to a preset: refused, not ignored
    assert (
        main(["export", f"model={weights}", "preset=cvat", "quantize=true", f"output_dir={out}"])
        != 0
    )
    assert not (out / "model_cvat").exists()


@pytest.mark.parametrize("size", [(1100, 1300), (300, 500)], ids=["shrink", "enlarge"])
def test_raw_encoder_resizes_like_the_predictor(tool_model, exports, size):
    """The in-graph resize re-implements Pillow's bilinear filter (antialiased when shrinking,
    integer levels after each pass); Pillow's fixed-point rounding may differ by one level in
    a few pixels, which moves the embedding by far less than the masks' threshold needs."""
    image = synthetic_image(*size, seed=8)
    enc = ort.InferenceSession(str(exports["xany"]["encoder"]))
    got = enc.run(None, {"input_image": image.astype(np.float32)})[0]
    ref = _predictor(tool_model, image).features.numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 5e-3 * np.abs(ref).max()


def test_in_graph_resize_is_pillows():
    """The resize weights alone, against Pillow (what samkit's predictor uses): at most one
    level apart (Pillow's fixed-point rounding), in under 0.5 % of the values."""
    import torch

    from samkit.export.tool_graphs import _resize_weights, _round_levels
    from samkit.predict.geometry import resize_longest_side

    for h, w in [(1100, 1300), (300, 500), (2000, 1500)]:
        image = synthetic_image(h, w, seed=9)
        ref = resize_longest_side(image, 1024).astype(np.float32)
        s = 1024 / max(h, w)
        wy = _resize_weights(torch.tensor(float(h)), torch.tensor(int(h * s + 0.5)))
        wx = _resize_weights(torch.tensor(float(w)), torch.tensor(int(w * s + 0.5)))
        x = torch.as_tensor(image).permute(2, 0, 1)[None].float()
        got = _round_levels(wy @ _round_levels(x @ wx.T))[0].permute(1, 2, 0).numpy()
        diff = np.abs(got - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 5e-3, (h, w)


def test_meta_decoder_as_is_differs_in_the_tools(tool_model, exports, tmp_path):
    """Why the tool decoders exist: Meta's decoder graph fed X-AnyLabeling's box (+ padding
    point) or CVAT's unpadded clicks answers another prompt than the predictor's."""
    plain = tool_model.export("onnx", tmp_path, encoder=False, mask_output="best")["decoder"]
    xany_dir = exports["xany"]["config"].parent
    config = tmp_path / "plain.yaml"
    config.write_text(
        exports["xany"]["config"]
        .read_text()
        .replace("tiny.encoder.onnx", str(xany_dir / "tiny.encoder.onnx"))
        .replace("tiny.decoder.onnx", str(plain))
    )
    image = synthetic_image(684, 1024, seed=5)
    prompt = _prompts(684, 1024)["box"]
    ref, _, predictor = _reference(tool_model, image, prompt)
    got = _xanylabeling_run(config, image, _marks(prompt))
    assert _agreement(got, ref) < MIN_AGREEMENT
    embedding = predictor.features.numpy()
    click = _prompts(684, 1024)["click"]
    ref, _, _ = _reference(tool_model, image, click)
    masks = ort.InferenceSession(str(plain)).run(
        None,
        {
            "image_embeddings": embedding,
            "point_coords": np.array(click["points"], np.float32)[None],  # long side 1024: scale 1
            "point_labels": np.array([[1.0]], np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([684, 1024], np.float32),
        },
    )[0]
    assert _agreement(masks[0, 0] > 0, ref) < MIN_AGREEMENT


def test_cvat_crop_and_bounds(tool_model, monkeypatch):
    """The CVAT outputs from given logits: the inclusive box of the mask and the mask cut to it;
    an empty mask gives the whole frame of zeros (the plugin makes an empty shape of it)."""
    import torch

    from samkit.export.tool_graphs import CvatDecoderGraph, ToolDecoderGraph

    logits = torch.full((1, 1, 40, 50), -1.0)
    logits[0, 0, 5:12, 7:30] = 1.0
    logits[0, 0, 20, 3] = 2.0
    iou, low = torch.ones(1, 1), torch.zeros(1, 1, 256, 256)
    monkeypatch.setattr(ToolDecoderGraph, "forward", lambda self, *a: (logits, iou, low))
    graph = CvatDecoderGraph(tool_model.model)
    crop, _, _, xtl, ytl, xbr, ybr = graph()
    assert [int(v) for v in (xtl, ytl, xbr, ybr)] == [3, 5, 29, 20]
    np.testing.assert_array_equal(crop[0, 0].numpy(), (logits[0, 0, 5:21, 3:30] > 0).numpy())
    assert crop.dtype == torch.uint8
    logits.fill_(-1.0)
    crop, _, _, xtl, ytl, xbr, ybr = graph()
    assert [int(v) for v in (xtl, ytl, xbr, ybr)] == [0, 0, 49, 39] and not crop.any()
    assert len(_mask2rle(crop.reshape(-1).tolist())) < 2  # the plugin's "empty" test
