"""The shared-work SAM 2 point decoder against SAM 2's module decoder (the parity-tested path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit.predict.sam2_fast_decode import Sam2PointDecoder
from tests.sam2_helpers import IMAGE_A, TINY, seeded_arch, seeded_sam2


def _image(size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(IMAGE_A).convert("RGB").resize(size[::-1]))


def _module(model, embed, high_res, points: torch.Tensor):
    labels = torch.ones((len(points), 1), dtype=torch.int)
    low, iou, _ = model.decode(embed, high_res, (points[:, None], labels), None, True)
    return low.float(), iou.float()


def _encode(model, image: np.ndarray):
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return model.encode(model.preprocess(x))


@pytest.mark.parametrize("which", ["tiny-config", "hiera_t"])
def test_point_decoder_equals_module_decoder(which):
    model = seeded_sam2(TINY) if which == "tiny-config" else seeded_arch("hiera_t")
    embed, high_res = _encode(model, _image((180, 240)))
    size = model.image_size
    rng = np.random.default_rng(0)
    points = torch.as_tensor(rng.uniform(0, size, (9, 2)), dtype=torch.float32)
    with torch.inference_mode():
        want_low, want_iou = _module(model, embed, high_res, points)
        dec = Sam2PointDecoder(model, chunk=4)
        dec.set_features(embed, high_res)
        iou, keep, low = dec.decode(points.numpy())
    assert iou.shape == want_iou.shape == (9, 3)
    assert keep.all()
    torch.testing.assert_close(iou, want_iou, atol=2e-5, rtol=0)
    want = want_low.flatten(0, 1)
    scale = float(want.abs().max())
    torch.testing.assert_close(low, want, atol=2e-5 * max(scale, 1.0), rtol=0)
    # the same binary masks, but for values within rounding of the threshold
    differ = (low > 0) != (want > 0)
    assert not differ[want.abs() > 1e-3 * max(scale, 1.0)].any()

    # IoU threshold: logits only for the masks above it, in row-major order of keep
    t = float(want_iou.median())
    with torch.inference_mode():
        iou_t, keep_t, low_t = dec.decode(points.numpy(), iou_threshold=t)
    assert torch.equal(keep_t, iou_t > t)
    assert 0 < int(keep_t.sum()) < keep_t.numel()
    torch.testing.assert_close(low_t, low[keep_t.flatten()], atol=1e-6, rtol=0)


def test_needs_sam2_features_and_whole_grid():
    model = seeded_sam2(TINY)
    dec = Sam2PointDecoder(model)
    with pytest.raises(RuntimeError, match="set_features"):
        dec.decode(np.zeros((1, 2)))
    embed, (s0, s1) = _encode(model, _image((64, 64)))
    with pytest.raises(ValueError, match="high-res features"):
        dec.set_features(embed, (s1, s0))
    with pytest.raises(TypeError, match="SAM 2 model"):
        Sam2PointDecoder(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


@pytest.mark.parametrize("multimask", [False, True])
def test_predictor_prompts_equal_module_decoder(multimask):
    """Boxes and several points through Sam2Predictor (the point decoder's decode_sparse, with
    SAM 2's dynamic single-mask fallback) against the module decoder."""
    from samkit.models.sam2 import box_to_points
    from samkit.predict.sam2_predictor import Sam2Predictor

    model = seeded_arch("hiera_t")
    pred = Sam2Predictor(model)
    pred.set_image(_image((150, 200)))
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 700, (6, 2))
    boxes = torch.as_tensor(np.concatenate([xy, xy + rng.uniform(40, 300, (6, 2))], 1)).float()
    pts = torch.as_tensor(rng.uniform(0, 1024, (6, 3, 2))).float()
    labels = torch.as_tensor(rng.integers(0, 2, (6, 3))).int()
    for kw in ({"boxes": boxes}, {"point_coords": pts, "point_labels": labels}):
        with torch.inference_mode():
            assert pred._fast_ok()
            low, iou = pred.decode(
                kw.get("point_coords"),
                kw.get("point_labels"),
                kw.get("boxes"),
                multimask_output=multimask,
            )
            points = None if "boxes" in kw else (pts, labels)
            points = box_to_points(kw.get("boxes"), points)
            want_low, want_iou, _ = model.decode(
                pred.features, pred.high_res, points, None, multimask
            )
        assert low.shape == want_low.shape and iou.shape == want_iou.shape
        torch.testing.assert_close(iou, want_iou.float(), atol=2e-5, rtol=0)
        scale = max(float(want_low.abs().max()), 1.0)
        torch.testing.assert_close(low, want_low.float(), atol=2e-5 * scale, rtol=0)
