"""Thresholded full-resolution masks from low-res SAM logits, without the full-resolution logits.

SAM's masks are ``up(L) > t`` where ``up`` resizes the ``256 x 256`` low-res logits ``L``
bilinearly to the padded model input (1024), crops the padding and resizes bilinearly again to
the image (both with ``align_corners=False``). Both steps are separable, so every output pixel
is a convex combination of a ``<= 3 x 3`` block of ``L`` (its taps). Output rows with the same
tap rows form a *row group*, columns likewise, and a (row group, column group) pair is a
*cell*. If all taps of a cell are above ``t`` every pixel of the cell is; if none is, no pixel
is. Only cells that straddle a threshold (near the mask's contours) are evaluated pixel by
pixel, with the composite weights. Counts (area, stability score), boxes and the binary masks
themselves come out equal to thresholding the dense upsampling, up to float rounding of pixels
whose logit is within ~1e-6 of a threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .boxes import masks_to_boxes_xyxy

__all__ = ["UpsamplePlan", "mask_stats", "upsample_logits", "upsample_masks", "upsample_region"]

_WIN = 3  # taps per axis span at most 3 low-res samples


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear (align_corners=False) source indices and weights for one axis.

    Returns ``(i0, i1, lam)`` per output index: value = (1 - lam) * x[i0] + lam * x[i1].
    Computed in float32 like PyTorch's CPU kernel.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    src = scale * (dst + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, lam


def _composite(low: int, mid: int, crop: int, out: int) -> np.ndarray:
    """Dense ``out x low`` float64 weights of low -> mid (resize), [:crop], -> out (resize)."""
    a0, a1, al = _linear_taps(low, mid)
    b0, b1, bl = _linear_taps(crop, out)
    w = np.zeros((out, low), dtype=np.float64)
    rows = np.arange(out)
    for j, wj in ((b0, 1.0 - bl), (b1, bl)):
        np.add.at(w, (rows, a0[j]), wj * (1.0 - al[j]))
        np.add.at(w, (rows, a1[j]), wj * al[j])
    return w


@dataclass
class _Axis:
    """Output indices grouped by their first low-res tap along one axis.

    Group ``r`` holds the output indices whose taps lie in ``[r, r + 3)``; it may be empty.
    """

    size: int  # output length
    used: int  # low-res samples that can contribute: indices [0, used)
    group_of: torch.Tensor  # (size,) group (= first tap) of each output index
    start: torch.Tensor  # (used,) first output index of each group
    count: torch.Tensor  # (used,) output indices in each group
    weights: torch.Tensor  # (used, S, 3) float32 weights of taps r, r+1, r+2; 0-padded
    valid: torch.Tensor  # (used, S) bool, S = largest group

    @classmethod
    def build(cls, low: int, mid: int, crop: int, out: int) -> _Axis:
        if low < _WIN or mid < low:
            raise ValueError(f"expected upsampling from >= {_WIN} samples, got {low} -> {mid}")
        w = _composite(low, mid, crop, out)
        # Taps: both samples of each of the two resizes, even where a weight is 0 (a looser
        # bound is still a bound). Upsampling first keeps them within 3 consecutive samples.
        a0, a1, _ = _linear_taps(low, mid)
        b0, b1, _ = _linear_taps(crop, out)
        first, last = a0[b0], a1[b1]
        used = int(last.max()) + 1
        count = np.bincount(first, minlength=used)
        start = np.concatenate(([0], np.cumsum(count)[:-1]))
        s_max = int(count.max())
        weights = np.zeros((used, s_max, _WIN), dtype=np.float32)
        valid = np.zeros((used, s_max), dtype=bool)
        wp = np.pad(w, ((0, 0), (0, _WIN)))
        for r in np.flatnonzero(count):
            st, n = start[r], count[r]
            weights[r, :n] = wp[st : st + n, r : r + _WIN]
            valid[r, :n] = True
        t = torch.from_numpy
        return cls(out, used, t(first), t(start), t(count), t(weights), t(valid))


class UpsamplePlan:
    """Precomputed taps for ``low x low`` logits -> ``image_size`` frame -> ``output_size``.

    Args:
        low_res_size: ``(h, w)`` of the low-res logits (256, 256).
        image_size: side of the padded square model input (1024).
        input_size: ``(h, w)`` of the resized image inside it (before padding).
        output_size: ``(H, W)`` of the image (or crop) the masks are for.
    """

    def __init__(
        self,
        low_res_size: tuple[int, int],
        image_size: int,
        input_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> None:
        self.low_res_size = (int(low_res_size[0]), int(low_res_size[1]))
        self.image_size = int(image_size)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.output_size = (int(output_size[0]), int(output_size[1]))
        if min(self.output_size) < 1:
            raise ValueError(f"output_size must be positive, got {self.output_size}")
        ly, lx = self.low_res_size
        self.rows = _Axis.build(ly, image_size, self.input_size[0], self.output_size[0])
        self.cols = _Axis.build(lx, image_size, self.input_size[1], self.output_size[1])

    @property
    def used_size(self) -> tuple[int, int]:
        """``(h, w)``: only ``logits[..., :h, :w]`` can influence the output."""
        return self.rows.used, self.cols.used

    def trim(self, logits: torch.Tensor) -> torch.Tensor:
        """The part of ``... x h x w`` low-res logits that matters (contiguous float32)."""
        h, w = self.used_size
        return logits[..., :h, :w].float().contiguous()

    def _padded(self, logits: torch.Tensor) -> torch.Tensor:
        """``M x (h + 2) x (w + 2)`` float32: the used logits, edge-replicated by 2 so that
        every cell has a full 3 x 3 window (the replicated samples have weight 0)."""
        x = self.trim(logits)
        return F.pad(x[:, None], (0, _WIN - 1, 0, _WIN - 1), mode="replicate")[:, 0]

    @staticmethod
    def cell_bounds(xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Min and max over each cell's 3 x 3 taps: two ``M x h x w`` tensors."""

        def reduce3(x: torch.Tensor, op) -> torch.Tensor:
            x = op(op(x[:, :-2], x[:, 1:-1]), x[:, 2:])
            return op(op(x[:, :, :-2], x[:, :, 1:-1]), x[:, :, 2:])

        return reduce3(xp, torch.minimum), reduce3(xp, torch.maximum)

    def cell_values(
        self, xp: torch.Tensor, m: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor
    ) -> torch.Tensor:
        """Values of the pixels of cells ``(m, gy, gx)`` (K each): ``K x Sy x Sx`` float32.

        Cells are padded to the largest group size; padded entries are exactly 0 (their
        weights are 0), see :meth:`padding`.
        """
        _, hp, wp = xp.shape
        base = (m * hp + gy) * wp + gx
        off = (torch.arange(_WIN)[:, None] * wp + torch.arange(_WIN)[None, :]).view(-1)
        blk = xp.view(-1)[base[:, None] + off].view(-1, _WIN, _WIN)  # K x 3 x 3
        wy, wx = self.rows.weights[gy], self.cols.weights[gx]  # K x Sy x 3, K x Sx x 3
        tmp = wy[:, :, 0:1] * blk[:, None, 0, :]
        for i in range(1, _WIN):
            tmp.addcmul_(wy[:, :, i : i + 1], blk[:, None, i, :])  # K x Sy x 3
        vals = tmp[:, :, None, 0] * wx[:, None, :, 0]
        for j in range(1, _WIN):
            vals.addcmul_(tmp[:, :, None, j], wx[:, None, :, j])  # K x Sy x Sx
        return vals

    def padding(self, gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        """Number of padded (always 0) entries of cells ``(gy, gx)``: ``K`` int64."""
        sy, sx = self.rows.weights.shape[1], self.cols.weights.shape[1]
        return sy * sx - self.rows.count[gy] * self.cols.count[gx]

    def cell_chunk(self, budget: int = 1 << 22) -> int:
        """Cells evaluated at once so that about ``budget`` pixels are in flight."""
        return max(1, budget // (self.rows.weights.shape[1] * self.cols.weights.shape[1]))


#: a mask whose threshold-straddling cells cover more than this fraction of the output is
#: computed densely (:func:`_dense_logits`): cell by cell costs ~4 ns per straddling pixel and
#: threshold against ~2 ns per output pixel for the dense upsampling, so speckled masks (seeded
#: weights, textured regions) are cheaper dense, smooth ones (most real masks) cell by cell
DENSE_FRACTION = 0.15
_DENSE_CHUNK = 16  # masks upsampled densely at once (~4 MB each at 1280 x 720)


def _dense_ok(plan: UpsamplePlan) -> bool:
    """Whether :func:`_dense_logits` can upsample trimmed logits of ``plan`` (a square low-res
    frame that divides the model input: SAM and SAM 2)."""
    ly, lx = plan.low_res_size
    return ly == lx and plan.image_size % ly == 0


def _dense_logits(plan: UpsamplePlan, logits: torch.Tensor) -> torch.Tensor:
    """``M x H x W`` float32 logits at the output size from ``M x h x w`` low-res logits: the
    reference's dense upsampling (:func:`upsample_logits`). Only ``plan.used_size`` is read:
    the rest of the region that :func:`upsample_logits` takes is edge-replicated (no output
    pixel has a tap there, so its values do not matter, only its size)."""
    x = plan.trim(logits)[:, None]
    rows, cols = upsample_region(plan.low_res_size[0], plan.input_size, plan.image_size)
    if rows > x.shape[-2] or cols > x.shape[-1]:
        x = F.pad(x, (0, cols - x.shape[-1], 0, rows - x.shape[-2]), mode="replicate")
    return upsample_logits(
        x,
        plan.image_size,
        plan.input_size,
        plan.output_size,
        frame=plan.low_res_size[0],
    )[:, 0]


def _ragged(plan: UpsamplePlan, lo: torch.Tensor, hi: torch.Tensor, t: float) -> torch.Tensor:
    """``M`` bool: masks whose cells straddling ``t`` cover more than :data:`DENSE_FRACTION`
    of the output."""
    if not _dense_ok(plan):
        return torch.zeros(lo.shape[0], dtype=torch.bool)
    r, c = plan.rows, plan.cols
    straddle = (lo <= t) & (hi > t)
    pixels = (straddle.float() @ c.count.float()).double() @ r.count.double()
    h, w = plan.output_size
    return pixels > DENSE_FRACTION * h * w


def _dense_chunks(plan: UpsamplePlan, logits: torch.Tensor):
    """``(start, M' x H x W logits)`` from :func:`_dense_logits`, :data:`_DENSE_CHUNK` masks at
    a time (bounded memory)."""
    for s in range(0, logits.shape[0], _DENSE_CHUNK):
        yield s, _dense_logits(plan, logits[s : s + _DENSE_CHUNK])


def _dense_stats(
    plan: UpsamplePlan, logits: torch.Tensor, thresholds: tuple[float, ...], box_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mask_stats` through the dense upsampling."""
    counts, boxes = [], []
    for _, up in _dense_chunks(plan, logits):
        counts.append(torch.stack([(up > t).sum((1, 2)) for t in thresholds], 1))
        boxes.append(masks_to_boxes_xyxy(up > thresholds[box_index]))
    return torch.cat(counts), torch.cat(boxes)


def mask_stats(
    plan: UpsamplePlan,
    logits: torch.Tensor,
    thresholds: tuple[float, ...],
    box_threshold_index: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel counts and boxes of ``upsample_logits(logits) > t`` without the dense logits
    (speckled masks, see :data:`DENSE_FRACTION`, through them).

    Args:
        logits: ``M x h x w`` low-res logits (CPU); only ``plan.used_size`` is read.
        thresholds: values ``t``; counts are of pixels strictly above each.
        box_threshold_index: which threshold's masks get boxes.
    Returns:
        ``(counts M x T int64, boxes_xyxy M x 4 int64)``; boxes are inclusive pixel indices
        in the output frame, ``[0, 0, 0, 0]`` for empty masks.
    """
    m_count = logits.shape[0]
    counts = torch.zeros((m_count, len(thresholds)), dtype=torch.int64)
    boxes = torch.zeros((m_count, 4), dtype=torch.int64)
    if m_count == 0:
        return counts, boxes
    xp = plan._padded(logits)
    lo, hi = plan.cell_bounds(xp)
    dense = _ragged(plan, lo, hi, thresholds[box_threshold_index])
    if dense.any():
        d, k = dense.nonzero()[:, 0], (~dense).nonzero()[:, 0]
        counts[d], boxes[d] = _dense_stats(plan, logits[d], thresholds, box_threshold_index)
        if len(k):
            counts[k], boxes[k] = _cell_stats(
                plan, xp[k], lo[k], hi[k], thresholds, box_threshold_index
            )
        return counts, boxes
    return _cell_stats(plan, xp, lo, hi, thresholds, box_threshold_index)


def _cell_stats(
    plan: UpsamplePlan,
    xp: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    thresholds: tuple[float, ...],
    box_threshold_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mask_stats` cell by cell, from the padded logits and their cell bounds."""
    m_count = xp.shape[0]
    r, c = plan.rows, plan.cols
    counts = torch.zeros((m_count, len(thresholds)), dtype=torch.int64)
    boxes = torch.zeros((m_count, 4), dtype=torch.int64)
    nonempty = (r.count > 0)[:, None] & (c.count > 0)[None, :]
    cy, cx = r.count.double(), c.count.float()
    big = 1 << 40
    sy = torch.arange(r.weights.shape[1])
    sx = torch.arange(c.weights.shape[1])
    step = plan.cell_chunk()
    for i, t in enumerate(thresholds):
        above = lo > t  # every pixel of the cell is above t
        # Whole cells: per-row sums stay below 2**24, exact in float32.
        counts[:, i] = ((above.float() @ cx).double() @ cy).round().long()
        cells = (~above & (hi > t) & nonempty).nonzero()  # cells straddling t
        is_box = i == box_threshold_index
        if is_box:
            full = above & nonempty
            ry, rx = full.any(2), full.any(1)
            y0 = torch.where(ry, r.start, big).amin(1)
            y1 = torch.where(ry, r.start + r.count - 1, -1).amax(1)
            x0 = torch.where(rx, c.start, big).amin(1)
            x1 = torch.where(rx, c.start + c.count - 1, -1).amax(1)
        for s in range(0, len(cells), step):
            mi, gy, gx = cells[s : s + step].unbind(1)
            on = plan.cell_values(xp, mi, gy, gx) > t
            n_on = on.sum((1, 2))
            if t < 0:  # padded entries are 0 > t: take them off
                n_on -= plan.padding(gy, gx)
            counts[:, i].index_add_(0, mi, n_on)
            if not is_box:
                continue
            if t < 0:
                on &= r.valid[gy][:, :, None] & c.valid[gx][:, None, :]
            ys, xs = on.any(2), on.any(1)  # K x Sy, K x Sx
            y0.scatter_reduce_(0, mi, torch.where(ys, sy, big).amin(1) + r.start[gy], "amin")
            y1.scatter_reduce_(0, mi, torch.where(ys, sy, -big).amax(1) + r.start[gy], "amax")
            x0.scatter_reduce_(0, mi, torch.where(xs, sx, big).amin(1) + c.start[gx], "amin")
            x1.scatter_reduce_(0, mi, torch.where(xs, sx, -big).amax(1) + c.start[gx], "amax")
        if is_box:
            boxes = torch.stack([x0, y0, x1, y1], 1)
            boxes[counts[:, i] == 0] = 0
    return counts, boxes


def upsample_masks(plan: UpsamplePlan, logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """``M x H x W`` bool masks ``upsample_logits(logits) > threshold``, built cell by cell."""
    m_count = logits.shape[0]
    h, w = plan.output_size
    if m_count == 0:
        return torch.zeros((0, h, w), dtype=torch.bool)
    xp = plan._padded(logits)
    lo, hi = plan.cell_bounds(xp)
    dense = _ragged(plan, lo, hi, threshold)
    if dense.any():
        masks = torch.empty((m_count, h, w), dtype=torch.bool)
        d, k = dense.nonzero()[:, 0], (~dense).nonzero()[:, 0]
        for s, up in _dense_chunks(plan, logits[d]):
            masks[d[s : s + len(up)]] = up > threshold
        if len(k):
            masks[k] = _cell_masks(plan, xp[k], lo[k], hi[k], threshold)
        return masks
    return _cell_masks(plan, xp, lo, hi, threshold)


def _cell_masks(
    plan: UpsamplePlan, xp: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, threshold: float
) -> torch.Tensor:
    """:func:`upsample_masks` cell by cell, from the padded logits and their cell bounds."""
    h, w = plan.output_size
    r, c = plan.rows, plan.cols
    exact = (lo <= threshold) & (hi > threshold)
    exact &= (r.count > 0)[:, None] & (c.count > 0)[None, :]
    # Columns first (on the small array), then whole rows are copied.
    masks = (lo > threshold).index_select(2, c.group_of).index_select(1, r.group_of)
    flat = masks.view(-1)
    cells = exact.nonzero()
    sy = torch.arange(r.weights.shape[1])
    sx = torch.arange(c.weights.shape[1])
    step = plan.cell_chunk()
    for s in range(0, len(cells), step):
        mi, gy, gx = cells[s : s + step].unbind(1)
        vals = plan.cell_values(xp, mi, gy, gx)
        valid = r.valid[gy][:, :, None] & c.valid[gx][:, None, :]
        ys = (r.start[gy][:, None] + sy).clamp(max=h - 1)  # K x Sy
        xs = (c.start[gx][:, None] + sx).clamp(max=w - 1)  # K x Sx
        idx = (mi[:, None, None] * h + ys[:, :, None]) * w + xs[:, None, :]
        flat[idx[valid]] = (vals > threshold)[valid]
    return masks


def upsample_region(s: int, input_size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """``(rows, cols)`` of ``s x s`` low-res logits that :func:`upsample_logits` reads for an
    image resized to ``input_size`` inside the ``image_size`` model input (all when ``s`` does
    not divide ``image_size``)."""
    if image_size % s:
        return s, s
    f = image_size // s
    return min(s, math.ceil(input_size[0] / f) + 1), min(s, math.ceil(input_size[1] / f) + 1)


def upsample_logits(
    logits: torch.Tensor,
    image_size: int,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    *,
    frame: int | None = None,
    mode: str = "via_input",
) -> torch.Tensor:
    """``B x C x s x s`` low-res logits -> ``B x C x H x W`` logits at ``output_size``.

    ``mode="via_input"`` (SAM v1): bilinear to the ``image_size`` model input, crop the padding
    (``input_size`` is the resized image before padding), bilinear to ``output_size``; the first
    step computes only the rows and columns the crop keeps (with an integer factor
    ``image_size / s`` and a one-sample margin every kept pixel has the same neighbours and
    weights, so the values equal the dense computation bit for bit). ``frame``: the side ``s``
    of the low-res frame when ``logits`` holds only its :func:`upsample_region`.
    ``mode="direct"`` (SAM 2): one bilinear resize to ``output_size``. ``align_corners=False``.
    """
    if mode == "direct":
        return F.interpolate(logits, output_size, mode="bilinear", align_corners=False)
    if mode != "via_input":
        raise ValueError(f"mode must be 'via_input' or 'direct', got {mode!r}")
    s = logits.shape[-1] if frame is None else frame
    if image_size % s or logits.shape[-2] != logits.shape[-1] and frame is None:
        x = F.interpolate(logits, (image_size, image_size), mode="bilinear", align_corners=False)
    else:
        rows, cols = upsample_region(s, input_size, image_size)
        x = F.interpolate(
            logits[..., :rows, :cols],
            scale_factor=image_size // s,
            mode="bilinear",
            align_corners=False,
        )
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, output_size, mode="bilinear", align_corners=False)
