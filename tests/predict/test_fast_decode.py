"""PointDecoder (re-associated, IoU-first decoding) against the reference MaskDecoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit.predict.fast_decode import PointDecoder
from samkit.zoo.registry import DecoderConfig, ModelConfig, ViTConfig

from ..conftest import DATA, TINY_VIT, tiny_model

# A tiny encoder in front of the full-size decoder: the decoder is what is tested here.
FULL_DECODER = ModelConfig(
    ViTConfig(embed_dim=32, depth=1, num_heads=1, global_attn_indexes=(0,), window_size=4),
    DecoderConfig(),
)


@pytest.fixture(scope="module")
def shapes_decoder_sam():
    """Full-size prompt encoder + the trained fixture decoder (sam_b_shapes_decoder.pt)."""
    sam = tiny_model(FULL_DECODER).eval()
    state = torch.load(DATA / "sam_b_shapes_decoder.pt", weights_only=True)
    missing, unexpected = sam.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("image_encoder.") for k in missing)
    return sam


def _reference(sam, features, coords):
    """Meta's path: float64 points through the prompt encoder, then MaskDecoder.forward."""
    pts = torch.as_tensor(coords, dtype=torch.float64)[:, None, :]
    labels = torch.ones(pts.shape[:2], dtype=torch.int)
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder((pts, labels), None, None)
        low, iou = sam.mask_decoder(
            features, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True
        )
    return low, iou


def _case(sam, n, seed):
    g = torch.Generator().manual_seed(seed)
    c = sam.prompt_encoder.embed_dim
    h, w = sam.prompt_encoder.image_embedding_size
    features = torch.randn((1, c, h, w), generator=g) * 0.5
    coords = np.random.default_rng(seed).random((n, 2)) * sam.image_size
    return features, coords


@pytest.mark.parametrize("which", ["tiny", "full"])
def test_fp32_equals_reference(which, shapes_decoder_sam):
    sam = tiny_model(TINY_VIT).eval() if which == "tiny" else shapes_decoder_sam
    features, coords = _case(sam, 4, seed=1)
    low_ref, iou_ref = _reference(sam, features, coords)
    dec = PointDecoder(sam, torch.float32, chunk=4)
    dec.set_features(features)
    iou, keep, low = dec.decode(coords)
    assert iou.shape == (4, 3) and keep.all() and low.shape == (12, *low_ref.shape[-2:])
    assert (iou - iou_ref).abs().max() <= 1e-5
    scale = low_ref.abs().max()
    assert (low.view_as(low_ref) - low_ref).abs().max() <= 1e-5 * scale


def test_iou_threshold_selects_masks(shapes_decoder_sam):
    sam = shapes_decoder_sam
    features, coords = _case(sam, 5, seed=2)
    low_ref, iou_ref = _reference(sam, features, coords)
    dec = PointDecoder(sam)
    dec.set_features(features)
    thr = float(iou_ref.flatten().median())
    iou, keep, low = dec.decode(coords, iou_threshold=thr)
    assert torch.equal(keep, iou > thr)
    assert 0 < keep.sum() < keep.numel()
    assert len(low) == int(keep.sum())
    assert (low - low_ref[keep]).abs().max() <= 1e-5 * low_ref.abs().max()
    iou, keep, low = dec.decode(coords, iou_threshold=10.0)  # nothing passes: no upscaling
    assert not keep.any() and low.shape == (0, 256, 256)
    # Only the region the image covers (here 150 x 97 low-res pixels) is upscaled.
    iou, keep, part = dec.decode(coords, iou_threshold=thr, region=(150, 97))
    assert part.shape == (int(keep.sum()), 150, 97)
    assert (part - low_ref[keep][:, :150, :97]).abs().max() <= 1e-5 * low_ref.abs().max()
    with pytest.raises(ValueError, match="region"):
        dec.decode(coords, region=(300, 10))


def test_chunking_and_empty_input(shapes_decoder_sam):
    sam = shapes_decoder_sam
    features, coords = _case(sam, 3, seed=3)
    one = PointDecoder(sam, chunk=1)
    many = PointDecoder(sam, chunk=8)
    for d in (one, many):
        d.set_features(features)
    a, b = one.decode(coords), many.decode(coords)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[2], b[2], atol=1e-4)
    iou, keep, low = many.decode(np.zeros((0, 2)))
    assert iou.shape == (0, 3) and keep.shape == (0, 3) and low.shape == (0, 256, 256)
    with pytest.raises(RuntimeError, match="set_features"):
        PointDecoder(sam).decode(coords)


