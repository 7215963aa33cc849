"""Precision handling, batched encoding, and the fast encoder paths against straightforward ones.

The bf16 agreement bound: bf16 keeps 8 significant bits, so every rounding has a relative error
of at most u = 2^-9 (0.2 %). Under autocast each matmul / convolution rounds its inputs and its
output; these errors are independent and add in quadrature through the network, about u x
sqrt(number of roundings on a path). MobileSAM has ~50 of them (about 1.4 %); measured on the
parity image: 1.3 % relative (Frobenius) embedding error, mask IoU >= 0.98 per mask. The bounds
below (4 %, IoU >= 0.95, mean >= 0.97) leave ~3x margin over that while staying far below what a
precision bug produces (a bf16 softmax or LayerNorm statistic, an fp16 overflow: tens of %).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samkit import precision as prec
from samkit.errors import SamkitError
from samkit.models.attention import rel_pos_attention, relative_position_table
from samkit.models.tiny_vit import ConvBN
from samkit.predict.sam_predictor import SamPredictor
from samkit.predict.transforms import scale_boxes
from samkit.zoo.registry import ModelConfig

from ..conftest import TINY_TINYVIT, TINY_VIT, synthetic_image, tiny_model

# conftest's tiny configs keep the encoder's 256 output channels, which their 64-wide decoder
# cannot take; these decode.
DECODABLE = {
    "vit": ModelConfig(replace(TINY_VIT.encoder, out_chans=64), TINY_VIT.decoder),
    "tiny_vit": ModelConfig(replace(TINY_TINYVIT.encoder, out_chans=64), TINY_TINYVIT.decoder),
}
EMBEDDING_REL_BOUND = 0.04
MASK_IOU_MIN = 0.95
MASK_IOU_MEAN = 0.97


# -- precision resolution ------------------------------------------------------------------------
def test_cpu_flags_are_read_from_cpuinfo():
    x86 = "processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n\nprocessor : 1\nflags : fpu\n"
    assert {"avx2", "avx512_bf16"} <= prec.cpu_flags(x86)
    arm = "processor : 0\nFeatures : fp asimd sve bf16\n"
    assert "bf16" in prec.cpu_flags(arm)
    assert prec.cpu_flags("nothing here") == frozenset()


@pytest.mark.parametrize(
    ("checks", "flags", "native"),
    [
        ({"_is_avx512_bf16_supported": True}, "", True),
        ({"_is_amx_tile_supported": True}, "", True),
        ({}, "fpu avx2 amx_bf16", True),
        ({}, "fpu avx2 avx512f", False),
    ],
)
def test_native_bf16_detection(monkeypatch, checks, flags, native):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        value = checks.get(name, False)
        monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)
    monkeypatch.setattr(prec, "cpu_flags", lambda cpuinfo=None: frozenset(flags.split()))
    assert prec.cpu_has_native_bf16.__wrapped__() is native


@pytest.mark.parametrize("native", [True, False])
def test_resolve_precision(monkeypatch, native):
    monkeypatch.setattr(prec, "device_has_native_bf16", lambda device: native)
    assert prec.resolve_precision("auto") == ("bf16" if native else "fp32")
    assert prec.resolve_precision("fp32") == "fp32"
    if native:
        assert prec.resolve_precision("bf16") == "bf16"
    else:
        with pytest.warns(prec.SlowPrecisionWarning, match="no native bf16"):
            assert prec.resolve_precision("bf16") == "bf16"
    with pytest.raises(SamkitError, match="precision must be one of"):
        prec.resolve_precision("fp16")


def test_predictor_precision_argument(tiny_sam):
    assert SamPredictor(tiny_sam).precision == "fp32"
    assert SamPredictor(tiny_sam, precision="auto").precision in ("fp32", "bf16")
    with pytest.raises(SamkitError, match="precision must be one of"):
        SamPredictor(tiny_sam, precision="half")


def test_bf16_encode_keeps_fp32_output_and_is_close(tiny_sam):
    x = tiny_sam.preprocess(torch.as_tensor(synthetic_image(256, 256)).permute(2, 0, 1)[None])
    ref = prec.encode(tiny_sam.image_encoder, x.float(), "fp32")
    out = prec.encode(tiny_sam.image_encoder, x.float(), "bf16")
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).norm() / ref.norm() < EMBEDDING_REL_BOUND


# -- batched encoding ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
def test_batched_encoding_equals_per_image(kind):
    sam = tiny_model(DECODABLE[kind])
    images = [synthetic_image(180 + 30 * i, 256 - 20 * i, seed=i) for i in range(3)]
    predictor = SamPredictor(sam)
    embeddings = predictor.encode_images(images, batch_size=2)
    for image, emb in zip(images, embeddings):
        predictor.set_image(image)
        single = predictor.features
        scale = single.abs().max()
        assert emb.features.shape == single.shape
        assert (emb.features - single).abs().max() <= 1e-5 * scale
        assert emb.original_size == predictor.original_size
        assert emb.input_size == predictor.input_size
    # decoding against a batched embedding equals decoding after set_image
    predictor.set_embedding(embeddings[2])
    got = predictor.predict(box=np.array([20, 30, 120, 150]), multimask_output=False)
    predictor.set_image(images[2])
    want = predictor.predict(box=np.array([20, 30, 120, 150]), multimask_output=False)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)
    assert (got[0] == want[0]).mean() > 0.999


def test_encode_images_names_the_bad_image(tiny_sam):
    from samkit.errors import ImageError

    good = synthetic_image(64, 64)
    with pytest.raises(ImageError, match="image 1: expected a uint8"):
        SamPredictor(tiny_sam).encode_images([good, good.astype(np.float32)])


# -- fast paths against straightforward formulations --------------------------------------------
def _explicit_rel_pos_attention(q, k, v, rel_h, rel_w, size):
    """softmax(q k^T * scale + rel_h[q, key row] + rel_w[q, key col]) v, in float64."""
    h, w = size
    q, k, v = q.double(), k.double(), v.double()
    th = relative_position_table(h, h, rel_h.double())
    tw = relative_position_table(w, w, rel_w.double())
    g, n, d = q.shape
    grid = q.view(g, h, w, d)
    bias_h = torch.einsum("ghwc,hkc->ghwk", grid, th)  # query (h, w), key row k
    bias_w = torch.einsum("ghwc,wkc->ghwk", grid, tw)  # query (h, w), key col k
    bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(g, n, n)
    attn = torch.softmax(q @ k.transpose(1, 2) * d**-0.5 + bias, -1)
    return attn @ v


@pytest.mark.parametrize("size", [(6, 6), (5, 7)])
def test_rel_pos_attention_chunks_equal_explicit_formula(size):
    torch.manual_seed(0)
    g, n, d = 6, size[0] * size[1], 8
    q, k, v = (torch.randn(g, n, d) for _ in range(3))
    rel_h = torch.randn(2 * size[0] - 1, d) * 0.3
    rel_w = torch.randn(2 * size[1] - 1, d) * 0.3
    want = _explicit_rel_pos_attention(q, k, v, rel_h, rel_w, size)
    th = relative_position_table(size[0], size[0], rel_h)
    tw = relative_position_table(size[1], size[1], rel_w)
    for limit in (n * n, 4 * n * n, 1 << 24):  # 1, 4 and all pairs per chunk
        got = rel_pos_attention(q, k, v, th, tw, size, max_bias_elements=limit)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(6, 6), (5, 7)])
def test_blocked_bf16_attention_is_as_close_as_the_fused_kernel(monkeypatch, size):
    """bf16 global attention on the CPU runs in blocks of queries (attention._blocked_bf16):
    every block, a partial last one included, against the explicit fp64 formula, within a small
    multiple of the fused kernel's bf16 error."""
    from samkit.models import attention

    torch.manual_seed(0)
    g, n, d = 4, size[0] * size[1], 16
    q, k, v = (torch.randn(g, n, d, dtype=torch.float64) for _ in range(3))
    rel_h = torch.randn(2 * size[0] - 1, d, dtype=torch.float64) * 0.3
    rel_w = torch.randn(2 * size[1] - 1, d, dtype=torch.float64) * 0.3
    want = _explicit_rel_pos_attention(q, k, v, rel_h, rel_w, size)
    th = relative_position_table(size[0], size[0], rel_h)
    tw = relative_position_table(size[1], size[1], rel_w)
    args = [t.bfloat16() for t in (q, k, v, th, tw)]
    with torch.inference_mode():
        fused = rel_pos_attention(*args, size).double()  # below MIN_ROWS_BLOCKED: fused
        monkeypatch.setattr(attention, "MIN_ROWS_BLOCKED", 1)
        monkeypatch.setattr(attention, "BLOCK_ROWS", 8)  # several blocks, the last partial
        blocked = rel_pos_attention(*args, size)
    assert blocked.dtype == torch.bfloat16
    err_fused = (fused - want).abs().mean()
    err_blocked = (blocked.double() - want).abs().mean()
    assert err_blocked < 3 * err_fused, (err_blocked, err_fused)
    torch.testing.assert_close(blocked.double(), want, atol=0.05, rtol=0.05)


