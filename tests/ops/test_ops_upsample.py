"""Cell-wise thresholded upsampling against the dense reference (F.interpolate twice)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samkit.ops.amg import stability_score
from samkit.ops.boxes import masks_to_boxes_xyxy
from samkit.ops.upsample import UpsamplePlan, mask_stats, upsample_logits, upsample_masks
from samkit.predict.transforms import preprocess_shape


def _fields(m: int, seed: int) -> torch.Tensor:
    """Smooth SAM-like logit fields (steep and shallow) plus white noise, ``m x 64 x 64``."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(m, 1, 6, 6, generator=g) * torch.linspace(2, 30, m).view(m, 1, 1, 1)
    smooth = F.interpolate(coarse, (64, 64), mode="bicubic", align_corners=False)[:, 0]
    noise = torch.randn(m, 64, 64, generator=g) * 2
    out = torch.cat([smooth, noise])
    out[0] = -5.0  # empty mask
    out[1] = 5.0  # full mask
    return out


# (low, image_size, output (H, W)): upscaling, downscaling, thin and odd-sized outputs.
CASES = [
    (64, 256, (150, 100)),
    (64, 256, (300, 533)),
    (64, 256, (37, 5)),
    (64, 256, (1, 9)),
    (64, 256, (450, 450)),
]


@pytest.mark.parametrize("low,size,out", CASES)
def test_counts_boxes_masks_equal_dense(low, size, out):
    h, w = out
    input_size = preprocess_shape(h, w, size)
    logits = _fields(6, seed=h * 1000 + w)
    plan = UpsamplePlan((low, low), size, input_size, out)
    dense = upsample_logits(logits[:, None], size, input_size, out)[:, 0]
    thresholds = (1.0, -1.0, 0.0)
    counts, boxes = mask_stats(plan, logits, thresholds, box_threshold_index=2)
    expected = torch.stack([(dense > t).sum((1, 2)) for t in thresholds], 1)
    # Pixels whose logit is within float rounding of a threshold may flip (none expected).
    assert (counts - expected).abs().max() <= 1
    assert torch.equal(boxes, masks_to_boxes_xyxy(dense > 0))
    masks = upsample_masks(plan, logits, 0.0)
    assert masks.shape == (len(logits), h, w) and masks.dtype == torch.bool
    assert (masks != (dense > 0)).sum() <= 1
    assert counts[0].tolist() == [0, 0, 0] and boxes[0].tolist() == [0, 0, 0, 0]
    assert counts[1].tolist() == [h * w] * 3 and boxes[1].tolist() == [0, 0, w - 1, h - 1]
    # Stability score from the counts equals the reference formula on dense logits.
    stab = counts[:, 0].int() / counts[:, 1].int()
    ref = stability_score(dense, 0.0, 1.0)
    torch.testing.assert_close(stab[1:], ref[1:], rtol=1e-5, atol=1e-5)


def test_negative_box_threshold_and_trimmed_input():
    out = (90, 61)
    input_size = preprocess_shape(*out, 256)
    plan = UpsamplePlan((64, 64), 256, input_size, out)
    logits = _fields(3, seed=7)
    dense = upsample_logits(logits[:, None], 256, input_size, out)[:, 0]
    counts, boxes = mask_stats(plan, logits, (-1.5,), box_threshold_index=0)
    assert torch.equal(counts[:, 0], (dense > -1.5).sum((1, 2)))
    assert torch.equal(boxes, masks_to_boxes_xyxy(dense > -1.5))
    # Only plan.used_size of the logits matters: the padding region is never read.
    uh, uw = plan.used_size
    assert uh < 64 or uw < 64
    changed = logits.clone()
    changed[:, uh:, :] = 100.0
    changed[:, :, uw:] = -100.0
    assert torch.equal(mask_stats(plan, changed, (-1.5,))[0], counts)
    trimmed = plan.trim(logits)
    assert trimmed.shape[1:] == (uh, uw)
    assert torch.equal(upsample_masks(plan, trimmed, 0.0), upsample_masks(plan, logits, 0.0))


def test_empty_batch_and_bad_sizes():
    plan = UpsamplePlan((64, 64), 256, (256, 171), (300, 200))
    counts, boxes = mask_stats(plan, torch.zeros((0, 64, 64)), (0.0,))
    assert counts.shape == (0, 1) and boxes.shape == (0, 4)
    assert upsample_masks(plan, torch.zeros((0, 64, 64)), 0.0).shape == (0, 300, 200)
    with pytest.raises(ValueError):
        UpsamplePlan((64, 64), 256, (256, 171), (0, 5))


@pytest.mark.parametrize("low,size,out", CASES)
@pytest.mark.parametrize("trimmed", [False, True])
def test_speckled_masks_go_dense_and_equal_the_reference(monkeypatch, low, size, out, trimmed):
    """Masks whose threshold-straddling cells cover much of the output are counted on the dense
    upsampling itself (exact); from trimmed logits (``plan.used_size``, what the everything
    engine decodes) too. Smooth masks keep the cell path."""
    from samkit.ops import upsample

    h, w = out
    input_size = preprocess_shape(h, w, size)
    logits = _fields(6, seed=h * 1000 + w + 1)
    plan = UpsamplePlan((low, low), size, input_size, out)
    dense = upsample_logits(logits[:, None], size, input_size, out)[:, 0]
    given = plan.trim(logits) if trimmed else logits
    thresholds = (1.0, -1.0, 0.0)
    calls = []
    real = upsample._dense_logits
    monkeypatch.setattr(upsample, "_dense_logits", lambda p, x: calls.append(len(x)) or real(p, x))
    monkeypatch.setattr(upsample, "DENSE_FRACTION", 0.0)  # every mask with a contour: dense
    counts, boxes = mask_stats(plan, given, thresholds, box_threshold_index=2)
    assert sum(calls) >= len(logits) - 2  # all but the empty and the full mask
    expected = torch.stack([(dense > t).sum((1, 2)) for t in thresholds], 1)
    assert torch.equal(counts, expected)
    assert torch.equal(boxes, masks_to_boxes_xyxy(dense > 0))
    assert torch.equal(upsample_masks(plan, given, 0.0), dense > 0)
    calls.clear()
    monkeypatch.setattr(upsample, "DENSE_FRACTION", 0.15)  # the default: noise dense, not all
    counts2, _ = mask_stats(plan, given, thresholds, box_threshold_index=2)
    assert (counts2 - expected).abs().max() <= 1
    if h * w > 1000:
        assert 0 < sum(calls) < len(logits)