def test_workers_split_the_points_and_keep_their_order(shapes_decoder_sam):
    """Points split across threads (one torch thread each) give the serial results, in
    order, with a threshold that keeps some masks of every part."""
    sam = shapes_decoder_sam
    features, coords = _case(sam, 7, seed=5)
    low_ref, iou_ref = _reference(sam, features, coords)
    thr = float(iou_ref.flatten().median())
    dec = PointDecoder(sam, chunk=2)
    dec.set_features(features)
    assert dec._split(7, 3) == [slice(0, 4), slice(4, 7)]  # whole chunks: 2 + 2 | 2 + 1
    assert dec._split(7, 1) == [slice(0, 7)] and dec._split(0, 4) == [slice(0, 0)]
    before = torch.get_num_threads()
    serial = dec.decode(coords, iou_threshold=thr, workers=1)
    split = dec.decode(coords, iou_threshold=thr, workers=3)
    assert torch.get_num_threads() == before
    assert torch.equal(split[1], serial[1]) and torch.equal(split[1], iou_ref > thr)
    assert (split[0] - iou_ref).abs().max() <= 1e-5
    assert (split[2] - low_ref[split[1]]).abs().max() <= 1e-5 * low_ref.abs().max()
    assert (split[2] - serial[2]).abs().max() <= 1e-5 * low_ref.abs().max()


def test_bf16_agreement(shapes_decoder_sam):
    sam = shapes_decoder_sam
    features, coords = _case(sam, 2, seed=4)
    low_ref, iou_ref = _reference(sam, features, coords)
    dec = PointDecoder(sam, torch.bfloat16)
    dec.set_features(features)
    iou, _, low = dec.decode(coords)
    assert iou.dtype == torch.float32 and low.dtype == torch.float32
    assert (iou - iou_ref).abs().max() < 0.05
    agree = ((low.view_as(low_ref) > 0) == (low_ref > 0)).float().mean()
    assert agree > 0.97
    with pytest.raises(ValueError):
        PointDecoder(sam, torch.float16)


@pytest.mark.slow
@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("kind", ["boxes", "points", "box_and_points"])
def test_decode_sparse_equals_module_decoder(kind, multimask, shapes_decoder_sam):
    sam = shapes_decoder_sam
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(1, 256, 64, 64, generator=gen)
    b = 9
    xy = torch.rand(b, 2, generator=gen) * 900
    boxes = torch.cat([xy, xy + 20 + torch.rand(b, 2, generator=gen) * 100], 1)
    points = (torch.rand(b, 3, 2, generator=gen) * 1024, torch.randint(0, 2, (b, 3), generator=gen))
    points = None if kind == "boxes" else points
    boxes = None if kind == "points" else boxes
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points, boxes, None)
        low, iou = sam.mask_decoder(
            features, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask
        )
    decoder = PointDecoder(sam)
    decoder.set_features(features)
    fast_low, fast_iou = decoder.decode_sparse(sparse, multimask, chunk=4)  # ragged chunks
    assert fast_low.shape == low.shape == (b, 3 if multimask else 1, 256, 256)
    assert (fast_iou - iou).abs().max() <= 1e-5
    assert (fast_low - low).abs().max() <= 1e-5 * low.abs().max()
    # a region: the top-left part of the frame, only those logits computed (the upscaling is
    # per pixel, so they are the same), rows and columns not multiples of 4 included
    for region in [(145, 256), (256, 97), (3, 5)]:
        part, part_iou = decoder.decode_sparse(sparse, multimask, chunk=4, region=region)
        assert part.shape == (b, 3 if multimask else 1, *region)
        assert torch.equal(part_iou, fast_iou)
        assert (
            part - fast_low[..., : region[0], : region[1]]
        ).abs().max() <= 1e-6 * low.abs().max()
    with pytest.raises(ValueError, match="region must be within"):
        decoder.decode_sparse(sparse, multimask, region=(257, 10))
    # split: the region, plus the image tokens that complete() turns into the rest of the frame
    for region in [(145, 256), (256, 97), (256, 256)]:
        part, part_iou, rest = decoder.decode_sparse_split(sparse, multimask, region, chunk=4)
        assert torch.equal(part_iou, fast_iou)
        if region == (256, 256):
            assert rest is None
            continue
        assert len(rest) == b and rest.axis == (0 if region[0] < 256 else 1)
        sel = torch.tensor([b - 1, 0, 4])
        full = PointDecoder(sam).complete(part[sel], rest.take(sel))  # no set_features needed
        assert (full - fast_low[sel]).abs().max() <= 1e-6 * low.abs().max()
    with pytest.raises(ValueError, match="width or height"):
        decoder.decode_sparse_split(sparse, multimask, (100, 100))


def test_sam_predictor_routes_prompts_without_masks_through_the_point_decoder(tiny_sam):
    from samkit.predict.sam_predictor import SamPredictor

    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    fast, slow = SamPredictor(tiny_sam), SamPredictor(tiny_sam, fast_decoder=False)
    for p in (fast, slow):
        p.set_image(image)
    box = np.array([10, 5, 50, 40])
    m_fast, iou_fast, low_fast = fast.predict(box=box, multimask_output=True)
    assert fast._point_decoders[torch.float32][0] is fast.features
    m_slow, iou_slow, low_slow = slow.predict(box=box, multimask_output=True)
    assert not getattr(slow, "_point_decoders", None)
    np.testing.assert_allclose(iou_fast, iou_slow, atol=1e-5)
    np.testing.assert_allclose(low_fast, low_slow, atol=1e-5 * np.abs(low_slow).max())
    # a mask prompt goes through the module decoder: identical results
    a = fast.predict(box=box, mask_input=low_slow[:1], multimask_output=False)
    b = slow.predict(box=box, mask_input=low_slow[:1], multimask_output=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