def _reference_vit_block(block, x):
    """Meta's formulation: norm, zero-pad, partition, full attention module, unpartition, crop."""
    ws = block.window_size
    shortcut = x
    x = block.norm1(x)
    b, h, w, c = x.shape
    if ws:
        x = F.pad(x, (0, 0, 0, (-w) % ws, 0, (-h) % ws))
        hp, wp = x.shape[1:3]
        x = x.view(b, hp // ws, ws, wp // ws, ws, c).transpose(2, 3).reshape(-1, ws, ws, c)
    attn = block.attn
    bw, gh, gw, _ = x.shape
    qkv = attn.qkv(x).reshape(bw, gh * gw, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = (t.reshape(bw * attn.num_heads, gh * gw, -1) for t in qkv)
    out = _explicit_rel_pos_attention(q, k, v, attn.rel_pos_h, attn.rel_pos_w, (gh, gw)).float()
    out = out.view(bw, attn.num_heads, gh, gw, -1).permute(0, 2, 3, 1, 4).reshape(bw, gh, gw, c)
    x = attn.proj(out)
    if ws:
        x = x.view(b, hp // ws, wp // ws, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
        x = x[:, :h, :w]
    x = shortcut + x
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("grid", [16, 12])
def test_vit_blocks_equal_reference_formulation(tiny_sam, grid):
    torch.manual_seed(1)
    x = torch.randn(2, grid, grid, 64)
    with torch.inference_mode():
        for block in tiny_sam.image_encoder.blocks:  # windowed (window 6) and global
            want = _reference_vit_block(block, x)
            torch.testing.assert_close(block(x), want, atol=2e-5, rtol=1e-5)


def test_windowed_projection_gets_contiguous_tokens(tiny_sam):
    """A padded grid is cropped after the windows are merged back; the projection must get the
    crop as a contiguous tensor (a strided one turns the linear layer into a batched product
    with the weight copied per image row, ~5x slower for ViT-B)."""
    block = next(b for b in tiny_sam.image_encoder.blocks if b.window_size)
    grid = 2 * block.window_size + 1  # padded to 3 windows
    seen = []
    handle = block.attn.proj.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous())
    )
    try:
        with torch.inference_mode():
            block(torch.randn(1, grid, grid, 64))
    finally:
        handle.remove()
    assert seen == [True]


def test_patch_embeddings_are_contiguous_tokens(tiny_sam):
    """ViT's and Hiera's patch embeddings hand the blocks contiguous B x H x W x C tokens with
    the plain convolution's values (a permuted NCHW map makes every later elementwise op and
    layer norm gather across the map)."""
    from tests.sam2_helpers import TINY, seeded_sam2

    torch.manual_seed(2)
    for embed, size in (
        (tiny_sam.image_encoder.patch_embed, tiny_sam.image_encoder.img_size),
        (seeded_sam2(TINY).image_encoder.trunk.patch_embed, 64),
    ):
        x = torch.randn(1, 3, size, size)
        with torch.inference_mode():
            tokens = embed(x)
            want = embed.proj(x).permute(0, 2, 3, 1)
        assert tokens.is_contiguous()
        torch.testing.assert_close(tokens, want, atol=1e-5, rtol=1e-5)


def _reference_tinyvit_block(block, x, size):
    """MobileSAM's formulation: zero-pad, partition, norm + attention, unpartition, crop."""
    h, w = size
    b, n, c = x.shape
    ws = block.window
    y = F.pad(x.view(b, h, w, c), (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    hp, wp = y.shape[1:3]
    y = y.view(b, hp // ws, ws, wp // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
    attn = block.attn
    qkv = attn.qkv(attn.norm(y)).view(y.shape[0], ws * ws, attn.num_heads, -1).permute(0, 2, 1, 3)
    q, k, v = qkv.double().split(attn.head_dim, dim=3)
    bias = attn.attention_biases[:, attn.attention_bias_idxs].double()
    p = torch.softmax(q @ k.transpose(-1, -2) * attn.head_dim**-0.5 + bias, -1)
    y = attn.proj((p @ v).float().transpose(1, 2).reshape(y.shape[0], ws * ws, c))
    y = y.view(b, hp // ws, wp // ws, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
    x = x + y[:, :h, :w].reshape(b, n, c)
    conv = torch.nn.Sequential(block.local_conv.c, block.local_conv.bn)  # unfolded conv + BN
    x = conv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
    return x + block.mlp(x)


def test_tinyvit_blocks_equal_reference_formulation():
    sam = tiny_model(TINY_TINYVIT)
    torch.manual_seed(2)
    with torch.inference_mode():
        for stage in list(sam.image_encoder.layers)[1:]:
            block = stage.blocks[0]
            dim = block.attn.qkv.in_features
            for size in ((16, 16), (7, 7), (9, 20)):
                x = torch.randn(2, size[0] * size[1], dim)
                want = _reference_tinyvit_block(block, x, size)
                torch.testing.assert_close(block(x, size), want, atol=2e-5, rtol=1e-5)


def test_conv_bn_folding_matches_conv_then_batchnorm():
    torch.manual_seed(3)
    for kernel, stride, groups in ((1, 1, 1), (3, 2, 1), (3, 1, 8)):
        m = ConvBN(8, 8, kernel, stride, kernel // 2, groups)
        bn = m.bn
        bn.running_mean.normal_(0, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_(1, 0.2)
        bn.bias.data.normal_(0, 0.2)
        keys = set(m.state_dict())
        m.eval()
        x = torch.randn(2, 8, 10, 12)
        want = bn(m.c(x))
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            torch.testing.assert_close(m(inp), want, atol=1e-5, rtol=1e-5)
        assert set(m.state_dict()) == keys  # nothing folded into the state dict
        m.train()
        torch.testing.assert_close(m(x), bn(m.c(x)))  # training mode: unfused, batch statistics


@pytest.mark.parametrize("config", [TINY_VIT, TINY_TINYVIT], ids=["vit", "tiny_vit"])
def test_encoders_train_with_autograd(config):
    encoder = tiny_model(config).image_encoder.train()
    x = torch.randn(2, 3, 256, 256)
    loss = encoder(x).square().mean()
    loss.backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads[:3])
    with torch.no_grad():  # eval after training mode: folded BN, buffers reused
        assert torch.isfinite(encoder.eval()(x)).all()


@pytest.mark.parametrize("config", [TINY_VIT, TINY_TINYVIT], ids=["vit", "tiny_vit"])
def test_encoders_trace_and_export_to_onnx(config, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    encoder = tiny_model(config).image_encoder
    x = torch.randn(1, 3, 256, 256)
    path = tmp_path / "encoder.onnx"
    with torch.no_grad():
        want = encoder(x).numpy()
        torch.onnx.export(encoder, (x,), str(path), dynamo=False, opset_version=17)
    session = ort.InferenceSession(str(path))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


# -- bf16 agreement on the parity fixtures (full-size models) -----------------------------------
def _parity_masks(predictor, cases):
    out = []
    for name, args in cases.items():
        if name == "mask_input":
            continue
        if name == "batched_boxes":
            boxes = scale_boxes(
                torch.tensor(args["boxes"]), predictor.original_size, predictor.input_size
            )
            masks, _, _ = predictor.predict_torch(None, None, boxes, multimask_output=False)
            out += list(masks[:, 0].numpy())
            continue
        kw = {"multimask_output": args["multimask_output"]}
        if "point_coords" in args:
            kw["point_coords"] = np.array(args["point_coords"])
            kw["point_labels"] = np.array(args["point_labels"])
        if "box" in args:
            kw["box"] = np.array(args["box"])
        out += list(predictor.predict(**kw)[0])
    return out


def _agreement(model, image, cases):
    results = {}
    for precision in ("fp32", "bf16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", prec.SlowPrecisionWarning)
            predictor = SamPredictor(model, precision=precision)
        predictor.set_image(image)
        results[precision] = (predictor.features.clone(), _parity_masks(predictor, cases))
    (e32, m32), (e16, m16) = results["fp32"], results["bf16"]
    rel = float((e16 - e32).norm() / e32.norm())
    ious = [(a & b).sum() / max((a | b).sum(), 1) for a, b in zip(m32, m16)]
    return rel, np.array(ious)


@pytest.mark.slow
def test_bf16_agrees_with_fp32_mobile_sam(seeded_mobile_sam, image_a, parity_manifest):
    cases = parity_manifest["archs"]["mobile_sam"]["prompt_cases"]
    rel, ious = _agreement(seeded_mobile_sam, image_a, cases)
    assert rel <= EMBEDDING_REL_BOUND, rel
    assert ious.min() >= MASK_IOU_MIN and ious.mean() >= MASK_IOU_MEAN, ious


@pytest.mark.slow
@pytest.mark.skipif(
    not prec.cpu_has_native_bf16(), reason="bf16 ViT-B is minutes long where bf16 is emulated"
)
def test_bf16_agrees_with_fp32_sam_b(seeded_sam_b, image_a, parity_manifest):
    cases = parity_manifest["archs"]["sam_b"]["prompt_cases"]
    rel, ious = _agreement(seeded_sam_b, image_a, cases)
    assert rel <= EMBEDDING_REL_BOUND, rel
    assert ious.min() >= MASK_IOU_MIN and ious.mean() >= MASK_IOU_MEAN, ious
