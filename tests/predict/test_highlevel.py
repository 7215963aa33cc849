"""The high-level call and Predictor against the low-level SamPredictor (same numbers), plus
batching, the embedding cache, bad items in a batch, precision/device and segment-everything."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from samkit import SAM, Predictor, SamPredictor
from samkit.errors import ImageError, PromptError, SamkitError
from samkit.pipeline import ResultsStream
from samkit.predict.embedding import Embedding, EmbeddingCache
from samkit.predict.precision import cpu_has_native_bf16, resolve_precision
from samkit.predict.prompts import binary_masks_to_logits

from ..conftest import TINY_VIT, synthetic_image

IMG = synthetic_image(240, 320, seed=1)  # RGB
BGR = np.ascontiguousarray(IMG[..., ::-1])
BOXES = np.array([[30, 40, 110, 120], [150, 100, 300, 230], [5, 5, 60, 200]], np.float64)
POINTS = np.array([[[60, 70], [200, 150]], [[250, 180], [40, 60]], [[10, 200], [300, 20]]], float)
LABELS = np.array([[1, 0], [1, 1], [0, 1]])


@pytest.fixture(scope="module")
def model() -> SAM:
    return SAM.from_config(TINY_VIT, seeded=True, precision="fp32")


@pytest.fixture(scope="module")
def low(model) -> SamPredictor:
    p = SamPredictor(model.model)
    p.set_image(IMG)
    return p


@pytest.fixture(scope="module")
def predictor(model) -> Predictor:
    p = model.predictor()
    p.set_image(BGR)
    return p


def _check_same(result, rows, low: SamPredictor, multimask=False, **prompt):
    """Rows ``rows`` of ``result`` equal ``low.predict(**prompt)`` (masks up to |logit| < 1e-3)."""
    masks, iou, low_res = low.predict(multimask_output=multimask, **prompt)
    logits, _, _ = low.predict(multimask_output=multimask, return_logits=True, **prompt)
    np.testing.assert_allclose(result.scores[rows], iou, rtol=0, atol=1e-5)
    np.testing.assert_allclose(result.low_res_logits[rows], low_res, rtol=0, atol=1e-4)
    differ = result.masks[rows] != masks
    assert not differ[np.abs(logits) > 1e-3].any()
    assert differ.mean() < 1e-3


@pytest.mark.parametrize("keep_tokens", [True, False])
@pytest.mark.parametrize("multimask", [False, True])
def test_low_res_logits_are_computed_when_first_read(model, multimask, keep_tokens, monkeypatch):
    """The fast path upscales only the image part of the low-res frame (240 x 320: 3/4 of it);
    low_res_logits are completed on first read, from the kept image tokens of the padding
    part or (calls over REST_BYTES) by decoding the prompts again: the eager values."""
    from samkit.predict import decode as decoding
    from samkit.results import DeferredRows

    if not keep_tokens:
        monkeypatch.setattr(decoding, "REST_BYTES", 0)
    eager = Predictor(model, defer_low_res=False)
    lazy = model.predictor()
    for p in (eager, lazy):
        p.set_image(BGR)
    kw = dict(bboxes=BOXES, points=POINTS, labels=LABELS, multimask_output=multimask)
    a, b = eager(**kw), lazy(**kw)
    assert isinstance(b.__dict__["_low_res"], DeferredRows)
    assert (b.__dict__["_low_res"].rest is not None) == keep_tokens
    assert isinstance(a.__dict__["_low_res"], np.ndarray)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)
    sub = b[np.array([len(b) - 1, 0])]  # slicing keeps the rows deferred
    assert isinstance(sub.__dict__["_low_res"], DeferredRows)
    tol = 1e-5 * np.abs(a.low_res_logits).max()
    np.testing.assert_allclose(sub.low_res_logits, a.low_res_logits[[len(a) - 1, 0]], atol=tol)
    np.testing.assert_allclose(b.low_res_logits, a.low_res_logits, atol=tol)
    assert b.low_res_logits is b.low_res_logits  # computed once
    # feeding them back works as with eager logits
    again, ref = lazy(masks=b.best().low_res_logits), eager(masks=a.best().low_res_logits)
    assert (again.masks != ref.masks).mean() < 1e-4
    # the model call over a source keeps them eager (its Results outlive the image)
    r = model(BGR, bboxes=BOXES)[0]
    assert isinstance(r.__dict__["_low_res"], np.ndarray)


def test_boxes_match_low_level(predictor, low):
    r = predictor(bboxes=BOXES)
    assert len(r) == 3 and r.prompt_index.tolist() == [0, 1, 2]
    assert r.masks.shape == (3, 240, 320) and r.low_res_logits.shape == (3, 64, 64)  # tiny model
    for i, box in enumerate(BOXES):
        _check_same(r, [i], low, box=box)


def test_points_one_per_object_match_low_level(predictor, low):
    pts = POINTS[:, 0]
    r = predictor(points=pts, labels=[1, 0, 1])
    for i, (pt, lab) in enumerate(zip(pts, [1, 0, 1])):
        _check_same(r, [i], low, point_coords=pt[None], point_labels=np.array([lab]))


def test_points_per_object_groups_match_low_level(predictor, low):
    r = predictor(points=POINTS, labels=LABELS)
    for i in range(3):
        _check_same(r, [i], low, point_coords=POINTS[i], point_labels=LABELS[i])


def test_labels_default_to_foreground(predictor):
    a = predictor(points=POINTS)
    b = predictor(points=POINTS, labels=np.ones((3, 2), int))
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_box_with_points_match_low_level(predictor, low):
    r = predictor(bboxes=BOXES, points=POINTS, labels=LABELS)
    for i in range(3):
        _check_same(r, [i], low, point_coords=POINTS[i], point_labels=LABELS[i], box=BOXES[i])


def test_mask_logits_prompt_and_feedback(predictor, low):
    first = predictor(bboxes=BOXES[:2])
    r = predictor(masks=first.low_res_logits)  # (N, 256, 256) logits of an earlier call
    for i in range(2):
        _check_same(r, [i], low, mask_input=first.low_res_logits[i][None])
    again = predictor(bboxes=BOXES[:2], masks=first.low_res_logits[:, None])  # (N, 1, 256, 256)
    for i in range(2):
        _check_same(again, [i], low, box=BOXES[i], mask_input=first.low_res_logits[i][None])


def test_binary_mask_prompt_matches_low_level(predictor, low):
    binary = np.zeros((2, 240, 320), bool)
    binary[0, 40:120, 30:110] = True
    binary[1, 100:230, 150:300] = True
    r = predictor(masks=binary, points=POINTS[:2, :1])
    logits = binary_masks_to_logits(binary, low.input_size, low.model.image_size, 64)
    for i in range(2):
        _check_same(
            r, [i], low, point_coords=POINTS[i, :1], point_labels=np.ones(1), mask_input=logits[i]
        )


def test_multimask_output(predictor, low):
    r = predictor(bboxes=BOXES[:2], multimask_output=True)
    assert len(r) == 6 and r.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    for i in range(2):
        _check_same(r, [3 * i, 3 * i + 1, 3 * i + 2], low, multimask=True, box=BOXES[i])
    best = r.best()
    assert best.prompt_index.tolist() == [0, 1]
    for i in range(2):
        assert best.scores[i] == r.scores[3 * i : 3 * i + 3].max()


@pytest.mark.parametrize(
    ("orig", "size", "s"),
    [
        ((720, 1280), 1024, 256),
        ((333, 500), 1024, 256),
        ((1280, 7), 1024, 256),
        ((1000, 1000), 1024, 256),
        ((240, 320), 256, 64),
        ((99, 40), 256, 64),
    ],
)
def test_upsampling_is_bit_identical_to_postprocess_masks(tiny_sam, orig, size, s):
    import torch.nn.functional as F

    from samkit.ops.upsample import upsample_logits
    from samkit.predict.transforms import preprocess_shape

    inp = preprocess_shape(*orig, size)
    low = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0)) * 4
    tiny_sam.image_encoder.img_size = size  # postprocess_masks reads the input size from here
    # Meta's Sam.postprocess_masks, written out: the dense reference
    dense = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)
    dense = dense[..., : inp[0], : inp[1]]
    expected = F.interpolate(dense, orig, mode="bilinear", align_corners=False)
    assert torch.equal(tiny_sam.postprocess_masks(low, inp, orig), expected)
    assert torch.equal(upsample_logits(low, size, inp, orig), expected)


def test_decoder_chunks_give_the_same_masks(model):
    boxes = np.concatenate([BOXES, BOXES + 5])
    p1 = Predictor(model, chunk_size=2, image_format="RGB")
    p1.set_image(IMG)
    p2 = Predictor(model, chunk_size=64, image_format="RGB")
    p2.set_image(IMG)
    a, b = p1(bboxes=boxes), p2(bboxes=boxes)
    np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=1e-4)
    assert (a.masks != b.masks).mean() < 1e-4


def test_meta_style_predict_on_the_cached_embedding(predictor, low):
    ours = predictor.predict(box=BOXES[0], multimask_output=True)
    ref = low.predict(box=BOXES[0], multimask_output=True)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)
    assert torch.equal(predictor.features, low.features)


def test_set_image_sources_agree(model, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(IMG).save(path)
    feats = []
    for src, fmt in ((BGR, None), (IMG, "RGB"), (Image.fromarray(IMG), None), (str(path), None)):
        p = Predictor(model)
        p.set_image(src, image_format=fmt)
        feats.append(p.features)
        np.testing.assert_array_equal(p.image_rgb, IMG)
    for f in feats[1:]:
        assert torch.equal(f, feats[0])
    p.reset_image()
    with pytest.raises(PromptError, match="no image is set"):
        p(bboxes=BOXES)


def test_predictor_errors(predictor):
    with pytest.raises(PromptError, match="no prompt given"):
        predictor()
    with pytest.raises(PromptError, match="lies outside the 320 x 240 image"):
        predictor(points=[[10, 10], [400, 10]])


class _EncoderCalls:
    """Counts image-encoder forward passes and their batch sizes."""

    def __init__(self, model: SAM) -> None:
        self.sizes: list[int] = []
        self.handle = model.model.image_encoder.register_forward_hook(
            lambda _m, args, _out: self.sizes.append(args[0].shape[0])
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_same_image_is_encoded_once():
    model = SAM.from_config(TINY_VIT, seeded=True, precision="fp32")
    with _EncoderCalls(model) as calls:
        model(BGR, bboxes=BOXES[0])
        model(BGR.copy(), points=POINTS[0, :1])  # same content, another array
        p = model.predictor()
        p.set_image(BGR)
        model([BGR, BGR], bboxes=BOXES[0])
        assert calls.sizes == [1]
        model(BGR, bboxes=BOXES[0], precision="bf16")  # another precision: another entry
        assert calls.sizes == [1, 1]
        model.clear_cache()
        model(BGR, bboxes=BOXES[0])
        assert calls.sizes == [1, 1, 1]


def test_embedding_cache_is_bounded():
    def emb(nbytes_floats: int) -> Embedding:
        return Embedding(torch.zeros(1, nbytes_floats), (1, 1), (1, 1))

    cache = EmbeddingCache(max_items=2, max_bytes=1000)
    cache.put("a", emb(10))
    cache.put("b", emb(10))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", emb(10))
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2
    cache.put("d", emb(245))  # 980 bytes: evicts until the total fits in 1000
    assert "d" in cache and cache.nbytes <= 1000 and len(cache) == 1
    cache.put("huge", emb(1000))  # larger than the whole cache: not stored
    assert "huge" not in cache and "d" in cache
    assert cache.hits == 1
    off = EmbeddingCache(max_items=0)
    off.put("a", emb(1))
    assert len(off) == 0


def test_batched_encoding_matches_one_by_one():
    images = [BGR, np.ascontiguousarray(BGR[::-1]), synthetic_image(200, 150, seed=5)[..., ::-1]]
    one = SAM.from_config(TINY_VIT, seeded=True, precision="fp32")
    many = SAM.from_config(TINY_VIT, seeded=True, precision="fp32")
    with _EncoderCalls(many) as calls:
        batched = many(images, bboxes=BOXES[:2], batch=2)
    assert calls.sizes == [2, 1]
    singles = one(images, bboxes=BOXES[:2], batch=1)
    assert len(batched) == 3 and batched.errors == []
    for a, b in zip(batched, singles):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        assert (a.masks != b.masks).mean() < 1e-3
        assert a.path == b.path


def test_call_results_fields(model):
    (r,) = model(BGR, bboxes=[[-10, 40, 400, 120]])
    np.testing.assert_array_equal(r.orig_img, BGR)
    assert r.path == "image0" and r.frame is None
    np.testing.assert_array_equal(r.prompt_boxes, [[0, 40, 320, 120]])  # clipped to the image
    assert set(r.speed) >= {"encode", "decode"}
    (r_rgb,) = model(IMG, bboxes=[[0, 40, 320, 120]], image_format="RGB")
    np.testing.assert_array_equal(r_rgb.masks, r.masks)
    (r_pred,) = model.predict(BGR, bboxes=[[0, 40, 320, 120]])
    np.testing.assert_array_equal(r_pred.masks, r.masks)


def test_bad_items_in_a_batch_are_skipped(model, tmp_path):
    good = tmp_path / "a_good.png"
    Image.fromarray(IMG).save(good)
    corrupt = tmp_path / "b_corrupt.png"
    corrupt.write_bytes(b"garbage")
    small = tmp_path / "c_small.png"  # the point (250, 180) lies outside this 100 x 100 image
    Image.fromarray(synthetic_image(100, 100)).save(small)
    out = model(tmp_path, points=[[250, 180]], batch=2)
    assert [r.path for r in out] == [str(good)]
    assert [e.path for e in out.errors] == [str(corrupt), str(small)]
    assert "not an image file" in out.errors[0].reason
    assert "lies outside the 100 x 100 image" in out.errors[1].reason
    with pytest.raises(PromptError, match="outside the 100 x 100"):
        model(small, points=[[250, 180]])  # a single image raises
    with pytest.raises(ImageError, match="not an image file"):
        model(corrupt, points=[[250, 180]])


def test_stream(model, tmp_path):
    stream = model([BGR, tmp_path / "missing.png", BGR[::-1]], bboxes=BOXES[0], stream=True)
    assert isinstance(stream, ResultsStream)
    first = next(stream)
    assert first.path == "image0"
    rest = list(stream)
    assert len(rest) == 1 and rest[0].path == "image2"
    assert len(stream.errors) == 1 and "missing.png" in stream.errors[0].reason


def test_video_source(model, tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    if not writer.isOpened():
        pytest.skip("OpenCV has no MJPG writer here")
    for k in range(4):
        writer.write(np.full((120, 160, 3), k * 50, np.uint8))
    writer.release()
    out = model(path, bboxes=[10, 10, 100, 100], vid_stride=2)
    assert [r.frame for r in out] == [0, 2] and all(r.path == str(path) for r in out)


def test_bad_call_arguments(model):
    with pytest.raises(PromptError, match="unknown argument"):
        model(BGR, bboxes=BOXES[0], points_strid=32)
    with pytest.raises(PromptError, match="pass points= with labels="):
        model(BGR, labels=[1])
    with pytest.raises(SamkitError, match="precision must be one of"):
        model(BGR, bboxes=BOXES[0], precision="fp8")
    with pytest.raises(SamkitError, match="batch must be a positive integer"):
        model(BGR, bboxes=BOXES[0], batch=0)


def test_devices():
    model = SAM.from_config(TINY_VIT, seeded=True)
    if not torch.cuda.is_available():
        with pytest.raises(SamkitError, match="CUDA is not available"):
            model(BGR, bboxes=BOXES[0], device="cuda")
    with pytest.raises(SamkitError, match="unknown device"):
        model.to("quantum")
    with _EncoderCalls(model) as calls:
        (r,) = model(BGR, bboxes=BOXES[0], device="cpu")
        (r,) = model(BGR, bboxes=BOXES[0], device="cpu")  # same device: the cache stays
    assert len(r) == 1 and calls.sizes == [1]


def test_precision_resolution_and_bf16_run(model):
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision(None, "cpu") == "fp32"
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("auto", "meta") == "fp32"
    p = model.predictor(precision="bf16")
    p.set_image(BGR)
    r = p(bboxes=BOXES)
    ref = model.predictor(precision="fp32")
    ref.set_image(BGR)
    r32 = ref(bboxes=BOXES)
    # bf16 really ran (the numbers differ) and stays close to fp32
    assert not torch.equal(p.features.float(), ref.features)
    assert torch.allclose(p.features.float(), ref.features, atol=0.1, rtol=0.05)
    assert r.scores.dtype == np.float32 and np.abs(r.scores - r32.scores).max() < 0.1
    assert (r.masks == r32.masks).mean() > 0.9


def test_no_prompts_dispatches_to_segment_everything(model, monkeypatch):
    """The dispatch and the wrapping into Results, with a stand-in segment_everything."""
    from dataclasses import dataclass

    import samkit.pipeline

    @dataclass
    class Out:
        masks: np.ndarray
        scores: np.ndarray
        stability: np.ndarray
        boxes: np.ndarray
        points: np.ndarray
        crop_boxes: np.ndarray

    calls = []

    def segment_everything(predictor, image_rgb, points_stride=32, conf_thres=0.88):
        calls.append((predictor, image_rgb.copy(), points_stride, conf_thres))
        masks = np.zeros((2, *image_rgb.shape[:2]), bool)
        masks[0, 10:20, 30:50] = True
        masks[1, 100:110, 5:9] = True
        return Out(
            masks,
            np.array([0.9, 0.8]),
            np.array([0.97, 0.96]),
            np.array([[30, 10, 49, 19], [5, 100, 8, 109]]),
            np.array([[40.0, 15], [6, 105]]),
            np.zeros((2, 4)),
        )

    monkeypatch.setattr(samkit.pipeline, "segment_everything", segment_everything)
    out = model([BGR, BGR[::-1]], points_stride=16)
    assert len(out) == 2 and len(calls) == 2
    assert isinstance(calls[0][0], SamPredictor) and calls[0][2] == 16 and calls[0][3] == 0.88
    np.testing.assert_array_equal(calls[0][1], IMG)  # the image is handed over as RGB
    r = out[0]
    assert len(r) == 2 and r.prompt_index.tolist() == [0, 1]
    np.testing.assert_array_equal(r.stability_scores, np.float32([0.97, 0.96]))
    np.testing.assert_array_equal(r.boxes[0], [30, 10, 49, 19])
    np.testing.assert_array_equal(r.prompt_points, [[[40, 15]], [[6, 105]]])
    np.testing.assert_array_equal(r.orig_img, BGR)
    assert "stability_score" in r.to_dict()["masks"][0]
    with pytest.raises(SamkitError, match="unknown argument.*points_strid.*accepted"):
        model(BGR, points_strid=16)
